// CUDA Squeeze-and-Excitation kernels (also built by g++ for the SIMT emulator through
// se_simt.cpp).
//
//   * Elementwise passes (the scale, grad_input): grid-stride over the N * C * H * W elements
//     (for_each_plane_element: each element's plane tracked incrementally).
//   * Per-plane sums over H * W (the squeeze, grad_scale): a block takes 256 / tpp planes at a
//     time, tpp threads each (the power of two from 32 to 256 that best covers H * W). Each
//     thread sums a strided share of its plane, then a shared-memory tree adds the shares:
//     a fixed order for a given H * W, so results never depend on scheduling (no atomics).
//   * The excitation's small FC layers: one thread per output unit, dot products in the
//     CPU's order.
#include <cmath>
#include <cstdint>

#include "../../common/cuda_loops.h"
#include "../../common/simt.h"
#include "se_cuda.h"
#include "se_math.h"

namespace fastconv {
namespace se {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int elementwise_blocks(int64_t total) { return grid_blocks(total, kThreads, kMaxBlocks); }

// Threads per plane of a reduction.
int plane_threads(int64_t inner) {
  int tpp = 32;
  while (tpp < kThreads && tpp < inner) tpp *= 2;
  return tpp;
}

int reduction_blocks(int64_t planes, int tpp) {
  const int64_t per_block = kThreads / tpp;
  const int64_t b = (planes + per_block - 1) / per_block;
  return static_cast<int>(b < kMaxBlocks ? b : kMaxBlocks);
}

// ReLU that keeps NaN, as torch's (and the CPU kernels'): zero only where 0 > v.
template <class T>
__device__ __forceinline__ T relu_keep_nan(T v) {
  return T(0) > v ? T(0) : v;
}

// g where the forward's ReLU passed (or everywhere without its output y), else 0.
template <class T>
__device__ __forceinline__ T masked_grad(const T* __restrict__ g, const T* __restrict__ y, int64_t i) {
  const T gv = __ldg(g + i);
  return y == nullptr || relu_passes(__ldg(y + i)) ? gv : T(0);
}

// exp of a non-positive argument only, so neither branch overflows (as the CPU's sigmoid).
template <class T>
__device__ __forceinline__ T sigmoid(T z) {
  using std::exp;
  if (z >= T(0)) return T(1) / (T(1) + exp(-z));
  const T e = exp(z);
  return e / (T(1) + e);
}

// Sum of v over the tpp consecutive threads of this thread's plane segment, returned to all of
// them. buf holds one value per thread of the block; every thread of the block must call this
// (it has barriers), and buf is free again when it returns.
template <class T>
__device__ __forceinline__ T segment_sum(T* buf, T v, int tpp) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & (tpp - 1);
  buf[tid] = v;
  __syncthreads();
  for (int half = tpp / 2; half > 0; half /= 2) {
    if (lane < half) buf[tid] += buf[tid + half];
    __syncthreads();
  }
  const T total = buf[tid - lane];
  __syncthreads();
  return total;
}

// ---- elementwise

template <class T>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(const T* __restrict__ x, const T* __restrict__ s, const T* __restrict__ r, T* __restrict__ y,
                 bool relu, int64_t total, int64_t inner) {
  for_each_plane_element(total, inner, 1, [&](int64_t i, int64_t q, int64_t) {
    T v = __ldg(x + i) * __ldg(s + q);
    if (r != nullptr) v += __ldg(r + i);
    y[i] = relu ? relu_keep_nan(v) : v;
  });
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ s,
                      const T* __restrict__ t, T* __restrict__ grad_x, int64_t total, int64_t inner) {
  for_each_plane_element(total, inner, 1, [&](int64_t i, int64_t q, int64_t) {
    const T v = masked_grad(g, y, i) * __ldg(s + q);
    grad_x[i] = t != nullptr ? v + __ldg(t + q) : v;
  });
}

// ---- per-plane sums

// pooled[q] = mean of plane q.
template <class T>
__global__ void __launch_bounds__(kThreads)
    squeeze_kernel(const T* __restrict__ x, T* __restrict__ pooled, int64_t planes, int64_t inner, int tpp) {
  __shared__ T buf[kThreads];
  const int per_block = kThreads / tpp;
  const int seg = static_cast<int>(threadIdx.x) / tpp;
  const int lane = static_cast<int>(threadIdx.x) - seg * tpp;
  const T inv = T(1) / static_cast<T>(inner);
  for (int64_t q0 = static_cast<int64_t>(blockIdx.x) * per_block; q0 < planes;
       q0 += static_cast<int64_t>(gridDim.x) * per_block) {
    const int64_t q = q0 + seg;
    T acc = T(0);
    if (q < planes) {
      const T* xp = x + q * inner;
      for (int64_t j = lane; j < inner; j += tpp) acc += __ldg(xp + j);
    }
    const T sum = segment_sum(buf, acc, tpp);
    if (q < planes && lane == 0) pooled[q] = sum * inv;
  }
}

// out[q] = sum over plane q of g * m * x, times s (1 - s) when s is given (the backward's dz2);
// grad_r = g * m when given.
template <class T>
__global__ void __launch_bounds__(kThreads)
    grad_scale_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ y,
                      const T* __restrict__ s, T* __restrict__ out, T* __restrict__ grad_r, int64_t planes,
                      int64_t inner, int tpp) {
  __shared__ T buf[kThreads];
  const int per_block = kThreads / tpp;
  const int seg = static_cast<int>(threadIdx.x) / tpp;
  const int lane = static_cast<int>(threadIdx.x) - seg * tpp;
  for (int64_t q0 = static_cast<int64_t>(blockIdx.x) * per_block; q0 < planes;
       q0 += static_cast<int64_t>(gridDim.x) * per_block) {
    const int64_t q = q0 + seg;
    T acc = T(0);
    if (q < planes) {
      const int64_t base = q * inner;
      for (int64_t j = lane; j < inner; j += tpp) {
        const T gm = masked_grad(g, y, base + j);
        if (grad_r != nullptr) grad_r[base + j] = gm;
        acc += gm * __ldg(x + base + j);
      }
    }
    const T sum = segment_sum(buf, acc, tpp);
    if (q < planes && lane == 0) {
      if (s != nullptr) {
        const T sq = __ldg(s + q);
        out[q] = sum * sq * (T(1) - sq);
      } else {
        out[q] = sum;
      }
    }
  }
}

