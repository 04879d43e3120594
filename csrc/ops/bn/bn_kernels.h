// Raw-pointer training-mode BatchNorm + residual + ReLU kernels, one table per ISA
// (bn_kernels_{avx512,avx2,default}.cpp); no torch headers. "cf" is x[n][c][i] (i over H * W),
// a reduction unit is a channel and an elementwise unit a plane p = n * C + c; "cl" is
// x[n][i][c], a reduction unit is an item of kRowsPerItem pixel rows and an elementwise unit a
// pixel row q = n * H * W + i. Per-channel coefficients are arrays of C values; optional
// tensors are nullptr when absent: r (residual), y (the forward output, whose sign is the ReLU
// mask), gr (grad_residual).
#pragma once

#include <cstdint>

#include "bn_math.h"

namespace fastconv {
namespace bn {

template <class T>
struct BnKernels {
  // Sums about the shift k[c]: s1 = sum (x - k), s2 = sum (x - k)^2. cf: channels
  // [begin, end), into s1[c] / s2[c]; cl: items [begin, end), item t into s1[t * C + c].
  void (*stats_cf)(const T* x, const T* k, double* s1, double* s2, const BnParams& p, int64_t begin, int64_t end);
  void (*stats_cl)(const T* x, const T* k, double* s1, double* s2, const BnParams& p, int64_t begin, int64_t end);
  // y = act((x - mean[c]) * a[c] + b[c] + r) for planes (cf) / pixel rows (cl) [begin, end).
  void (*apply_cf)(const T* x, const T* mean, const T* a, const T* b, const T* r, T* y, bool relu,
                   const BnParams& p, int64_t begin, int64_t end);
  void (*apply_cl)(const T* x, const T* mean, const T* a, const T* b, const T* r, T* y, bool relu,
                   const BnParams& p, int64_t begin, int64_t end);
  // s1 = sum g, s2 = sum g (x - mean[c]) with g = grad * m, and gr = g when gr is given; units
  // as in stats.
  void (*grad_sums_cf)(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                       const BnParams& p, int64_t begin, int64_t end);
  void (*grad_sums_cl)(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                       const BnParams& p, int64_t begin, int64_t end);
  // grad_x = g * k1[c] + (x - mean[c]) * k2[c] + k3[c] for planes (cf) / pixel rows (cl)
  // [begin, end).
  void (*grad_input_cf)(const T* grad, const T* y, const T* x, const T* mean, const T* k1, const T* k2,
                        const T* k3, T* gx, const BnParams& p, int64_t begin, int64_t end);
  void (*grad_input_cl)(const T* grad, const T* y, const T* x, const T* mean, const T* k1, const T* k2,
                        const T* k3, T* gx, const BnParams& p, int64_t begin, int64_t end);
};

const BnKernels<float>* bn_kernels_avx512_float();
const BnKernels<double>* bn_kernels_avx512_double();
const BnKernels<float>* bn_kernels_avx2_float();
const BnKernels<double>* bn_kernels_avx2_double();
const BnKernels<float>* bn_kernels_default_float();
const BnKernels<double>* bn_kernels_default_double();

}  // namespace bn
}  // namespace fastconv
