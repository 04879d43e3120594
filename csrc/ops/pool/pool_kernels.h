// Raw-pointer pooling kernels, one table per ISA (pool_kernels_{avx512,avx2,default}.cpp).
// No torch headers: the ATen glue in pool_cpu.cpp splits the work with at::parallel_for and
// calls these on [begin, end) slices. NCHW kernels take a range of (n, c) planes; NHWC
// kernels a range of images, or of output rows across the batch where noted.
#pragma once

#include <cstdint>

#include "pool_math.h"

namespace fastconv {
namespace pool {

template <class T>
struct PoolKernels {
  // indices may be null (inference: no argmax is tracked).
  void (*max_fwd_nchw)(const T* in, T* out, int64_t* indices, const Pool2dParams& p,
                       int64_t plane_begin, int64_t plane_end);
  // NHWC forward slices over output rows of the whole batch: row r is (n, oh) = (r / out_h, r % out_h).
  void (*max_fwd_nhwc)(const T* in, T* out, int64_t* indices, const Pool2dParams& p,
                       int64_t row_begin, int64_t row_end);
  void (*max_bwd_nchw)(const T* grad_out, const int64_t* indices, T* grad_in,
                       const Pool2dParams& p, int64_t plane_begin, int64_t plane_end);
  // Gather form over input rows of the batch (row r = (n, ih)); needs every window non-empty.
  void (*max_bwd_nhwc)(const T* grad_out, const int64_t* indices, T* grad_in,
                       const Pool2dParams& p, int64_t row_begin, int64_t row_end);
  // Scatter form over images, for shapes with empty windows (padding + dilation).
  void (*max_bwd_nhwc_scatter)(const T* grad_out, const int64_t* indices, T* grad_in,
                               const Pool2dParams& p, int64_t image_begin, int64_t image_end);

  // The same five with int32 argmax indices: the training path's internal format when a
  // plane has fewer than 2^31 cells (half the index traffic of torch's int64).
  void (*max_fwd_nchw_i32)(const T* in, T* out, int32_t* indices, const Pool2dParams& p,
                           int64_t plane_begin, int64_t plane_end);
  void (*max_fwd_nhwc_i32)(const T* in, T* out, int32_t* indices, const Pool2dParams& p,
                           int64_t row_begin, int64_t row_end);
  void (*max_bwd_nchw_i32)(const T* grad_out, const int32_t* indices, T* grad_in,
                           const Pool2dParams& p, int64_t plane_begin, int64_t plane_end);
  void (*max_bwd_nhwc_i32)(const T* grad_out, const int32_t* indices, T* grad_in,
                           const Pool2dParams& p, int64_t row_begin, int64_t row_end);
  void (*max_bwd_nhwc_scatter_i32)(const T* grad_out, const int32_t* indices, T* grad_in,
                                   const Pool2dParams& p, int64_t image_begin, int64_t image_end);

  void (*avg_fwd_nchw)(const T* in, T* out, const Pool2dParams& p, int64_t plane_begin,
                       int64_t plane_end);
  void (*avg_fwd_nhwc)(const T* in, T* out, const Pool2dParams& p, int64_t row_begin,
                       int64_t row_end);
  void (*avg_bwd_nchw)(const T* grad_out, T* grad_in, const Pool2dParams& p,
                       int64_t plane_begin, int64_t plane_end);
  // Gather form over input rows of the batch (row r = (n, ih)).
  void (*avg_bwd_nhwc)(const T* grad_out, T* grad_in, const Pool2dParams& p,
                       int64_t row_begin, int64_t row_end);

  // Adaptive average pooling (kernel/stride/pad fields unused; out_h/out_w are the target).
  void (*adaptive_avg_fwd_nchw)(const T* in, T* out, const Pool2dParams& p,
                                int64_t plane_begin, int64_t plane_end);
  void (*adaptive_avg_fwd_nhwc)(const T* in, T* out, const Pool2dParams& p,
                                int64_t image_begin, int64_t image_end);
  void (*adaptive_avg_bwd_nchw)(const T* grad_out, T* grad_in, const Pool2dParams& p,
                                int64_t plane_begin, int64_t plane_end);
  void (*adaptive_avg_bwd_nhwc)(const T* grad_out, T* grad_in, const Pool2dParams& p,
                                int64_t image_begin, int64_t image_end);
};

const PoolKernels<float>* pool_kernels_avx512_float();
const PoolKernels<double>* pool_kernels_avx512_double();
const PoolKernels<float>* pool_kernels_avx2_float();
const PoolKernels<double>* pool_kernels_avx2_double();
const PoolKernels<float>* pool_kernels_default_float();
const PoolKernels<double>* pool_kernels_default_double();

}  // namespace pool
}  // namespace fastconv