// ---- the excitation's FC layers, one thread per output unit

// out[n, o] = act(dot(w[o, :], v[n, :]) + b[o]) for o < rows; w (rows, cols), v (N, cols).
// act: ReLU (keeping NaN, as torch.relu and the CPU's hidden layer) or sigmoid.
template <class T, bool SIGMOID>
__global__ void __launch_bounds__(kThreads)
    fc_kernel(const T* __restrict__ w, const T* __restrict__ b, const T* __restrict__ v, T* __restrict__ out,
              int64_t total, int64_t rows, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / rows;
    const int64_t o = i - n * rows;
    const T* wr = w + o * cols;
    const T* vr = v + n * cols;
    T acc = T(0);
    for (int64_t k = 0; k < cols; ++k) acc += __ldg(wr + k) * __ldg(vr + k);
    const T z = acc + (b != nullptr ? __ldg(b + o) : T(0));
    out[i] = SIGMOID ? sigmoid(z) : relu_keep_nan(z);
  }
}

// out[n, o] = dot(w[:, o], d[n, :]) for o < cols; w (rows, cols), d (N, rows): a transposed
// FC layer, summed over the rows in order. Then, with mask (N, cols): zero where mask <= 0 (not NaN)
// (the hidden ReLU); with a scale factor: times `factor` (the squeeze's 1 / (H W)).
template <class T>
__global__ void __launch_bounds__(kThreads)
    fc_transposed_kernel(const T* __restrict__ w, const T* __restrict__ d, const T* __restrict__ mask,
                         T* __restrict__ out, int64_t total, int64_t rows, int64_t cols, T factor) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / cols;
    const int64_t o = i - n * cols;
    const T* dr = d + n * rows;
    T acc = T(0);
    for (int64_t k = 0; k < rows; ++k) acc += __ldg(dr + k) * __ldg(w + k * cols + o);
    if (mask != nullptr) acc = relu_passes(__ldg(mask + i)) ? acc : T(0);
    out[i] = acc * factor;
  }
}

}  // namespace

template <class T>
cudaError_t channel_scale(const T* x, const T* s, const T* r, T* y, bool relu, const SeParams& p,
                          cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.inner;
  if (total == 0) return cudaSuccess;
  auto kernel = &scale_kernel<T>;
  FASTCONV_LAUNCH(kernel, elementwise_blocks(total), kThreads, 0, stream, x, s, r, y, relu, total, p.inner);
  return cudaGetLastError();
}

template <class T>
cudaError_t channel_scale_grad_scale(const T* g, const T* x, const T* y, T* grad_s, T* grad_r, const SeParams& p,
                                     cudaStream_t stream) {
  const int64_t planes = p.batch * p.channels;
  if (planes == 0) return cudaSuccess;
  const int tpp = plane_threads(p.inner);
  auto kernel = &grad_scale_kernel<T>;
  FASTCONV_LAUNCH(kernel, reduction_blocks(planes, tpp), kThreads, 0, stream, g, x, y, static_cast<const T*>(nullptr),
                  grad_s, grad_r, planes, p.inner, tpp);
  return cudaGetLastError();
}

