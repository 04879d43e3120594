// CUDA pooling kernels. Tensors are contiguous NCHW; the window geometry is pool_math.h's,
// shared with the CPU kernels, so windows, argmaxes and divisors agree with them exactly.
//
// Forwards: one thread per output cell (grid-stride, int64 offsets), the window walked row by
// row as the CPU kernels do. Backwards: gathers, one thread per input cell summing, in output
// order, over the outputs whose window can hold it; each input gradient is written exactly
// once, with no atomics, so the result never depends on scheduling (and the sum is formed in
// the same order as the CPU kernels' scatter).
#include <cmath>
#include <cstdint>

#include "../../common/simt.h"
#include "pool_cuda.h"
#include "pool_math.h"

namespace fastconv {
namespace pool {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
// Resident blocks per SM promised to ptxas. With __launch_bounds__(256) alone, ptxas (13.0)
// squeezed some kernels to 32 registers for full occupancy and spilled around the 64-bit
// division calls; 2 leaves it up to 128 registers, and these kernels take 35 to 82.
constexpr int kMinBlocks = 2;

dim3 grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

__device__ __forceinline__ int64_t first_item() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t item_stride() {
  return static_cast<int64_t>(blockDim.x) * gridDim.x;
}

template <class T>
__device__ __forceinline__ T negative_infinity() {
  return -static_cast<T>(INFINITY);
}

// ---------------------------------------------------------------- max pooling

// torch's rule: a tap replaces the running max when it is larger or NaN, so a NaN wins (the
// window's last NaN) and ties keep the first tap. The argmax starts at the window's first
// in-bounds tap, which an all -inf window keeps; a window with no in-bounds tap (padding
// with dilation) keeps it too, pointing outside the window as torch's does.
template <class T, class I, bool kIndices>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    max_pool_fwd_kernel(const T* __restrict__ input, T* __restrict__ output, I* __restrict__ indices,
                        const Pool2dParams p, const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t ow = i % p.out_w;
    const int64_t rest = i / p.out_w;
    const int64_t oh = rest % p.out_h;
    const int64_t plane = rest / p.out_h;
    const MaxWindow wh = max_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
    const MaxWindow ww = max_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w);
    const T* src = input + plane * plane_in;
    T best = negative_infinity<T>();
    int64_t best_i = wh.start * p.in_w + ww.start;
    for (int64_t ih = wh.start; ih < wh.end; ih += p.dilation_h) {
      const T* row = src + ih * p.in_w;
      for (int64_t iw = ww.start; iw < ww.end; iw += p.dilation_w) {
        const T v = row[iw];
        if (v > best || v != v) {
          best = v;
          if (kIndices) best_i = ih * p.in_w + iw;
        }
      }
    }
    output[i] = best;
    if (kIndices) indices[i] = static_cast<I>(best_i);
  }
}

// Each input cell sums the gradients of the outputs whose argmax is that cell, over the
// outputs whose window span can hold it, in output (row-major) order.
// empty_reach >= 0 when some output column's window has no in-bounds tap: that window's argmax
// is start_h * in_w + start_w with start_w in [in_w, dilation_w), i.e. a cell of a row
// start_w / in_w (at most empty_reach) below start_h, which the CPU kernels' scatter credits.
// Such columns are few (they start in the left padding), so for those shapes every output
// column is visited, and the rows are widened to those whose start_h lies in
// [ih - empty_reach, ih - 1]. A window with no in-bounds row points past the plane: no cell.
template <class T, class I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    max_pool_bwd_kernel(const T* __restrict__ grad_output, const I* __restrict__ indices,
                        T* __restrict__ grad_input, const Pool2dParams p, const int64_t empty_reach,
                        const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t plane = i / plane_in;
    const int64_t cell = i - plane * plane_in;
    const int64_t ih = cell / p.in_w, iw = cell - ih * p.in_w;
    OutputRange rows = outputs_covering(ih, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.out_h);
    OutputRange cols = outputs_covering(iw, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.out_w);
    if (empty_reach >= 0) {
      cols.first = 0;
      cols.last = p.out_w - 1;
      const int64_t lowest = ih - empty_reach;  // smallest start_h that can point here
      // Rows starting in the top padding have start_h in [0, dilation_h); the others start at
      // oh * stride_h - pad_h. Every candidate row also has oh <= (ih + pad_h) / stride_h.
      const int64_t from = lowest <= p.dilation_h - 1 ? 0 : (lowest + p.pad_h + p.stride_h - 1) / p.stride_h;
      if (from < rows.first) rows.first = from;
    }
    const T* go = grad_output + plane * plane_out;
    const I* ix = indices + plane * plane_out;
    T acc = T(0);
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const int64_t o = oh * p.out_w + ow;
        if (static_cast<int64_t>(ix[o]) == cell) acc += go[o];
      }
    }
    grad_input[i] = acc;
  }
}

