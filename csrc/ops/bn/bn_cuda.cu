// CUDA BatchNorm + residual + ReLU kernels (also built by g++ for the SIMT emulator through
// bn_simt.cpp).
//
//   * Per-channel sums (the statistics, the backward's s1 / s2): a block per channel; each
//     thread sums a strided share of each of the channel's N planes in double, then a
//     shared-memory tree adds the shares in a fixed order (no atomics), and thread 0 turns the
//     sums into the channel's coefficients with bn_math.h's formulas (as the CPU glue does).
//   * Elementwise passes: grid-stride over the N * C * H * W elements (for_each_plane_element:
//     each element's channel tracked incrementally, no division per element).
#include <cmath>
#include <cstdint>

#include "../../common/cuda_loops.h"
#include "../../common/simt.h"
#include "bn_cuda.h"
#include "bn_math.h"

namespace fastconv {
namespace bn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int elementwise_blocks(int64_t total) { return grid_blocks(total, kThreads, kMaxBlocks); }

int channel_blocks(int64_t channels) { return static_cast<int>(channels < kMaxBlocks ? channels : kMaxBlocks); }

// ReLU that keeps NaN, as torch's (and the CPU kernels'): zero only where 0 > v.
template <class T>
__device__ __forceinline__ T relu_keep_nan(T v) {
  return T(0) > v ? T(0) : v;
}

// Adds u / v over the block's threads into buf[0] / buf[kThreads]; every thread must call it.
__device__ __forceinline__ void block_sums(double* buf, double u, double v) {
  const int tid = static_cast<int>(threadIdx.x);
  buf[tid] = u;
  buf[kThreads + tid] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (tid < half) {
      buf[tid] += buf[tid + half];
      buf[kThreads + tid] += buf[kThreads + tid + half];
    }
    __syncthreads();
  }
}


template <class T>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                 T* __restrict__ mean, T* __restrict__ var, T* __restrict__ coef_a, T* __restrict__ coef_b, double eps,
                 BnParams p) {
  __shared__ double buf[2 * kThreads];
  const int64_t m = p.count();
  for (int64_t c = blockIdx.x; c < p.channels; c += gridDim.x) {
    const double k = static_cast<double>(x[c * p.inner]);  // the shift: the channel's first value
    double u = 0.0, v = 0.0;
    // Plane by plane, each thread a strided share of every plane (no per-element division).
    for (int64_t n = 0; n < p.batch; ++n) {
      const T* xp = x + (n * p.channels + c) * p.inner;
      for (int64_t i = threadIdx.x; i < p.inner; i += kThreads) {
        const double d = static_cast<double>(xp[i]) - k;
        u += d;
        v += d * d;
      }
    }
    block_sums(buf, u, v);
    if (threadIdx.x == 0) {
      double mu, sigma2;
      channel_stats(k, buf[0], buf[kThreads], m, mu, sigma2);
      mean[c] = static_cast<T>(mu);
      var[c] = static_cast<T>(sigma2);
      coef_a[c] = static_cast<T>(forward_scale(sigma2, eps, weight ? static_cast<double>(weight[c]) : 1.0));
      coef_b[c] = bias ? bias[c] : T(0);
    }
    __syncthreads();  // buf is reused by the next channel
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ a,
                 const T* __restrict__ b, const T* __restrict__ r, T* __restrict__ y, bool relu, int64_t total,
                 int64_t inner, int64_t channels) {
  for_each_plane_element(total, inner, channels, [&](int64_t i, int64_t, int64_t c) {
    T v = (x[i] - mean[c]) * a[c] + b[c];
    if (r != nullptr) v += r[i];
    y[i] = relu ? relu_keep_nan(v) : v;
  });
}

template <class T>
__device__ __forceinline__ T masked(const T* __restrict__ g, const T* __restrict__ y, int64_t i) {
  return y == nullptr || relu_passes(y[i]) ? g[i] : T(0);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    grad_sums_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ weight,
                     const T* __restrict__ mean, const T* __restrict__ var, const T* __restrict__ y,
                     T* __restrict__ grad_r, T* __restrict__ grad_weight, T* __restrict__ grad_bias,
                     T* __restrict__ k1, T* __restrict__ k2, T* __restrict__ k3, double eps, BnParams p) {
  __shared__ double buf[2 * kThreads];
  const int64_t m = p.count();
  for (int64_t c = blockIdx.x; c < p.channels; c += gridDim.x) {
    const T mc = mean[c];
    double u = 0.0, v = 0.0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const int64_t o = (n * p.channels + c) * p.inner;
      for (int64_t i = o + threadIdx.x; i < o + p.inner; i += kThreads) {
        const T gv = masked(g, y, i);
        if (grad_r != nullptr) grad_r[i] = gv;
        u += static_cast<double>(gv);
        v += static_cast<double>(gv * (x[i] - mc));
      }
    }
    block_sums(buf, u, v);
    if (threadIdx.x == 0) {
      double a, b, d, dw;
      backward_coefficients(static_cast<double>(var[c]), eps, weight ? static_cast<double>(weight[c]) : 1.0, buf[0],
                            buf[kThreads], m, a, b, d, dw);
      k1[c] = static_cast<T>(a);
      k2[c] = static_cast<T>(b);
      k3[c] = static_cast<T>(d);
      grad_weight[c] = static_cast<T>(dw);
      grad_bias[c] = static_cast<T>(buf[0]);
    }
    __syncthreads();
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ x,
                      const T* __restrict__ mean, const T* __restrict__ k1, const T* __restrict__ k2,
                      const T* __restrict__ k3, T* __restrict__ grad_x, int64_t total, int64_t inner,
                      int64_t channels) {
  for_each_plane_element(total, inner, channels, [&](int64_t i, int64_t, int64_t c) {
    grad_x[i] = masked(g, y, i) * k1[c] + ((x[i] - mean[c]) * k2[c] + k3[c]);
  });
}

}  // namespace

