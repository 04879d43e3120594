// Raw-pointer LRN kernels, one table per ISA (lrn_kernels_{avx512,avx2,default}.cpp); no
// torch headers. "Channels-first" means x[n][c][s] (NCHW and every 3-D to 5-D contiguous
// input), "channels-last" x[n][s][c] (4-D channels_last). Kernels take a slice of images.
#pragma once

#include <cstdint>

#include "lrn_math.h"

namespace fastconv {
namespace lrn {

template <class T>
struct LrnKernels {
  void (*fwd_channels_first)(const T* x, T* y, const LrnParams& p, int64_t n_begin, int64_t n_end);
  void (*fwd_channels_last)(const T* x, T* y, const LrnParams& p, int64_t n_begin, int64_t n_end);
  void (*bwd_channels_first)(const T* grad_y, const T* x, T* grad_x, const LrnParams& p,
                             int64_t n_begin, int64_t n_end);
  void (*bwd_channels_last)(const T* grad_y, const T* x, T* grad_x, const LrnParams& p,
                            int64_t n_begin, int64_t n_end);
};

const LrnKernels<float>* lrn_kernels_avx512_float();
const LrnKernels<double>* lrn_kernels_avx512_double();
const LrnKernels<float>* lrn_kernels_avx2_float();
const LrnKernels<double>* lrn_kernels_avx2_double();
const LrnKernels<float>* lrn_kernels_default_float();
const LrnKernels<double>* lrn_kernels_default_double();

}  // namespace lrn
}  // namespace fastconv
