// BatchNorm + ReLU argument checks, shared by the CPU and CUDA glue (bn_cpu.cpp,
// bn_cuda_glue.cpp) so both reject the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#include "../../common/dispatch.h"
#include "bn_math.h"

namespace fastconv {
namespace bn {

inline BnParams check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D (shape ",
                    input.sizes(), ")");
  const auto s = input.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf, op,
                    ": input must be float32, float64, bfloat16 or float16, got ", s);
  BnParams p;
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.inner = input.size(2) * input.size(3);
  return p;
}

// A per-channel vector (C,) with input's dtype and device.
inline void check_channel_vector(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == input.size(1), op, ": ", name, " must have shape (C,) = (",
                    input.size(1), ",), got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": ", name, " must be on the device of input (",
                    input.device(), "), got ", t.device());
}

inline void check_eps(const char* op, double eps) {
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, op, ": eps must be finite and >= 0, got ", eps);
}

inline BnParams check_batch_norm_act(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& residual, double eps) {
  const BnParams p = check_input(op, input);
  TORCH_CHECK_VALUE(p.count() != 1, op, ": batch statistics need more than 1 value per channel (N * H * W > 1, "
                    "or an empty batch), got input of shape ", input.sizes());
  if (weight.defined()) check_channel_vector(op, "weight", weight, input);
  if (bias.defined()) check_channel_vector(op, "bias", bias, input);
  if (residual.defined()) check_like(op, "residual", residual, input);
  check_eps(op, eps);
  return p;
}

inline BnParams check_batch_norm_act_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                              const at::Tensor& weight, const at::Tensor& mean,
                                              const at::Tensor& var, const at::Tensor& output, double eps) {
  const BnParams p = check_input(op, input);
  TORCH_CHECK_VALUE(p.count() != 1, op, ": batch statistics need more than 1 value per channel (N * H * W > 1, "
                    "or an empty batch), got input of shape ", input.sizes());
  check_like(op, "grad_output", grad_output, input);
  if (weight.defined()) check_channel_vector(op, "weight", weight, input);
  check_channel_vector(op, "mean", mean, input);
  check_channel_vector(op, "var", var, input);
  if (output.defined()) check_like(op, "output", output, input);
  check_eps(op, eps);
  return p;
}

}  // namespace bn
}  // namespace fastconv