template <class T>
cudaError_t channel_scale_grad_input(const T* g, const T* y, const T* s, const T* t, T* grad_x, const SeParams& p,
                                     cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.inner;
  if (total == 0) return cudaSuccess;
  auto kernel = &grad_input_kernel<T>;
  FASTCONV_LAUNCH(kernel, elementwise_blocks(total), kThreads, 0, stream, g, y, s, t, grad_x, total, p.inner);
  return cudaGetLastError();
}

template <class T>
cudaError_t squeeze_excitation(const T* x, const T* w1, const T* b1, const T* w2, const T* b2, const T* r, T* y,
                               T* pooled, T* hidden, T* scale, const SeParams& p, int64_t squeezed,
                               cudaStream_t stream) {
  const int64_t planes = p.batch * p.channels;
  const int64_t hidden_units = p.batch * squeezed;
  if (planes > 0) {
    const int tpp = plane_threads(p.inner);
    auto squeeze = &squeeze_kernel<T>;
    FASTCONV_LAUNCH(squeeze, reduction_blocks(planes, tpp), kThreads, 0, stream, x, pooled, planes, p.inner, tpp);
  }
  if (hidden_units > 0) {  // also with C = 0: hidden = relu(b1)
    auto fc1 = &fc_kernel<T, false>;
    FASTCONV_LAUNCH(fc1, elementwise_blocks(hidden_units), kThreads, 0, stream, w1, b1,
                    static_cast<const T*>(pooled), hidden, hidden_units, squeezed, p.channels);
  }
  if (planes > 0) {
    auto fc2 = &fc_kernel<T, true>;
    FASTCONV_LAUNCH(fc2, elementwise_blocks(planes), kThreads, 0, stream, w2, b2, static_cast<const T*>(hidden),
                    scale, planes, p.channels, squeezed);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return channel_scale(x, static_cast<const T*>(scale), r, y, r != nullptr, p, stream);
}

template <class T>
cudaError_t squeeze_excitation_backward(const T* g, const T* x, const T* w1, const T* w2, const T* hidden,
                                        const T* scale, const T* y, T* grad_x, T* grad_r, T* dz1, T* dz2, T* shift,
                                        const SeParams& p, int64_t squeezed, cudaStream_t stream) {
  const int64_t planes = p.batch * p.channels;
  const int64_t hidden_units = p.batch * squeezed;
  if (planes > 0) {
    const int tpp = plane_threads(p.inner);
    auto reduce = &grad_scale_kernel<T>;
    FASTCONV_LAUNCH(reduce, reduction_blocks(planes, tpp), kThreads, 0, stream, g, x, y, scale, dz2, grad_r, planes,
                    p.inner, tpp);
  }
  if (hidden_units > 0) {  // also with C = 0: dz1 = 0
    auto back2 = &fc_transposed_kernel<T>;
    FASTCONV_LAUNCH(back2, elementwise_blocks(hidden_units), kThreads, 0, stream, w2, static_cast<const T*>(dz2),
                    hidden, dz1, hidden_units, p.channels, squeezed, T(1));
  }
  if (grad_x != nullptr && planes > 0) {
    auto back1 = &fc_transposed_kernel<T>;
    FASTCONV_LAUNCH(back1, elementwise_blocks(planes), kThreads, 0, stream, w1, static_cast<const T*>(dz1),
                    static_cast<const T*>(nullptr), shift, planes, squeezed, p.channels,
                    T(1) / static_cast<T>(p.inner));
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    return channel_scale_grad_input(g, y, scale, static_cast<const T*>(shift), grad_x, p, stream);
  }
  return cudaGetLastError();
}

#define FASTCONV_SE_CUDA_INSTANTIATE(T)                                                                              \
  template cudaError_t channel_scale<T>(const T*, const T*, const T*, T*, bool, const SeParams&, cudaStream_t);      \
  template cudaError_t channel_scale_grad_scale<T>(const T*, const T*, const T*, T*, T*, const SeParams&,            \
                                                   cudaStream_t);                                                    \
  template cudaError_t channel_scale_grad_input<T>(const T*, const T*, const T*, const T*, T*, const SeParams&,      \
                                                   cudaStream_t);                                                    \
  template cudaError_t squeeze_excitation<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                             T*, const SeParams&, int64_t, cudaStream_t);                            \
  template cudaError_t squeeze_excitation_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,    \
                                                      const T*, T*, T*, T*, T*, T*, const SeParams&, int64_t,        \
                                                      cudaStream_t);

FASTCONV_SE_CUDA_INSTANTIATE(float)
FASTCONV_SE_CUDA_INSTANTIATE(double)

#undef FASTCONV_SE_CUDA_INSTANTIATE

}  // namespace cuda
}  // namespace se
}  // namespace fastconv
