// Argument validation for the pooling ops, host side (TORCH_CHECK). Every message names the
// argument and the rule. The rules are torch's, so anything torch.nn.functional rejects is
// rejected here too, and nothing it accepts is. Shared by the CPU and CUDA glue (pool_cpu.cpp,
// pool_cuda_glue.cpp), with the few glue pieces both need (the max-pool op wrappers below).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "pool_math.h"

namespace fastconv {
namespace pool {

inline void check_pair(const char* op, const char* name, at::IntArrayRef v) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must have 2 elements (height, width), got ",
                    v.size());
}

inline void check_pool_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 3 || input.dim() == 4, op,
                    ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got a tensor of shape ",
                    input.sizes());
  for (int64_t d = input.dim() - 3; d < input.dim(); ++d) {
    TORCH_CHECK_VALUE(input.size(d) > 0, op, ": input must have non-zero C, H and W (only N may be 0), got shape ",
                      input.sizes());
  }
  const auto t = input.scalar_type();
  TORCH_CHECK_VALUE(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
                    ": input must be float32, float64, bfloat16 or float16, got ", t);
}

inline Pool2dParams base_params(const at::Tensor& input) {
  Pool2dParams p;
  const int64_t d = input.dim();
  p.batch = d == 4 ? input.size(0) : 1;
  p.channels = input.size(d - 3);
  p.in_h = input.size(d - 2);
  p.in_w = input.size(d - 1);
  return p;
}

inline void check_output_size(const char* op, const Pool2dParams& p) {
  TORCH_CHECK_VALUE(p.out_h >= 1 && p.out_w >= 1, op, ": output size is too small: input ",
                    p.in_h, "x", p.in_w, " with this kernel_size, stride, padding and dilation gives ",
                    p.out_h, "x", p.out_w);
}

inline void check_window(const char* op, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_pair(op, "kernel_size", kernel_size);
  check_pair(op, "stride", stride);
  check_pair(op, "padding", padding);
  check_pair(op, "dilation", dilation);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK_VALUE(kernel_size[i] > 0, op, ": kernel_size must be positive, got ", kernel_size);
    TORCH_CHECK_VALUE(stride[i] > 0, op, ": stride must be positive, got ", stride);
    TORCH_CHECK_VALUE(dilation[i] > 0, op, ": dilation must be positive, got ", dilation);
    TORCH_CHECK_VALUE(padding[i] >= 0, op, ": padding must be non-negative, got ", padding);
    // torch's rule counts the undilated kernel, so dilation does not allow more padding.
    TORCH_CHECK_VALUE(padding[i] <= kernel_size[i] / 2, op,
                      ": padding must be at most half of kernel_size, got padding=", padding,
                      ", kernel_size=", kernel_size);
  }
}

inline Pool2dParams check_max_pool2d(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, bool ceil_mode) {
  check_window(op, kernel_size, stride, padding, dilation);
  check_pool_input(op, input);
  Pool2dParams p = base_params(input);
  p.kernel_h = kernel_size[0]; p.kernel_w = kernel_size[1];
  p.stride_h = stride[0]; p.stride_w = stride[1];
  p.pad_h = padding[0]; p.pad_w = padding[1];
  p.dilation_h = dilation[0]; p.dilation_w = dilation[1];
  p.out_h = pooling_output_size(p.in_h, p.kernel_h, p.pad_h, p.stride_h, p.dilation_h, ceil_mode);
  p.out_w = pooling_output_size(p.in_w, p.kernel_w, p.pad_w, p.stride_w, p.dilation_w, ceil_mode);
  check_output_size(op, p);
  return p;
}

inline Pool2dParams check_avg_pool2d(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                                     bool count_include_pad, std::optional<int64_t> divisor_override) {
  const int64_t ones[2] = {1, 1};
  Pool2dParams p = check_max_pool2d(op, input, kernel_size, stride, padding, ones, ceil_mode);
  TORCH_CHECK_VALUE(!divisor_override.has_value() || *divisor_override != 0, op,
                    ": divisor_override must be non-zero (or None)");
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor_override.value_or(0);
  return p;
}

