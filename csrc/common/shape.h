// Output-size arithmetic for sliding-window ops (pooling now, conv next), written once for
// the CPU and CUDA code. Mirrors torch's rules exactly, including ceil_mode's "the last
// window must start inside the input or left padding" clause.
#pragma once

#include <cstdint>

#include "macros.h"

namespace fastconv {

// floor division that rounds toward -inf (C++ `/` truncates toward zero).
FASTCONV_HOST_DEVICE_INLINE int64_t div_floor(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

FASTCONV_HOST_DEVICE_INLINE int64_t pooling_output_size(int64_t in, int64_t kernel, int64_t pad,
                                                        int64_t stride, int64_t dilation,
                                                        bool ceil_mode) {
  int64_t out = div_floor(in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0),
                          stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Adaptive pooling: output cell o of O covers input [start, end) of I.
FASTCONV_HOST_DEVICE_INLINE int64_t adaptive_start(int64_t o, int64_t out, int64_t in) {
  return (o * in) / out;
}
FASTCONV_HOST_DEVICE_INLINE int64_t adaptive_end(int64_t o, int64_t out, int64_t in) {
  return ((o + 1) * in + out - 1) / out;
}

}  // namespace fastconv
