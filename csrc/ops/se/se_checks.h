// Squeeze-and-Excitation argument checks and layout helpers, shared by the CPU and CUDA glue
// (se_cpu.cpp, se_cuda_glue.cpp) so both reject the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <optional>

#include "../../common/dispatch.h"
#include "se_math.h"

namespace fastconv {
namespace se {

inline void check_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf, op, ": ", name,
                    " must be float32, float64, bfloat16 or float16, got ", s);
}

// input (N, C, H, W); per-channel tensors (N, C).
inline SeParams check_se(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D (shape ",
                    input.sizes(), ")");
  check_dtype(op, "input", input);
  SeParams p;
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.inner = input.size(2) * input.size(3);
  return p;
}

inline void check_per_channel(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == input.size(0) && t.size(1) == input.size(1), op, ": ", name,
                    " must have shape (N, C) = (", input.size(0), ", ", input.size(1), "), got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": ", name, " must be on the device of input (",
                    input.device(), "), got ", t.device());
}

// ---- the whole SE block

inline void check_block(const char* op, const at::Tensor& input, const at::Tensor& w1, const at::Tensor& w2) {
  const int64_t c = input.size(1);
  TORCH_CHECK_VALUE(input.size(2) * input.size(3) > 0, op, ": input must have H * W > 0 to be squeezed, got shape ",
                    input.sizes());
  TORCH_CHECK_VALUE(w1.dim() == 2 && w1.size(1) == c && w1.size(0) >= 1, op,
                    ": fc1_weight must have shape (C/r, C) with C = ", c, ", got ", w1.sizes());
  TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(0) == c && w2.size(1) == w1.size(0), op,
                    ": fc2_weight must have shape (C, C/r) = (", c, ", ", w1.size(0), "), got ", w2.sizes());
  for (const auto* t : {&w1, &w2}) {
    TORCH_CHECK_VALUE(t->scalar_type() == input.scalar_type() && t->device() == input.device(), op,
                      ": the excitation weights must have input's dtype and device (", input.scalar_type(), ", ",
                      input.device(), "), got (", t->scalar_type(), ", ", t->device(), ")");
  }
}

inline void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t n, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must have shape (", n, ",), got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type() && t.device() == input.device(), op, ": ", name,
                    " must have input's dtype and device, got (", t.scalar_type(), ", ", t.device(), ")");
}

// ---- each op's checks, in the order the ops make them (optional tensors passed undefined
// when absent, see value_or_undefined)

inline SeParams check_channel_scale(const char* op, const at::Tensor& input, const at::Tensor& scale,
                                    const at::Tensor& residual) {
  const SeParams p = check_se(op, input);
  check_per_channel(op, "scale", scale, input);
  if (residual.defined()) check_like(op, "residual", residual, input);
  return p;
}

inline SeParams check_channel_scale_grad_scale(const char* op, const at::Tensor& grad_output,
                                               const at::Tensor& input, const at::Tensor& output) {
  const SeParams p = check_se(op, input);
  check_like(op, "grad_output", grad_output, input);
  if (output.defined()) check_like(op, "output", output, input);
  return p;
}

inline SeParams check_channel_scale_grad_input(const char* op, const at::Tensor& grad_output,
                                               const at::Tensor& scale, const at::Tensor& shift,
                                               const at::Tensor& output) {
  const SeParams p = check_se(op, grad_output);
  check_per_channel(op, "scale", scale, grad_output);
  if (shift.defined()) check_per_channel(op, "shift", shift, grad_output);
  if (output.defined()) check_like(op, "output", output, grad_output);
  return p;
}

// The block's C/r is w1.size(0).
inline SeParams check_squeeze_excitation(const char* op, const at::Tensor& input, const at::Tensor& w1,
                                         const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                         const at::Tensor& residual) {
  const SeParams p = check_se(op, input);
  check_block(op, input, w1, w2);
  const int64_t cr = w1.size(0);
  if (b1.defined()) check_vector(op, "fc1_bias", b1, cr, input);
  if (b2.defined()) check_vector(op, "fc2_bias", b2, p.channels, input);
  if (residual.defined()) check_like(op, "residual", residual, input);
  return p;
}

inline SeParams check_squeeze_excitation_backward(const char* op, const at::Tensor& grad_output,
                                                  const at::Tensor& input, const at::Tensor& w1,
                                                  const at::Tensor& w2, const at::Tensor& hidden,
                                                  const at::Tensor& scale, const at::Tensor& output) {
  const SeParams p = check_se(op, input);
  check_block(op, input, w1, w2);
  check_like(op, "grad_output", grad_output, input);
  const int64_t cr = w1.size(0);
  check_per_channel(op, "scale", scale, input);
  TORCH_CHECK_VALUE(hidden.dim() == 2 && hidden.size(0) == p.batch && hidden.size(1) == cr, op,
                    ": hidden must have shape (N, C/r) = (", p.batch, ", ", cr, "), got ", hidden.sizes());
  TORCH_CHECK_VALUE(hidden.scalar_type() == input.scalar_type(), op, ": hidden must have the dtype of input (",
                    input.scalar_type(), "), got ", hidden.scalar_type());
  TORCH_CHECK_VALUE(hidden.device() == input.device(), op, ": hidden must be on the device of input (",
                    input.device(), "), got ", hidden.device());
  if (output.defined()) check_like(op, "output", output, input);
  return p;
}

}  // namespace se
}  // namespace fastconv
