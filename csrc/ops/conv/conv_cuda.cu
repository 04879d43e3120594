// CUDA conv2d: every direction as one tiled implicit GEMM.
//
// A block computes a 64 x 64 tile of C = A B (rows m, columns n) with 256 threads, each owning
// a 4 x 4 register tile; A and B are staged through shared memory 16 deep in k. Nothing is
// materialised: a "problem" maps (m, k) and (k, n) onto the tensors (im2col on the fly) and
// writes C through its epilogue.
//
//   forward       m = output pixel (n, oh, ow), n = output channel, k = (ic, kh, kw)
//   forward 1x1   stride 1, no padding: A is the input itself, k = ic (a plain GEMM)
//   input grad    m = input pixel (n, ih, iw), n = input channel, k = (oc, kh, kw): the
//                 gather form (a tap contributes only where ih + pt - kh*dh is a multiple of
//                 the stride), so no atomics and a deterministic result
//   weight grad   m = output channel, n = (ic, kh, kw), k = (n, oh, ow), split over k into
//                 slices summed afterwards in a fixed order (deterministic as well)
// Threads index m fastest, so output stores of the NCHW pixel-row problems are coalesced.
// Groups run on blockIdx.z. Index arithmetic is 64-bit: a tensor may exceed 2^31 elements.
#include "conv_cuda.h"

namespace fastconv {
namespace conv {
namespace cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;
constexpr int kThreads = 256;
constexpr int kTM = 4, kTN = 4;           // register tile per thread
constexpr int kTX = kBM / kTM;            // 16 threads along m
constexpr unsigned kMaxGridYZ = 65535;

struct Geometry {  // the conv, with the derived sizes kernels use
  int64_t N, C, H, W, OC, KH, KW, OH, OW, sh, sw, dh, dw, pt, pl, icg, ocg;
};

inline Geometry geometry(const ConvParams& p) {
  return {p.N, p.C, p.H, p.W, p.OC, p.KH, p.KW, p.OH, p.OW, p.sh, p.sw, p.dh, p.dw, p.pt, p.pl,
          p.C / p.groups, p.OC / p.groups};
}

template <class T>
struct Epilogue {
  const T* scale;
  const T* shift;
  const T* residual;
  bool relu;
};

// ---------------------------------------------------------------------------------- problems
// Each problem: rows(), cols(), depth() (GEMM sizes per group), a(g, m, k), b(g, k, n) (zero
// outside the tensors), store(g, m, n, value). kAAlongK / kBAlongK: whether consecutive k are
// adjacent in memory for A / B, which decides how threads split a tile load.

template <class T>
struct ForwardProblem {
  Geometry q;
  const T* x;
  const T* w;
  T* y;
  Epilogue<T> ep;
  static constexpr bool kAAlongK = false, kBAlongK = true;
  __device__ int64_t rows() const { return q.N * q.OH * q.OW; }
  __device__ int64_t cols() const { return q.ocg; }
  __device__ int64_t depth() const { return q.icg * q.KH * q.KW; }
  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const int64_t opix = q.OH * q.OW, taps = q.KH * q.KW;
    const int64_t n = m / opix, pix = m - n * opix;
    const int64_t oh = pix / q.OW, ow = pix - oh * q.OW;
    const int64_t ic = k / taps, t = k - ic * taps;
    const int64_t kh = t / q.KW, kw = t - kh * q.KW;
    const int64_t ih = oh * q.sh - q.pt + kh * q.dh, iw = ow * q.sw - q.pl + kw * q.dw;
    if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) return T(0);
    return __ldg(&x[((n * q.C + g * q.icg + ic) * q.H + ih) * q.W + iw]);
  }
  __device__ T b(int64_t g, int64_t k, int64_t n) const { return __ldg(&w[(g * q.ocg + n) * depth() + k]); }
  __device__ void store(int64_t g, int64_t m, int64_t n, T v) const {
    const int64_t opix = q.OH * q.OW;
    const int64_t img = m / opix, pix = m - img * opix, oc = g * q.ocg + n;
    const int64_t at = (img * q.OC + oc) * opix + pix;
    if (ep.scale) v *= ep.scale[oc];
    if (ep.shift) v += ep.shift[oc];
    if (ep.residual) v += ep.residual[at];
    if (ep.relu) v = v > T(0) ? v : (v == v ? T(0) : v);  // NaN passes, -0.0 becomes +0.0, as on the CPU
    y[at] = v;
  }
};

