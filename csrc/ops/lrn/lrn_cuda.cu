// CUDA LRN kernels (also built by g++ for the SIMT emulator through lrn_simt.cpp).
//
// One thread per (image n, inner position s): it walks the channels of its column, so the
// threads of a warp read adjacent positions of the same channel row (coalesced). Each window
// sum is formed afresh in channel order from the squares of the window's inputs, the additions
// the CPU kernels make (lrn_kernels_impl.h), not a running sum with subtraction, which would
// lose the small channels after a large one. The re-reads of a column's few neighbouring
// channels are cache hits.
//
// Backward, per column, two passes (lrn_math.h): pass 1 writes g / t^beta into grad_x and
// u_c = (g_c / t_c^beta) x_c / t_c into the workspace; pass 2 gathers, for each channel i, u
// over the channels whose window holds i and finishes grad_x[i] in place. A column is owned by
// one thread, so the passes need no synchronisation and the result no atomics.
#include <cmath>
#include <cstdint>

#include "../../common/simt.h"
#include "lrn_cuda.h"
#include "lrn_math.h"

namespace fastconv {
namespace lrn {
namespace cuda {
namespace {

constexpr int kLrnThreads = 256;
constexpr int64_t kLrnMaxBlocks = 4096;

// How t^-beta is computed, picked once per launch as the CPU kernels pick it per call: beta =
// 0.75 (AlexNet) is a * sqrt(a) with a = t^-1/2, 0.5 and 1 are direct, anything else is pow.
enum LrnPow { kPowThreeQuarters, kPowHalf, kPowOne, kPowGeneral };

template <class T, int MODE>
__device__ __forceinline__ T lrn_pow_neg_beta(T t, T beta) {
  using std::pow;
  using std::sqrt;
  if (MODE == kPowThreeQuarters) {
    const T a = T(1) / sqrt(t);
    return a * sqrt(a);
  }
  if (MODE == kPowHalf) return T(1) / sqrt(t);
  if (MODE == kPowOne) return T(1) / t;
  return T(1) / pow(t, beta);
}

// k + alpha / size * (sum of squares over channels [first, last] of the column at xs).
template <class T>
__device__ __forceinline__ T lrn_denominator(const T* __restrict__ xs, int64_t inner, int64_t first,
                                             int64_t last, T alpha_over_size, T k) {
  T sum = T(0);
  for (int64_t w = first; w <= last; ++w) {
    const T v = __ldg(xs + w * inner);
    sum += v * v;
  }
  return sum * alpha_over_size + k;
}

template <class T, int MODE>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t columns, int64_t channels,
                       int64_t inner, int64_t size, T alpha_over_size, T k, T beta) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < columns; col += stride) {
    const int64_t n = col / inner;
    const int64_t s = col - n * inner;
    const int64_t base = n * channels * inner + s;
    const T* xs = x + base;
    T* ys = y + base;
    if (sizeof(T) == sizeof(float)) {
      for (int64_t c = 0; c < channels; ++c) {
        const T t = lrn_denominator(xs, inner, window_first(c, size), window_last(c, size, channels),
                                    alpha_over_size, k);
        ys[c * inner] = __ldg(xs + c * inner) * lrn_pow_neg_beta<T, MODE>(t, beta);
      }
    } else {
      // float64: the denominators go through y first, so that the loop around the sqrt / pow
      // slow-path calls carries few values (one loop doing both spills a register, which the
      // build treats as an error). Same values, one more pass over the column in cache.
      for (int64_t c = 0; c < channels; ++c)
        ys[c * inner] = lrn_denominator(xs, inner, window_first(c, size), window_last(c, size, channels),
                                        alpha_over_size, k);
      const T* const end = xs + channels * inner;
      T* yc = ys;
      for (const T* xc = xs; xc != end; xc += inner, yc += inner)
        *yc = __ldg(xc) * lrn_pow_neg_beta<T, MODE>(*yc, beta);
    }
  }
}

template <class T, int MODE>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, T* __restrict__ grad_x,
                        T* __restrict__ u, int64_t columns, int64_t channels, int64_t inner, int64_t size,
                        T alpha_over_size, T k, T beta, T coef) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < columns; col += stride) {
    const int64_t n = col / inner;
    const int64_t s = col - n * inner;
    const int64_t base = n * channels * inner + s;
    const T* xs = x + base;
    const T* gs = grad_y + base;
    T* gx = grad_x + base;
    T* us = u + base;
    // Pass 1: g / t^beta (the direct term) and u = (g / t^beta) x / t.
    using std::isinf;
    for (int64_t c = 0; c < channels; ++c) {
      const T t = lrn_denominator(xs, inner, window_first(c, size), window_last(c, size, channels),
                                  alpha_over_size, k);
      const T gd = __ldg(gs + c * inner) * lrn_pow_neg_beta<T, MODE>(t, beta);
      gx[c * inner] = gd;
      // torch's autograd at an infinite t: 0 * t^(beta - 1) = NaN for beta > 1 (lrn_kernels_impl.h).
      const T uc = gd * __ldg(xs + c * inner) / t;
      us[c * inner] = (beta > T(1) && isinf(t)) ? uc + T(NAN) : uc;
    }
    // Pass 2: the window terms, gathered in channel order.
    for (int64_t i = 0; i < channels; ++i) {
      const int64_t last = covering_last(i, size, channels);
      T acc = T(0);
      for (int64_t c = covering_first(i, size); c <= last; ++c) acc += us[c * inner];
      // beta = 0: torch's pow backward is zero; only x itself can make the term NaN.
      const T xi = __ldg(xs + i * inner);
      gx[i * inner] = gx[i * inner] - coef * (beta == T(0) ? xi : xi * acc);
    }
  }
}

