// Squeeze-and-Excitation channel scaling, shared by the CPU and CUDA code.
//
//   y[n, c, i] = act(x[n, c, i] * s[n, c] + r[n, c, i])      act = ReLU or identity, r optional
//
// Backward, with m = 1 where the ReLU passed (y > 0 or NaN, as torch's threshold_backward) and
// g the gradient of y:
//   grad_s[n, c]    = sum_i g * m * x                 (the excitation's gradient)
//   grad_r          = g * m
//   grad_x          = g * m * s[n, c] + t[n, c]       (t: the squeeze's gradient, dp / (H W))
// grad_s must be complete before t is known, so the backward is two passes over g.
#pragma once

#include <cstdint>

#include "../../common/macros.h"

namespace fastconv {
namespace se {

struct SeParams {
  int64_t batch = 0;     // N
  int64_t channels = 0;  // C
  int64_t inner = 0;     // H * W
};

// Where the ReLU let the gradient through: its output was positive (or NaN, which torch's
// threshold_backward also passes).
template <class T>
FASTCONV_HOST_DEVICE_INLINE bool relu_passes(T y) {
  return !(y <= T(0));
}

}  // namespace se
}  // namespace fastconv