// 1x1, stride 1, no padding: the output pixel is the input pixel.
template <class T>
struct Forward1x1Problem : ForwardProblem<T> {
  using Base = ForwardProblem<T>;
  __device__ int64_t depth() const { return this->q.icg; }
  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const Geometry& q = this->q;
    const int64_t pix_n = q.H * q.W;
    const int64_t n = m / pix_n, pix = m - n * pix_n;
    return __ldg(&this->x[(n * q.C + g * q.icg + k) * pix_n + pix]);
  }
  __device__ T b(int64_t g, int64_t k, int64_t n) const { return __ldg(&this->w[(g * this->q.ocg + n) * this->q.icg + k]); }
};

template <class T>
struct InputGradProblem {
  Geometry q;
  const T* gy;
  const T* w;
  T* gx;
  static constexpr bool kAAlongK = false, kBAlongK = false;
  __device__ int64_t rows() const { return q.N * q.H * q.W; }
  __device__ int64_t cols() const { return q.icg; }
  __device__ int64_t depth() const { return q.ocg * q.KH * q.KW; }
  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const int64_t ipix = q.H * q.W, taps = q.KH * q.KW;
    const int64_t n = m / ipix, pix = m - n * ipix;
    const int64_t ih = pix / q.W, iw = pix - ih * q.W;
    const int64_t oc = k / taps, t = k - oc * taps;
    const int64_t kh = t / q.KW, kw = t - kh * q.KW;
    const int64_t hn = ih + q.pt - kh * q.dh, wn = iw + q.pl - kw * q.dw;
    if (hn < 0 || wn < 0 || hn % q.sh != 0 || wn % q.sw != 0) return T(0);
    const int64_t oh = hn / q.sh, ow = wn / q.sw;
    if (oh >= q.OH || ow >= q.OW) return T(0);
    return __ldg(&gy[((n * q.OC + g * q.ocg + oc) * q.OH + oh) * q.OW + ow]);
  }
  __device__ T b(int64_t g, int64_t k, int64_t n) const {
    const int64_t taps = q.KH * q.KW;
    const int64_t oc = k / taps, t = k - oc * taps;
    return __ldg(&w[((g * q.ocg + oc) * q.icg + n) * taps + t]);
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, T v) const {
    const int64_t ipix = q.H * q.W;
    const int64_t img = m / ipix, pix = m - img * ipix;
    gx[(img * q.C + g * q.icg + n) * ipix + pix] = v;
  }
};

// One k-slice of the weight gradient, into partial[slice][OC][icg*KH*KW].
template <class T>
struct WeightGradProblem {
  Geometry q;
  const T* gy;
  const T* x;
  T* partial;  // (slices, OC, icg*KH*KW); the gradient itself when there is one slice
  static constexpr bool kAAlongK = true, kBAlongK = true;
  __device__ int64_t rows() const { return q.ocg; }
  __device__ int64_t cols() const { return q.icg * q.KH * q.KW; }
  __device__ int64_t depth() const { return q.N * q.OH * q.OW; }
  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const int64_t opix = q.OH * q.OW;
    const int64_t n = k / opix, pix = k - n * opix;
    return __ldg(&gy[(n * q.OC + g * q.ocg + m) * opix + pix]);
  }
  __device__ T b(int64_t g, int64_t k, int64_t col) const {
    const int64_t opix = q.OH * q.OW, taps = q.KH * q.KW;
    const int64_t n = k / opix, pix = k - n * opix;
    const int64_t oh = pix / q.OW, ow = pix - oh * q.OW;
    const int64_t ic = col / taps, t = col - ic * taps;
    const int64_t kh = t / q.KW, kw = t - kh * q.KW;
    const int64_t ih = oh * q.sh - q.pt + kh * q.dh, iw = ow * q.sw - q.pl + kw * q.dw;
    if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) return T(0);
    return __ldg(&x[((n * q.C + g * q.icg + ic) * q.H + ih) * q.W + iw]);
  }
};

