// Training-mode BatchNorm followed by the residual add and ReLU of a ResNet block, shared by
// the CPU and CUDA code. Per channel c, over the M = N * H * W values of the batch:
//
//   mean = E[x],  var = E[(x - mean)^2] (biased),  invstd = 1 / sqrt(var + eps)
//   y    = act((x - mean) * a + bias + r)     a = weight * invstd,  act = ReLU or not
//
// Backward, with g = grad_y * m (m = 1 where the ReLU passed: y > 0 or NaN, as torch's
// threshold_backward; 1 everywhere without the ReLU):
//   s1 = sum g,  s2 = sum g (x - mean)
//   grad_bias = s1,  grad_weight = s2 * invstd,  grad_residual = g
//   grad_x    = weight * invstd * (g - s1 / M - (x - mean) * invstd^2 * s2 / M)
//             = g * k1 + (x - mean) * k2 + k3     k1 = weight * invstd,  k3 = -k1 * s1 / M,
//                                                 k2 = -k1 * invstd^2 * s2 / M
// (x - mean is formed first, as torch does: folding mean into the constant, x * k2 - mean * k2,
// cancels where the mean is large against the spread.)
// so each direction is one reduction pass and one elementwise pass over the map (torch's
// BatchNorm, add and ReLU take five forward and seven backward passes).
//
// The statistics are summed about a shift K (the channel's first value), in the tensor's type
// over runs of at most kSumRun values and in double across runs: var = E[(x-K)^2] - E[x-K]^2
// loses nothing to cancellation when K is near the mean, and one pass reads x once.
#pragma once

#include <cmath>
#include <cstdint>

#include "../../common/macros.h"

namespace fastconv {
namespace bn {

struct BnParams {
  int64_t batch = 0;     // N
  int64_t channels = 0;  // C
  int64_t inner = 0;     // H * W
  // CPU: write the elementwise passes' outputs with streaming stores (set for tensors far
  // larger than the caches, where an ordinary store first reads the line it fills).
  bool stream = false;
  FASTCONV_HOST_DEVICE int64_t count() const { return batch * inner; }  // M, the values per channel
};

// Values summed in the tensor's type before a run's sums go into double.
constexpr int64_t kSumRun = 512;

// Pixel rows per channels-last reduction item: its partial sums (2 x C doubles) are combined
// in item order, so the result does not depend on the thread count.
constexpr int64_t kRowsPerItem = 128;

// The ReLU let the gradient through: its output was positive, or NaN.
template <class T>
FASTCONV_HOST_DEVICE_INLINE bool relu_passes(T y) {
  return !(y <= T(0));
}

// mean and biased var of a channel from its sums about the shift k.
FASTCONV_HOST_DEVICE_INLINE void channel_stats(double k, double s1, double s2, int64_t m, double& mean,
                                               double& var) {
  const double d = s1 / static_cast<double>(m);
  mean = k + d;
  var = s2 / static_cast<double>(m) - d * d;
  if (!(var > 0.0)) var = var != var ? var : 0.0;  // rounding can take it just below 0; NaN stays
}

FASTCONV_HOST_DEVICE_INLINE double inv_std(double var, double eps) { return 1.0 / sqrt(var + eps); }

// The forward's scale a of a channel (w = 1 without the affine parameters).
FASTCONV_HOST_DEVICE_INLINE double forward_scale(double var, double eps, double w) { return w * inv_std(var, eps); }

// The backward's grad_x = g * k1 + (x - mean) * k2 + k3 of a channel from its sums s1 / s2
// over m values, and grad_weight = s2 * invstd.
FASTCONV_HOST_DEVICE_INLINE void backward_coefficients(double var, double eps, double w, double s1, double s2,
                                                       int64_t m, double& k1, double& k2, double& k3,
                                                       double& grad_weight) {
  const double is = inv_std(var, eps), inv_m = 1.0 / static_cast<double>(m);
  k1 = w * is;
  k2 = -k1 * is * is * s2 * inv_m;
  k3 = -k1 * s1 * inv_m;
  grad_weight = s2 * is;
}

}  // namespace bn
}  // namespace fastconv