template <class T>
cudaError_t batch_norm_act(const T* x, const T* weight, const T* bias, const T* r, T* y, T* mean, T* var,
                           T* scratch, bool relu, double eps, const BnParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.inner;
  if (total == 0) return cudaSuccess;
  T* a = scratch;
  T* b = scratch + p.channels;
  auto stats = &stats_kernel<T>;
  FASTCONV_LAUNCH(stats, channel_blocks(p.channels), kThreads, 0, stream, x, weight, bias, mean, var, a, b, eps, p);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  auto apply = &apply_kernel<T>;
  FASTCONV_LAUNCH(apply, elementwise_blocks(total), kThreads, 0, stream, x, static_cast<const T*>(mean),
                  static_cast<const T*>(a),
                  static_cast<const T*>(b), r, y, relu, total, p.inner, p.channels);
  return cudaGetLastError();
}

template <class T>
cudaError_t batch_norm_act_backward(const T* g, const T* x, const T* weight, const T* mean, const T* var, const T* y,
                                    T* grad_x, T* grad_weight, T* grad_bias, T* grad_r, T* scratch, double eps,
                                    const BnParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.inner;
  if (total == 0) return cudaSuccess;
  T* k1 = scratch;
  T* k2 = scratch + p.channels;
  T* k3 = scratch + 2 * p.channels;
  auto sums = &grad_sums_kernel<T>;
  FASTCONV_LAUNCH(sums, channel_blocks(p.channels), kThreads, 0, stream, g, x, weight, mean, var, y, grad_r,
                  grad_weight, grad_bias, k1, k2, k3, eps, p);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  // The residual's gradient, when written, is the masked gradient: read it instead of g and y.
  const T* gm = grad_r != nullptr ? grad_r : g;
  const T* ym = grad_r != nullptr ? nullptr : y;
  auto input = &grad_input_kernel<T>;
  FASTCONV_LAUNCH(input, elementwise_blocks(total), kThreads, 0, stream, gm, ym, x, mean, static_cast<const T*>(k1),
                  static_cast<const T*>(k2), static_cast<const T*>(k3), grad_x, total, p.inner, p.channels);
  return cudaGetLastError();
}

#define FASTCONV_BN_CUDA_INSTANTIATE(T)                                                                          \
  template cudaError_t batch_norm_act<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*, bool, double,   \
                                         const BnParams&, cudaStream_t);                                         \
  template cudaError_t batch_norm_act_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, \
                                                  T*, T*, T*, T*, double, const BnParams&, cudaStream_t);

FASTCONV_BN_CUDA_INSTANTIATE(float)
FASTCONV_BN_CUDA_INSTANTIATE(double)

#undef FASTCONV_BN_CUDA_INSTANTIATE

}  // namespace cuda
}  // namespace bn
}  // namespace fastconv