// ---------------------------------------------------------------------------------- the GEMM
// Accumulates this block's tile over k in [k_begin, k_end) into acc.
template <class T, class P>
__device__ __forceinline__ void tile_product(const P& prob, int64_t g, int64_t m0, int64_t n0, int64_t k_begin,
                                             int64_t k_end, T (&acc)[kTM][kTN]) {
  __shared__ T As[kBK][kBM];
  __shared__ T Bs[kBK][kBN];
  const int tid = threadIdx.x;
  const int tx = tid % kTX, ty = tid / kTX;
  const int64_t M = prob.rows(), Ncols = prob.cols();
  for (int i = 0; i < kTM; ++i)
    for (int j = 0; j < kTN; ++j) acc[i][j] = T(0);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    for (int e = tid; e < kBM * kBK; e += kThreads) {
      const int mi = P::kAAlongK ? e / kBK : e % kBM;
      const int ki = P::kAAlongK ? e % kBK : e / kBM;
      const int64_t m = m0 + mi, k = k0 + ki;
      As[ki][mi] = (m < M && k < k_end) ? prob.a(g, m, k) : T(0);
    }
    for (int e = tid; e < kBN * kBK; e += kThreads) {
      const int ni = P::kBAlongK ? e / kBK : e % kBN;
      const int ki = P::kBAlongK ? e % kBK : e / kBN;
      const int64_t n = n0 + ni, k = k0 + ki;
      Bs[ki][ni] = (n < Ncols && k < k_end) ? prob.b(g, k, n) : T(0);
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; ++kk) {
      T av[kTM], bv[kTN];
      for (int i = 0; i < kTM; ++i) av[i] = As[kk][tx + i * kTX];
      for (int j = 0; j < kTN; ++j) bv[j] = Bs[kk][ty + j * (kThreads / kTX)];
      for (int i = 0; i < kTM; ++i)
        for (int j = 0; j < kTN; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
}

// y_offset / z_offset: the first column tile / z-slice of this launch (see launch_tiles).
template <class T, class P>
__global__ void __launch_bounds__(kThreads) gemm_kernel(P prob, int64_t y_offset, int64_t z_offset) {
  const int64_t g = z_offset + blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = (y_offset + blockIdx.y) * kBN;
  T acc[kTM][kTN];
  tile_product<T>(prob, g, m0, n0, 0, prob.depth(), acc);
  const int tx = threadIdx.x % kTX, ty = threadIdx.x / kTX;
  for (int i = 0; i < kTM; ++i)
    for (int j = 0; j < kTN; ++j) {
      const int64_t m = m0 + tx + i * kTX, n = n0 + ty + j * (kThreads / kTX);
      if (m < prob.rows() && n < prob.cols()) prob.store(g, m, n, acc[i][j]);
    }
}

// z = group * slices + slice.
template <class T>
__global__ void __launch_bounds__(kThreads) weight_grad_kernel(WeightGradProblem<T> prob, int64_t slices,
                                                               int64_t slice_len, int64_t y_offset, int64_t z_offset) {
  const int64_t z = z_offset + blockIdx.z;
  const int64_t g = z / slices, slice = z - g * slices;
  const int64_t k_begin = slice * slice_len;
  int64_t k_end = k_begin + slice_len;
  if (k_end > prob.depth()) k_end = prob.depth();
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = (y_offset + blockIdx.y) * kBN;
  T acc[kTM][kTN];
  tile_product<T>(prob, g, m0, n0, k_begin, k_end, acc);
  const int tx = threadIdx.x % kTX, ty = threadIdx.x / kTX;
  const int64_t cols = prob.cols();
  for (int i = 0; i < kTM; ++i)
    for (int j = 0; j < kTN; ++j) {
      const int64_t m = m0 + tx + i * kTX, n = n0 + ty + j * (kThreads / kTX);
      if (m < prob.rows() && n < cols)
        prob.partial[(slice * prob.q.OC + g * prob.q.ocg + m) * cols + n] = acc[i][j];
    }
}

// gw[i] = sum over slices of partial[slice][i], in slice order.
template <class T>
__global__ void sum_slices_kernel(const T* partial, int64_t slices, int64_t count, T* gw) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(blockDim.x) * gridDim.x) {
    T s = T(0);
    for (int64_t sl = 0; sl < slices; ++sl) s += partial[sl * count + i];
    gw[i] = s;
  }
}

