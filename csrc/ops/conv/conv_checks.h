// conv2d argument checks and the output-layout rule, shared by the CPU and CUDA glue so both
// backends reject the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "conv_math.h"

namespace fastconv {
namespace conv {

inline void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf, op,
                    ": ", name, " must be float32, float64, bfloat16 or float16, got ", s);
}

inline void check_same(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": ", name, " must be on input's device (",
                    input.device(), "), got ", t.device());
}

inline ConvParams check_conv(const char* op, const at::Tensor& input, const at::Tensor& weight,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                      int64_t groups) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(),
                    "-D (shape ", input.sizes(), ")");
  TORCH_CHECK_VALUE(weight.dim() == 4, op, ": weight must be 4-D (out_channels, in_channels / groups, "
                    "kH, kW), got ", weight.dim(), "-D (shape ", weight.sizes(), ")");
  check_float_dtype(op, "input", input);
  check_same(op, "weight", weight, input);
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 4 && dilation.size() == 2, op,
                    ": expected stride (2), padding (top, bottom, left, right) and dilation (2)");
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be >= 1, got ", dilation);
  for (auto v : padding) TORCH_CHECK_VALUE(v >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be >= 1, got ", groups);
  ConvParams p;
  p.N = input.size(0);
  p.C = input.size(1);
  p.H = input.size(2);
  p.W = input.size(3);
  p.OC = weight.size(0);
  p.KH = weight.size(2);
  p.KW = weight.size(3);
  p.sh = stride[0];
  p.sw = stride[1];
  p.dh = dilation[0];
  p.dw = dilation[1];
  p.pt = padding[0];
  p.pb = padding[1];
  p.pl = padding[2];
  p.pr = padding[3];
  p.groups = groups;
  TORCH_CHECK_VALUE(p.C % groups == 0, op, ": groups (", groups, ") must divide the input channels (", p.C, ")");
  TORCH_CHECK_VALUE(p.OC % groups == 0, op, ": groups (", groups, ") must divide the output channels (",
                    p.OC, ", weight.size(0))");
  TORCH_CHECK_VALUE(weight.size(1) == p.C / groups, op, ": weight.size(1) must be in_channels / groups = ",
                    p.C, " / ", groups, " = ", p.C / groups, ", got weight of shape ", weight.sizes());
  TORCH_CHECK_VALUE(p.KH >= 1 && p.KW >= 1, op, ": weight's kernel size must be >= 1, got ", weight.sizes());
  p.OH = conv_output_size(p.H, p.pt, p.pb, p.KH, p.sh, p.dh);
  p.OW = conv_output_size(p.W, p.pl, p.pr, p.KW, p.sw, p.dw);
  TORCH_CHECK_VALUE(p.OH >= 1 && p.OW >= 1, op, ": the (dilated) kernel ", (p.KH - 1) * p.dh + 1, "x",
                    (p.KW - 1) * p.dw + 1, " is larger than the padded input ", p.H + p.pt + p.pb, "x",
                    p.W + p.pl + p.pr);
  return p;
}

// conv2d_fused's epilogue operands: per-output-channel bias, scale and shift of shape (OC,), and
// a residual of the output's shape, each optional and each with input's dtype and device.
inline void check_epilogue(const char* op, const ConvParams& p, const at::Tensor& input,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& scale,
                           const std::optional<at::Tensor>& shift, const std::optional<at::Tensor>& residual) {
  auto check_vec = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (!t.has_value()) return;
    check_same(op, name, *t, input);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == p.OC, op, ": ", name,
                      " must have shape (out_channels,) = (", p.OC, ",), got ", t->sizes());
  };
  check_vec(bias, "bias");
  check_vec(scale, "scale");
  check_vec(shift, "shift");
  if (residual.has_value()) {
    check_same(op, "residual", *residual, input);
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef({p.N, p.OC, p.OH, p.OW}), op,
                      ": residual must have the output's shape (", p.N, ", ", p.OC, ", ", p.OH, ", ", p.OW,
                      "), got ", residual->sizes());
  }
}

// conv2d_backward's grad_output: input's dtype and device, the output's shape.
inline void check_grad_output(const char* op, const ConvParams& p, const at::Tensor& grad_output,
                              const at::Tensor& input) {
  check_same(op, "grad_output", grad_output, input);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef({p.N, p.OC, p.OH, p.OW}), op,
                    ": grad_output must have the output's shape (", p.N, ", ", p.OC, ", ", p.OH, ", ", p.OW,
                    "), got ", grad_output.sizes());
}

inline bool wants_channels_last(const at::Tensor& input, const at::Tensor& weight) {
  // torch's rule for CPU convolutions: channels_last out if input or weight is.
  return input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
         weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

}  // namespace conv
}  // namespace fastconv