// See max_pool_bwd_kernel: the largest start_w / in_w over the output columns whose window
// has no in-bounds tap, or -1 when there is none.
int64_t empty_column_reach(const Pool2dParams& p) {
  int64_t reach = -1;
  for (int64_t ow = 0; ow < p.out_w; ++ow) {
    const MaxWindow w = max_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w);
    if (w.start >= w.end) {
      const int64_t r = w.start / p.in_w;
      if (r > reach) reach = r;
    }
  }
  return reach;
}

// ---------------------------------------------------------------- average pooling

template <class T>
__device__ __forceinline__ T avg_divisor(const Pool2dParams& p, const AvgWindow& wh, const AvgWindow& ww) {
  return static_cast<T>(p.divisor_override != 0 ? p.divisor_override : wh.count * ww.count);
}

template <class T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    avg_pool_fwd_kernel(const T* __restrict__ input, T* __restrict__ output, const Pool2dParams p,
                        const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t ow = i % p.out_w;
    const int64_t rest = i / p.out_w;
    const int64_t oh = rest % p.out_h;
    const int64_t plane = rest / p.out_h;
    const AvgWindow wh = avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
    const AvgWindow ww = avg_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.in_w, p.count_include_pad);
    const T* src = input + plane * plane_in;
    T sum = T(0);
    for (int64_t ih = wh.start; ih < wh.end; ++ih) {
      const T* row = src + ih * p.in_w;
      for (int64_t iw = ww.start; iw < ww.end; ++iw) sum += row[iw];
    }
    output[i] = sum / avg_divisor<T>(p, wh, ww);
  }
}

// Every output whose window span holds the cell really holds it (no dilation, and the span
// is only cut at the input's edges), so no check is needed.
template <class T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    avg_pool_bwd_kernel(const T* __restrict__ grad_output, T* __restrict__ grad_input,
                        const Pool2dParams p, const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t plane = i / plane_in;
    const int64_t cell = i - plane * plane_in;
    const int64_t ih = cell / p.in_w, iw = cell - ih * p.in_w;
    const OutputRange rows = outputs_covering(ih, p.stride_h, p.pad_h, p.kernel_h, 1, p.out_h);
    const OutputRange cols = outputs_covering(iw, p.stride_w, p.pad_w, p.kernel_w, 1, p.out_w);
    const T* go = grad_output + plane * plane_out;
    T acc = T(0);
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      const AvgWindow wh = avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const AvgWindow ww = avg_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.in_w, p.count_include_pad);
        acc += go[oh * p.out_w + ow] / avg_divisor<T>(p, wh, ww);
      }
    }
    grad_input[i] = acc;
  }
}

// ---------------------------------------------------------------- adaptive average pooling

template <class T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    adaptive_avg_fwd_kernel(const T* __restrict__ input, T* __restrict__ output, const Pool2dParams p,
                            const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t ow = i % p.out_w;
    const int64_t rest = i / p.out_w;
    const int64_t oh = rest % p.out_h;
    const int64_t plane = rest / p.out_h;
    const int64_t h0 = adaptive_start(oh, p.out_h, p.in_h), h1 = adaptive_end(oh, p.out_h, p.in_h);
    const int64_t w0 = adaptive_start(ow, p.out_w, p.in_w), w1 = adaptive_end(ow, p.out_w, p.in_w);
    const T* src = input + plane * plane_in;
    T sum = T(0);
    for (int64_t ih = h0; ih < h1; ++ih) {
      const T* row = src + ih * p.in_w;
      for (int64_t iw = w0; iw < w1; ++iw) sum += row[iw];
    }
    output[i] = sum / static_cast<T>((h1 - h0) * (w1 - w0));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    adaptive_avg_bwd_kernel(const T* __restrict__ grad_output, T* __restrict__ grad_input,
                            const Pool2dParams p, const int64_t total) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t i = first_item(); i < total; i += item_stride()) {
    const int64_t plane = i / plane_in;
    const int64_t cell = i - plane * plane_in;
    const int64_t ih = cell / p.in_w, iw = cell - ih * p.in_w;
    const OutputRange rows = adaptive_outputs_covering(ih, p.out_h, p.in_h);
    const OutputRange cols = adaptive_outputs_covering(iw, p.out_w, p.in_w);
    const T* go = grad_output + plane * plane_out;
    T acc = T(0);
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      const int64_t rows_in_bin = adaptive_end(oh, p.out_h, p.in_h) - adaptive_start(oh, p.out_h, p.in_h);
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const int64_t cols_in_bin = adaptive_end(ow, p.out_w, p.in_w) - adaptive_start(ow, p.out_w, p.in_w);
        acc += go[oh * p.out_w + ow] / static_cast<T>(rows_in_bin * cols_in_bin);
      }
    }
    grad_input[i] = acc;
  }
}

}  // namespace