// One block per output channel: a strided partial sum per thread, then a shared-memory tree.
template <class T>
__global__ void __launch_bounds__(kThreads) bias_grad_kernel(const T* gy, int64_t N, int64_t OC, int64_t opix,
                                                             int64_t oc_offset, T* gb) {
  __shared__ T part[kThreads];
  const int64_t oc = oc_offset + blockIdx.x;
  T s = T(0);
  for (int64_t n = 0; n < N; ++n) {
    const T* row = gy + (n * OC + oc) * opix;
    for (int64_t i = threadIdx.x; i < opix; i += kThreads) s += row[i];
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (int(threadIdx.x) < width) part[threadIdx.x] += part[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[oc] = part[0];
}

inline unsigned blocks_for(int64_t n, int64_t per) { return unsigned((n + per - 1) / per); }

// Launches kernel k over rows x cols tiles and `zs` z-slices, in chunks of at most 65535
// column tiles and z-slices (the grid's y / z limits); `extra` forwards the kernel's other
// trailing arguments before the two offsets.
template <class K, class P, class... Extra>
cudaError_t launch_tiles(K k, const P& prob, int64_t rows, int64_t cols, int64_t zs, cudaStream_t stream,
                         Extra... extra) {
  if (rows <= 0 || cols <= 0 || zs <= 0) return cudaGetLastError();
  const int64_t ytiles = (cols + kBN - 1) / kBN;
  for (int64_t z0 = 0; z0 < zs; z0 += kMaxGridYZ) {
    const int64_t nz = zs - z0 < int64_t(kMaxGridYZ) ? zs - z0 : int64_t(kMaxGridYZ);
    for (int64_t y0 = 0; y0 < ytiles; y0 += kMaxGridYZ) {
      const int64_t ny = ytiles - y0 < int64_t(kMaxGridYZ) ? ytiles - y0 : int64_t(kMaxGridYZ);
      const dim3 grid(blocks_for(rows, kBM), unsigned(ny), unsigned(nz));
      FASTCONV_LAUNCH(k, grid, dim3(kThreads), 0, stream, prob, extra..., y0, z0);
    }
  }
  return cudaGetLastError();
}

// Split the weight gradient's k (N*OH*OW) into slices of at least this many pixels, and at
// most kMaxSlices of them: enough blocks to fill a GPU for the small-M, small-N late layers.
constexpr int64_t kMinSlice = 1024;
constexpr int64_t kMaxSlices = 64;

int64_t slice_count(const ConvParams& p) {
  const int64_t depth = p.N * p.OH * p.OW;
  int64_t s = (depth + kMinSlice - 1) / kMinSlice;
  return s < 1 ? 1 : (s > kMaxSlices ? kMaxSlices : s);
}

}  // namespace

template <class T>
cudaError_t forward(const ConvParams& p, const T* x, const T* w, const T* scale, const T* shift,
                    const T* residual, bool relu, T* y, cudaStream_t stream) {
  const Geometry q = geometry(p);
  const Epilogue<T> ep{scale, shift, residual, relu};
  const int64_t rows = p.N * p.OH * p.OW;
  const bool plain_1x1 = p.KH == 1 && p.KW == 1 && p.sh == 1 && p.sw == 1 && p.pt == 0 && p.pb == 0 &&
                         p.pl == 0 && p.pr == 0;
  if (plain_1x1) {
    Forward1x1Problem<T> prob;
    prob.q = q;
    prob.x = x;
    prob.w = w;
    prob.y = y;
    prob.ep = ep;
    auto k = &gemm_kernel<T, Forward1x1Problem<T>>;
    return launch_tiles(k, prob, rows, q.ocg, p.groups, stream);
  }
  const ForwardProblem<T> prob{q, x, w, y, ep};
  auto k = &gemm_kernel<T, ForwardProblem<T>>;
  return launch_tiles(k, prob, rows, q.ocg, p.groups, stream);
}

template <class T>
cudaError_t input_grad(const ConvParams& p, const T* gy, const T* w, T* gx, cudaStream_t stream) {
  const Geometry q = geometry(p);
  const InputGradProblem<T> prob{q, gy, w, gx};
  auto k = &gemm_kernel<T, InputGradProblem<T>>;
  return launch_tiles(k, prob, p.N * p.H * p.W, q.icg, p.groups, stream);
}

int64_t weight_grad_workspace(const ConvParams& p) {
  const int64_t s = slice_count(p);
  return s > 1 ? s * p.OC * (p.C / p.groups) * p.KH * p.KW : 0;
}

template <class T>
cudaError_t weight_grad(const ConvParams& p, const T* gy, const T* x, T* gw, T* workspace, cudaStream_t stream) {
  const Geometry q = geometry(p);
  const int64_t slices = slice_count(p);
  const int64_t depth = p.N * p.OH * p.OW;
  const int64_t slice_len = (depth + slices - 1) / slices;
  const int64_t cols = q.icg * p.KH * p.KW;
  const WeightGradProblem<T> prob{q, gy, x, slices > 1 ? workspace : gw};
  auto k = &weight_grad_kernel<T>;
  const cudaError_t e = launch_tiles(k, prob, q.ocg, cols, p.groups * slices, stream, slices, slice_len);
  if (e != cudaSuccess || slices == 1) return e;
  const int64_t count = p.OC * cols;
  if (count == 0) return cudaGetLastError();
  auto sum = &sum_slices_kernel<T>;
  const unsigned blocks = blocks_for(count, 256) < 4096u ? blocks_for(count, 256) : 4096u;
  FASTCONV_LAUNCH(sum, dim3(blocks), dim3(256), 0, stream, static_cast<const T*>(workspace), slices, count, gw);
  return cudaGetLastError();
}

template <class T>
cudaError_t bias_grad(const ConvParams& p, const T* gy, T* gb, cudaStream_t stream) {
  auto k = &bias_grad_kernel<T>;
  const int64_t max_x = 0x7fffffff;
  for (int64_t oc0 = 0; oc0 < p.OC; oc0 += max_x) {
    const int64_t n = p.OC - oc0 < max_x ? p.OC - oc0 : max_x;
    FASTCONV_LAUNCH(k, dim3(unsigned(n)), dim3(kThreads), 0, stream, gy, p.N, p.OC, p.OH * p.OW, oc0, gb);
  }
  return cudaGetLastError();
}

#define FASTCONV_INSTANTIATE(T)                                                                             \
  template cudaError_t forward<T>(const ConvParams&, const T*, const T*, const T*, const T*, const T*, bool, \
                                  T*, cudaStream_t);                                                          \
  template cudaError_t input_grad<T>(const ConvParams&, const T*, const T*, T*, cudaStream_t);                \
  template cudaError_t weight_grad<T>(const ConvParams&, const T*, const T*, T*, T*, cudaStream_t);           \
  template cudaError_t bias_grad<T>(const ConvParams&, const T*, T*, cudaStream_t);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace cuda
}  // namespace conv
}  // namespace fastconv
