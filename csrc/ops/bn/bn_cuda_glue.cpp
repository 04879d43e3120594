// ATen glue for the CUDA BatchNorm + residual + ReLU kernels: the CPU glue's checks and
// messages (bn_checks.h), contiguous channels-first inputs for the kernels, outputs with the
// CPU op's shapes and layouts (channels_last activations stay channels_last).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "../../common/cuda_glue.h"
#include "../../common/dispatch.h"
#include "bn_checks.h"
#include "bn_cuda.h"

namespace fastconv {
namespace bn {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_cuda(const at::Tensor& input,
                                                                   const std::optional<at::Tensor>& weight_opt,
                                                                   const std::optional<at::Tensor>& bias_opt,
                                                                   const std::optional<at::Tensor>& residual_opt,
                                                                   bool relu, double eps) {
  const char* op = "batch_norm_act";
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& bias = value_or_undefined(bias_opt);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  const BnParams p = check_batch_norm_act(op, input, weight, bias, residual, eps);
  if (is_reduced_precision(input)) {
    auto [y, mean, var] = batch_norm_act_cuda(input.to(at::kFloat), opt_float(weight), opt_float(bias),
                                              opt_float(residual), relu, eps);
    const auto t = input.scalar_type();
    return {y.to(t), mean.to(t), var.to(t)};
  }
  const at::MemoryFormat fmt = format_of(input);
  at::Tensor mean = at::empty({p.channels}, input.options());
  at::Tensor var = at::empty({p.channels}, input.options());
  if (input.numel() == 0) {
    return {at::empty(input.sizes(), input.options().memory_format(fmt)), mean.fill_(NAN), var.fill_(NAN)};
  }
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor r = contiguous_or_undefined(residual);
  const at::Tensor w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty(input.sizes(), input.options());
  at::Tensor scratch = at::empty({2 * p.channels}, input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::batch_norm_act<scalar_t>(
        x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w), ptr_or_null<scalar_t>(b), ptr_or_null<scalar_t>(r),
        y.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>(),
        scratch.mutable_data_ptr<scalar_t>(), relu, eps, p, stream));
  });
  return {in_memory_format(y, fmt), mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight_opt,
    const at::Tensor& mean, const at::Tensor& var, const std::optional<at::Tensor>& output_opt, double eps,
    bool residual_grad) {
  const char* op = "batch_norm_act_backward";
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  const BnParams p = check_batch_norm_act_backward(op, grad_output, input, weight, mean, var, output, eps);
  if (is_reduced_precision(input)) {
    auto [gi, gw, gb, gr] =
        batch_norm_act_backward_cuda(grad_output.to(at::kFloat), input.to(at::kFloat), opt_float(weight),
                                     mean.to(at::kFloat), var.to(at::kFloat), opt_float(output), eps, residual_grad);
    const auto t = input.scalar_type();
    return {gi.to(t), gw.to(t), gb.to(t), gr.to(t)};
  }
  const at::MemoryFormat fmt = format_of(input);
  const bool write_gr = residual_grad && output.defined();
  at::Tensor gw = at::empty({p.channels}, input.options());
  at::Tensor gb = at::empty({p.channels}, input.options());
  if (input.numel() == 0) {
    return {at::empty(input.sizes(), input.options().memory_format(fmt)), gw.zero_(), gb.zero_(),
            write_gr ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options())};
  }
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor y = contiguous_or_undefined(output);
  const at::Tensor w = contiguous_or_undefined(weight), mc = mean.contiguous(), vc = var.contiguous();
  at::Tensor gi = at::empty(input.sizes(), input.options());
  at::Tensor gr = write_gr ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  at::Tensor scratch = at::empty({3 * p.channels}, input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_backward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::batch_norm_act_backward<scalar_t>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w),
        mc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(y),
        gi.mutable_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(),
        write_gr ? gr.mutable_data_ptr<scalar_t>() : nullptr, scratch.mutable_data_ptr<scalar_t>(), eps, p, stream));
  });
  return {in_memory_format(gi, fmt), gw, gb, write_gr ? in_memory_format(gr, fmt) : gr};
}

}  // namespace
}  // namespace bn
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  m.impl("batch_norm_act", &fastconv::bn::batch_norm_act_cuda);
  m.impl("batch_norm_act_backward", &fastconv::bn::batch_norm_act_backward_cuda);
}