// ---------------------------------------------------------------- launchers

template <class T, class I>
cudaError_t max_pool2d_forward(const T* input, T* output, I* indices, const Pool2dParams& p,
                               cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total <= 0) return cudaSuccess;
  const dim3 grid = grid_for(total), block(kThreads);
  if (indices != nullptr) {
    auto k = &max_pool_fwd_kernel<T, I, true>;
    FASTCONV_LAUNCH(k, grid, block, 0, stream, input, output, indices, p, total);
  } else {
    auto k = &max_pool_fwd_kernel<T, I, false>;
    FASTCONV_LAUNCH(k, grid, block, 0, stream, input, output, indices, p, total);
  }
  return cudaGetLastError();
}

template <class T, class I>
cudaError_t max_pool2d_backward(const T* grad_output, const I* indices, T* grad_input,
                                const Pool2dParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total <= 0) return cudaSuccess;
  const int64_t reach = empty_column_reach(p);
  auto k = &max_pool_bwd_kernel<T, I>;
  FASTCONV_LAUNCH(k, grid_for(total), dim3(kThreads), 0, stream, grad_output, indices, grad_input, p,
                  reach, total);
  return cudaGetLastError();
}

template <class T>
cudaError_t avg_pool2d_forward(const T* input, T* output, const Pool2dParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total <= 0) return cudaSuccess;
  auto k = &avg_pool_fwd_kernel<T>;
  FASTCONV_LAUNCH(k, grid_for(total), dim3(kThreads), 0, stream, input, output, p, total);
  return cudaGetLastError();
}

template <class T>
cudaError_t avg_pool2d_backward(const T* grad_output, T* grad_input, const Pool2dParams& p,
                                cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total <= 0) return cudaSuccess;
  auto k = &avg_pool_bwd_kernel<T>;
  FASTCONV_LAUNCH(k, grid_for(total), dim3(kThreads), 0, stream, grad_output, grad_input, p, total);
  return cudaGetLastError();
}

template <class T>
cudaError_t adaptive_avg_pool2d_forward(const T* input, T* output, const Pool2dParams& p,
                                        cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total <= 0) return cudaSuccess;
  auto k = &adaptive_avg_fwd_kernel<T>;
  FASTCONV_LAUNCH(k, grid_for(total), dim3(kThreads), 0, stream, input, output, p, total);
  return cudaGetLastError();
}

// With an empty output (out_h or out_w 0) every input gradient is 0: the covering ranges are
// empty, so the kernel still writes each cell.
template <class T>
cudaError_t adaptive_avg_pool2d_backward(const T* grad_output, T* grad_input, const Pool2dParams& p,
                                         cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total <= 0) return cudaSuccess;
  auto k = &adaptive_avg_bwd_kernel<T>;
  FASTCONV_LAUNCH(k, grid_for(total), dim3(kThreads), 0, stream, grad_output, grad_input, p, total);
  return cudaGetLastError();
}

#define FASTCONV_POOL_CUDA_INSTANTIATE(T)                                                              \
  template cudaError_t max_pool2d_forward<T, int32_t>(const T*, T*, int32_t*, const Pool2dParams&,     \
                                                      cudaStream_t);                                  \
  template cudaError_t max_pool2d_forward<T, int64_t>(const T*, T*, int64_t*, const Pool2dParams&,     \
                                                      cudaStream_t);                                  \
  template cudaError_t max_pool2d_backward<T, int32_t>(const T*, const int32_t*, T*, const Pool2dParams&, \
                                                       cudaStream_t);                                 \
  template cudaError_t max_pool2d_backward<T, int64_t>(const T*, const int64_t*, T*, const Pool2dParams&, \
                                                       cudaStream_t);                                 \
  template cudaError_t avg_pool2d_forward<T>(const T*, T*, const Pool2dParams&, cudaStream_t);         \
  template cudaError_t avg_pool2d_backward<T>(const T*, T*, const Pool2dParams&, cudaStream_t);        \
  template cudaError_t adaptive_avg_pool2d_forward<T>(const T*, T*, const Pool2dParams&, cudaStream_t); \
  template cudaError_t adaptive_avg_pool2d_backward<T>(const T*, T*, const Pool2dParams&, cudaStream_t);

FASTCONV_POOL_CUDA_INSTANTIATE(float)
FASTCONV_POOL_CUDA_INSTANTIATE(double)

#undef FASTCONV_POOL_CUDA_INSTANTIATE

}  // namespace cuda
}  // namespace pool
}  // namespace fastconv
