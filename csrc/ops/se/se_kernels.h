// Raw-pointer Squeeze-and-Excitation kernels, one table per ISA (se_kernels_{avx512,avx2,
// default}.cpp); no torch headers. "cf" (channels-first) is x[n][c][i] with i over H * W, so
// a unit of work is a plane p = n * C + c; "cl" (channels-last) is x[n][i][c], a unit is a
// pixel row q = n * H * W + i. Optional inputs are nullptr when absent: r (residual), y (the
// forward output, whose sign is the ReLU mask), grad_r, t (shift added to grad_x).
#pragma once

#include <cstdint>

#include "se_math.h"

namespace fastconv {
namespace se {

template <class T>
struct SeKernels {
  // y = act(x * s + r) for planes / pixel rows [begin, end); stream: non-temporal stores.
  void (*scale_cf)(const T* x, const T* s, const T* r, T* y, bool relu, bool stream, const SeParams& p,
                   int64_t begin, int64_t end);
  void (*scale_cl)(const T* x, const T* s, const T* r, T* y, bool relu, bool stream, const SeParams& p,
                   int64_t begin, int64_t end);
  // grad_s = sum_i g * m * x and (if grad_r) grad_r = g * m. cf: planes [begin, end); cl: work
  // items (n, channel chunk of `chunk` channels) [begin, end).
  void (*grad_scale_cf)(const T* g, const T* x, const T* y, T* grad_s, T* grad_r, const SeParams& p,
                        int64_t begin, int64_t end);
  void (*grad_scale_cl)(const T* g, const T* x, const T* y, T* grad_s, T* grad_r, const SeParams& p,
                        int64_t chunk, int64_t begin, int64_t end);
  // grad_x = g * m * s + t for planes / pixel rows [begin, end); stream as in scale.
  void (*grad_input_cf)(const T* g, const T* y, const T* s, const T* t, T* grad_x, bool stream,
                        const SeParams& p, int64_t begin, int64_t end);
  void (*grad_input_cl)(const T* g, const T* y, const T* s, const T* t, T* grad_x, bool stream,
                        const SeParams& p, int64_t begin, int64_t end);
  // The whole block, image by image. squeeze: pooled = mean over H, W (cf: planes; cl: items
  // (n, chunk of `chunk` channels)). excite, images [begin, end): hidden = relu(w1 pooled +
  // b1) (Cr), scale = sigmoid(w2 hidden + b2) (C); b1 / b2 may be nullptr.
  void (*squeeze_cf)(const T* x, T* pooled, const SeParams& p, int64_t begin, int64_t end);
  void (*squeeze_cl)(const T* x, T* pooled, const SeParams& p, int64_t chunk, int64_t begin, int64_t end);
  void (*excite)(const T* pooled, const T* w1, const T* b1, const T* w2, const T* b2, T* hidden, T* scale,
                 const SeParams& p, int64_t squeezed, int64_t begin, int64_t end);
  // From grad_scale (N, C): dz2 = grad_scale * s (1 - s) (C), dz1 = (w2^T dz2) * (hidden > 0)
  // (Cr), shift = (w1^T dz1) / (H W) (C), the squeeze's share of grad_input.
  void (*excite_backward)(const T* grad_s, const T* w1, const T* w2, const T* hidden, const T* scale, T* dz1,
                          T* dz2, T* shift, const SeParams& p, int64_t squeezed, int64_t begin, int64_t end);
};

const SeKernels<float>* se_kernels_avx512_float();
const SeKernels<double>* se_kernels_avx512_double();
const SeKernels<float>* se_kernels_avx2_float();
const SeKernels<double>* se_kernels_avx2_double();
const SeKernels<float>* se_kernels_default_float();
const SeKernels<double>* se_kernels_default_double();

}  // namespace se
}  // namespace fastconv