inline Pool2dParams check_adaptive_avg_pool2d(const char* op, const at::Tensor& input,
                                              at::IntArrayRef output_size) {
  check_pair(op, "output_size", output_size);
  TORCH_CHECK_VALUE(output_size[0] >= 0 && output_size[1] >= 0, op,
                    ": output_size must be non-negative, got ", output_size);
  check_pool_input(op, input);
  Pool2dParams p = base_params(input);
  p.out_h = output_size[0];
  p.out_w = output_size[1];
  return p;
}

inline void check_same_shape(const char* op, const char* name, const at::Tensor& t,
                             const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), op, ": ", name, " must have shape ", like.sizes(),
                    ", got ", t.sizes());
}

inline void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                              const Pool2dParams& p) {
  std::vector<int64_t> expected(input.sizes().begin(), input.sizes().end());
  expected[expected.size() - 2] = p.out_h;
  expected[expected.size() - 1] = p.out_w;
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected), op,
                    ": grad_output must have shape ", at::IntArrayRef(expected), ", got ",
                    grad_output.sizes());
  TORCH_CHECK_VALUE(grad_output.scalar_type() == input.scalar_type(), op,
                    ": grad_output must have the dtype of input (", input.scalar_type(), "), got ",
                    grad_output.scalar_type());
}

// The checks of the backward ops, before they look at the data: those of the forward, then
// grad_output's (and indices') shape.

inline Pool2dParams check_max_pool2d_backward(const char* op, const at::Tensor& grad_output,
                                              const at::Tensor& input, const at::Tensor& indices,
                                              at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation,
                                              bool ceil_mode) {
  const Pool2dParams p = check_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  check_grad_output(op, grad_output, input, p);
  check_same_shape(op, "indices", indices, grad_output);
  return p;
}

// Checked once the computation dtype is settled (float16 / bfloat16 recurse in float32 first).
inline void check_indices_dtype(const char* op, const at::Tensor& indices) {
  TORCH_CHECK_VALUE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt, op,
                    ": indices must be int64 (or the int32 argmax of max_pool2d_with_argmax), got ",
                    indices.scalar_type());
}

inline Pool2dParams check_avg_pool2d_backward(const char* op, const at::Tensor& grad_output,
                                              const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                                              bool count_include_pad, std::optional<int64_t> divisor_override) {
  const Pool2dParams p = check_avg_pool2d(op, input, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor_override);
  check_grad_output(op, grad_output, input, p);
  return p;
}

// The output size is grad_output's.
inline Pool2dParams check_adaptive_avg_pool2d_backward(const char* op, const at::Tensor& grad_output,
                                                       const at::Tensor& input) {
  TORCH_CHECK(grad_output.dim() == input.dim(), op, ": grad_output must have ", input.dim(),
              " dimensions like input, got ", grad_output.dim());
  const int64_t d = grad_output.dim();
  const Pool2dParams p = check_adaptive_avg_pool2d(
      op, input, {grad_output.size(d - 2), grad_output.size(d - 1)});
  check_grad_output(op, grad_output, input, p);
  return p;
}

// --------------------------------------------------------------------------- glue pieces

// float16 / bfloat16 are computed in float32 and rounded back once.
inline at::Tensor widened(const at::Tensor& t) { return t.to(at::kFloat); }

// Which argmax a max-pool forward keeps: none (inference), torch's int64 (returned to users), or
// the compact int32 of the training path (when a plane has fewer than 2^31 cells).
enum class ArgmaxKind { None, Int64, Compact };

using MaxPool2dImpl = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                                         at::IntArrayRef dilation, bool ceil_mode,
                                                         ArgmaxKind kind, const char* op);

// The three max-pool forward ops over one backend's max_pool2d_impl: each its argmax kind and
// the op name its checks report.
template <MaxPool2dImpl* Impl>
struct MaxPool2dOps {
  static at::Tensor max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    return std::get<0>(Impl(input, kernel_size, stride, padding, dilation, ceil_mode, ArgmaxKind::None,
                            "max_pool2d"));
  }

  static std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices(
      const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    return Impl(input, kernel_size, stride, padding, dilation, ceil_mode, ArgmaxKind::Int64,
                "max_pool2d_with_indices");
  }

  static std::tuple<at::Tensor, at::Tensor> max_pool2d_with_argmax(
      const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    return Impl(input, kernel_size, stride, padding, dilation, ceil_mode, ArgmaxKind::Compact,
                "max_pool2d_with_argmax");
  }
};

}  // namespace pool
}  // namespace fastconv
