// ATen glue for the CUDA conv2d kernels (conv_cuda.cu): the CPU glue's checks, NCHW-contiguous
// buffers for the kernels, the caller's memory format on the way out, float16 / bfloat16
// through float32 as on the CPU, and the registrations. Also compiled for the SIMT emulator
// (conv_simt.cpp), where the "CUDA" tensors are CPU tensors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "../../common/cuda_glue.h"
#include "../../common/dispatch.h"
#include "conv_checks.h"
#include "conv_cuda.h"

namespace fastconv {
namespace conv {
namespace {

at::Tensor conv2d_fused_cuda(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& scale,
                             const std::optional<at::Tensor>& shift, const std::optional<at::Tensor>& residual,
                             bool relu, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups) {
  const char* op = "conv2d";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_epilogue(op, p, input, bias, scale, shift, residual);
  if (is_reduced_precision(input)) {
    auto f = [](const std::optional<at::Tensor>& t) {
      return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
    };
    return conv2d_fused_cuda(input.to(at::kFloat), weight.to(at::kFloat), f(bias), f(scale), f(shift),
                             f(residual), relu, stride, padding, dilation, groups)
        .to(input.scalar_type());
  }
  FASTCONV_DEVICE_GUARD(input);
  const bool cl = wants_channels_last(input, weight);
  at::Tensor y = at::empty({p.N, p.OC, p.OH, p.OW}, input.options());
  if (y.numel() > 0) {
    const at::Tensor x = input.contiguous(), w = weight.contiguous();
    at::Tensor shift_eff;  // bias * scale + shift, either part optional
    if (bias.has_value()) shift_eff = scale.has_value() ? bias->mul(*scale) : *bias;
    if (shift.has_value()) shift_eff = shift_eff.defined() ? shift_eff.add(*shift) : *shift;
    if (shift_eff.defined()) shift_eff = shift_eff.contiguous();
    const at::Tensor scale_c = scale.has_value() ? scale->contiguous() : at::Tensor();
    const at::Tensor res = residual.has_value() ? residual->contiguous() : at::Tensor();
    const cudaStream_t stream = FASTCONV_CUDA_STREAM();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_cuda", [&] {
      FASTCONV_CUDA_CHECK(cuda::forward<scalar_t>(p, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                                  ptr_or_null<scalar_t>(scale_c), ptr_or_null<scalar_t>(shift_eff),
                                                  ptr_or_null<scalar_t>(res), relu, y.mutable_data_ptr<scalar_t>(),
                                                  stream));
    });
  }
  return cl ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_cuda(input, weight, bias, std::nullopt, std::nullopt, std::nullopt, false, stride, padding,
                           dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask) {
  const char* op = "conv2d_backward";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_grad_output(op, p, grad_output, input);
  if (is_reduced_precision(input)) {
    auto r = conv2d_backward_cuda(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat), stride,
                                  padding, dilation, groups, mask);
    const auto t = input.scalar_type();
    return {std::get<0>(r).to(t), std::get<1>(r).to(t), std::get<2>(r).to(t)};
  }
  FASTCONV_DEVICE_GUARD(input);
  const bool cl = wants_channels_last(input, weight);
  at::Tensor gx = mask[0] ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  at::Tensor gw = mask[1] ? at::empty(weight.sizes(), weight.options()) : at::empty({0}, input.options());
  at::Tensor gb = mask[2] ? at::empty({p.OC}, input.options()) : at::empty({0}, input.options());
  if (p.N == 0 || p.OC == 0 || input.numel() == 0) {
    gx.zero_();
    gw.zero_();
    gb.zero_();
  } else {
    const at::Tensor x = input.contiguous(), w = weight.contiguous(), g = grad_output.contiguous();
    const cudaStream_t stream = FASTCONV_CUDA_STREAM();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_backward_cuda", [&] {
      if (mask[0])
        FASTCONV_CUDA_CHECK(cuda::input_grad<scalar_t>(p, g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                                       gx.mutable_data_ptr<scalar_t>(), stream));
      if (mask[1]) {
        const int64_t ws = cuda::weight_grad_workspace(p);
        at::Tensor work = at::empty({ws}, input.options());
        FASTCONV_CUDA_CHECK(cuda::weight_grad<scalar_t>(p, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                                        gw.mutable_data_ptr<scalar_t>(),
                                                        ws > 0 ? work.mutable_data_ptr<scalar_t>() : nullptr, stream));
      }
      if (mask[2])
        FASTCONV_CUDA_CHECK(cuda::bias_grad<scalar_t>(p, g.const_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(),
                                                      stream));
    });
  }
  if (mask[0] && cl) gx = gx.contiguous(at::MemoryFormat::ChannelsLast);
  if (mask[1]) gw = gw.contiguous(weight.suggest_memory_format());
  return {gx, gw, gb};
}

}  // namespace
}  // namespace conv
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  m.impl("conv2d", &fastconv::conv::conv2d_cuda);
  m.impl("conv2d_fused", &fastconv::conv::conv2d_fused_cuda);
  m.impl("conv2d_backward", &fastconv::conv::conv2d_backward_cuda);
}