int lrn_blocks(int64_t columns) {
  const int64_t b = (columns + kLrnThreads - 1) / kLrnThreads;
  return static_cast<int>(b < kLrnMaxBlocks ? b : kLrnMaxBlocks);
}

template <class T>
int lrn_pow_mode(T beta) {
  if (beta == T(0.75)) return kPowThreeQuarters;
  if (beta == T(0.5)) return kPowHalf;
  if (beta == T(1)) return kPowOne;
  return kPowGeneral;
}

template <class T, int MODE>
void launch_forward(const T* x, T* y, int64_t columns, const LrnParams& p, cudaStream_t stream) {
  const T alpha_over_size = static_cast<T>(p.alpha / static_cast<double>(p.size));
  auto kernel = &lrn_forward_kernel<T, MODE>;
  FASTCONV_LAUNCH(kernel, lrn_blocks(columns), kLrnThreads, 0, stream, x, y, columns, p.channels, p.inner, p.size,
                  alpha_over_size, static_cast<T>(p.k), static_cast<T>(p.beta));
}

template <class T, int MODE>
void launch_backward(const T* grad_y, const T* x, T* grad_x, T* workspace, int64_t columns, const LrnParams& p,
                     cudaStream_t stream) {
  const T alpha_over_size = static_cast<T>(p.alpha / static_cast<double>(p.size));
  const T coef = static_cast<T>(2.0 * p.alpha * p.beta / static_cast<double>(p.size));
  auto kernel = &lrn_backward_kernel<T, MODE>;
  FASTCONV_LAUNCH(kernel, lrn_blocks(columns), kLrnThreads, 0, stream, grad_y, x, grad_x, workspace, columns,
                  p.channels, p.inner, p.size, alpha_over_size, static_cast<T>(p.k), static_cast<T>(p.beta), coef);
}

}  // namespace

template <class T>
cudaError_t lrn_forward(const T* x, T* y, const LrnParams& p, cudaStream_t stream) {
  const int64_t columns = p.batch * p.inner;
  if (columns == 0 || p.channels == 0) return cudaSuccess;
  switch (lrn_pow_mode(static_cast<T>(p.beta))) {
    case kPowThreeQuarters: launch_forward<T, kPowThreeQuarters>(x, y, columns, p, stream); break;
    case kPowHalf: launch_forward<T, kPowHalf>(x, y, columns, p, stream); break;
    case kPowOne: launch_forward<T, kPowOne>(x, y, columns, p, stream); break;
    default: launch_forward<T, kPowGeneral>(x, y, columns, p, stream); break;
  }
  return cudaGetLastError();
}

template <class T>
cudaError_t lrn_backward(const T* grad_y, const T* x, T* grad_x, T* workspace, const LrnParams& p,
                         cudaStream_t stream) {
  const int64_t columns = p.batch * p.inner;
  if (columns == 0 || p.channels == 0) return cudaSuccess;
  switch (lrn_pow_mode(static_cast<T>(p.beta))) {
    case kPowThreeQuarters:
      launch_backward<T, kPowThreeQuarters>(grad_y, x, grad_x, workspace, columns, p, stream);
      break;
    case kPowHalf: launch_backward<T, kPowHalf>(grad_y, x, grad_x, workspace, columns, p, stream); break;
    case kPowOne: launch_backward<T, kPowOne>(grad_y, x, grad_x, workspace, columns, p, stream); break;
    default: launch_backward<T, kPowGeneral>(grad_y, x, grad_x, workspace, columns, p, stream); break;
  }
  return cudaGetLastError();
}

template cudaError_t lrn_forward<float>(const float*, float*, const LrnParams&, cudaStream_t);
template cudaError_t lrn_forward<double>(const double*, double*, const LrnParams&, cudaStream_t);
template cudaError_t lrn_backward<float>(const float*, const float*, float*, float*, const LrnParams&,
                                         cudaStream_t);
template cudaError_t lrn_backward<double>(const double*, const double*, double*, double*, const LrnParams&,
                                          cudaStream_t);

}  // namespace cuda
}  // namespace lrn
}  // namespace fastconv
