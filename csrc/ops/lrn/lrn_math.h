// Local response normalisation across channels, shared by the CPU and CUDA code.
//
//   d_c = k + alpha / size * sum_{j in window(c)} x_j^2,   y_c = x_c / d_c^beta
//   window(c) = [c - size / 2, c + (size - 1) / 2] clipped to [0, C)   (torch's zero padding)
//
// Backward (g = grad of y):
//   dx_i = g_i / d_i^beta - (2 alpha beta / size) x_i sum_{c : i in window(c)} g_c y_c / d_c
// and i is in window(c) exactly when c is in [i - (size - 1) / 2, i + size / 2].
#pragma once

#include <cstdint>

#include "../../common/macros.h"

namespace fastconv {
namespace lrn {

struct LrnParams {
  int64_t batch = 0;     // N
  int64_t channels = 0;  // C
  int64_t inner = 0;     // product of the dimensions after C (H*W, L, D*H*W, ...)
  int64_t size = 1;
  double alpha = 1e-4, beta = 0.75, k = 1.0;
};

// Channels summed into channel c's denominator: [first, last].
FASTCONV_HOST_DEVICE_INLINE int64_t window_first(int64_t c, int64_t size) {
  const int64_t f = c - size / 2;
  return f < 0 ? 0 : f;
}
FASTCONV_HOST_DEVICE_INLINE int64_t window_last(int64_t c, int64_t size, int64_t channels) {
  const int64_t l = c + (size - 1) / 2;
  return l > channels - 1 ? channels - 1 : l;
}

// Channels whose window holds channel i (the backward's gather range): [first, last].
FASTCONV_HOST_DEVICE_INLINE int64_t covering_first(int64_t i, int64_t size) {
  const int64_t f = i - (size - 1) / 2;
  return f < 0 ? 0 : f;
}
FASTCONV_HOST_DEVICE_INLINE int64_t covering_last(int64_t i, int64_t size, int64_t channels) {
  const int64_t l = i + size / 2;
  return l > channels - 1 ? channels - 1 : l;
}

}  // namespace lrn
}  // namespace fastconv
