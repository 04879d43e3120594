// ATen glue for the CUDA Squeeze-and-Excitation kernels: the CPU glue's checks and messages
// (se_checks.h), contiguous channels-first inputs for the kernels, outputs with the CPU op's
// shapes and layouts (channels_last activations stay channels_last; empty (0,) outputs where
// the CPU op returns them).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "../../common/cuda_glue.h"
#include "../../common/dispatch.h"
#include "se_checks.h"
#include "se_cuda.h"

namespace fastconv {
namespace se {
namespace {

// ---- layout and small helpers

template <class T>
T* mutable_ptr_or_null(at::Tensor& t, bool use) {
  return use ? t.mutable_data_ptr<T>() : nullptr;
}

// ---- ops

at::Tensor channel_scale_cuda(const at::Tensor& input, const at::Tensor& scale,
                              const std::optional<at::Tensor>& residual_opt, bool relu) {
  const char* op = "channel_scale";
  const at::Tensor& residual = value_or_undefined(residual_opt);
  const SeParams p = check_channel_scale(op, input, scale, residual);
  if (is_reduced_precision(input)) {
    return channel_scale_cuda(input.to(at::kFloat), scale.to(at::kFloat), opt_float(residual), relu)
        .to(input.scalar_type());
  }
  const at::MemoryFormat fmt = format_of(input);
  if (input.numel() == 0) return at::empty(input.sizes(), input.options().memory_format(fmt));
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor s = scale.contiguous();
  const at::Tensor r = contiguous_or_undefined(residual);
  at::Tensor y = at::empty(input.sizes(), input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_scale_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::channel_scale<scalar_t>(x.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(),
                                                      ptr_or_null<scalar_t>(r), y.mutable_data_ptr<scalar_t>(), relu,
                                                      p, stream));
  });
  return in_memory_format(y, fmt);
}

std::tuple<at::Tensor, at::Tensor> channel_scale_grad_scale_cuda(const at::Tensor& grad_output,
                                                                 const at::Tensor& input,
                                                                 const std::optional<at::Tensor>& output_opt,
                                                                 bool residual_grad) {
  const char* op = "channel_scale_grad_scale";
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_channel_scale_grad_scale(op, grad_output, input, output);
  if (is_reduced_precision(input)) {
    auto [gs, gr] = channel_scale_grad_scale_cuda(grad_output.to(at::kFloat), input.to(at::kFloat),
                                                  opt_float(output), residual_grad);
    return {gs.to(input.scalar_type()), gr.to(input.scalar_type())};
  }
  const at::MemoryFormat fmt = format_of(input);
  // Without a mask the residual's gradient is grad_output itself: only the masked one is written.
  const bool write_gr = residual_grad && output.defined();
  at::Tensor gs = at::empty({p.batch, p.channels}, input.options());
  if (gs.numel() == 0 || p.inner == 0) {
    at::Tensor gr = write_gr ? at::empty(input.sizes(), input.options().memory_format(fmt))
                             : at::empty({0}, input.options());
    return {p.inner == 0 ? gs.zero_() : gs, gr};
  }
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor y = contiguous_or_undefined(output);
  at::Tensor gr = write_gr ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_scale_grad_scale_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::channel_scale_grad_scale<scalar_t>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(y),
        gs.mutable_data_ptr<scalar_t>(), mutable_ptr_or_null<scalar_t>(gr, write_gr), p, stream));
  });
  return {gs, write_gr ? in_memory_format(gr, fmt) : gr};
}

at::Tensor channel_scale_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& scale,
                                         const std::optional<at::Tensor>& shift_opt,
                                         const std::optional<at::Tensor>& output_opt) {
  const char* op = "channel_scale_grad_input";
  const at::Tensor& shift = value_or_undefined(shift_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_channel_scale_grad_input(op, grad_output, scale, shift, output);
  if (is_reduced_precision(grad_output)) {
    return channel_scale_grad_input_cuda(grad_output.to(at::kFloat), scale.to(at::kFloat), opt_float(shift),
                                         opt_float(output))
        .to(grad_output.scalar_type());
  }
  // The layout of the forward output when there is one, else of grad_output, as the CPU op.
  const at::MemoryFormat fmt = format_of(output.defined() ? output : grad_output);
  if (grad_output.numel() == 0) return at::empty(grad_output.sizes(), grad_output.options().memory_format(fmt));
  FASTCONV_DEVICE_GUARD(grad_output);
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor y = contiguous_or_undefined(output);
  const at::Tensor s = scale.contiguous();
  const at::Tensor t = contiguous_or_undefined(shift);
  at::Tensor gx = at::empty(grad_output.sizes(), grad_output.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "channel_scale_grad_input_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::channel_scale_grad_input<scalar_t>(
        g.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(y), s.const_data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(t), gx.mutable_data_ptr<scalar_t>(), p, stream));
  });
  return in_memory_format(gx, fmt);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> squeeze_excitation_cuda(
    const at::Tensor& input, const at::Tensor& w1, const std::optional<at::Tensor>& b1_opt, const at::Tensor& w2,
    const std::optional<at::Tensor>& b2_opt, const std::optional<at::Tensor>& residual_opt) {
  const char* op = "squeeze_excitation";
  const at::Tensor& b1 = value_or_undefined(b1_opt);
  const at::Tensor& b2 = value_or_undefined(b2_opt);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  const SeParams p = check_squeeze_excitation(op, input, w1, b1, w2, b2, residual);
  const int64_t cr = w1.size(0);
  if (is_reduced_precision(input)) {
    auto [y, pooled, hidden, scale] = squeeze_excitation_cuda(input.to(at::kFloat), w1.to(at::kFloat), opt_float(b1),
                                                              w2.to(at::kFloat), opt_float(b2), opt_float(residual));
    const auto t = input.scalar_type();
    return {y.to(t), pooled.to(t), hidden.to(t), scale.to(t)};
  }
  const at::MemoryFormat fmt = format_of(input);
  at::Tensor pooled = at::empty({p.batch, p.channels}, input.options());
  at::Tensor hidden = at::empty({p.batch, cr}, input.options());
  at::Tensor scale = at::empty({p.batch, p.channels}, input.options());
  if (p.batch == 0) return {at::empty(input.sizes(), input.options().memory_format(fmt)), pooled, hidden, scale};
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor r = contiguous_or_undefined(residual);
  const at::Tensor w1c = w1.contiguous(), w2c = w2.contiguous();
  const at::Tensor b1c = contiguous_or_undefined(b1), b2c = contiguous_or_undefined(b2);
  at::Tensor y = at::empty(input.sizes(), input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  // With C = 0 the output is empty but hidden = relu(fc1_bias) is still computed.
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "squeeze_excitation_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::squeeze_excitation<scalar_t>(
        x.const_data_ptr<scalar_t>(), w1c.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b1c),
        w2c.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b2c), ptr_or_null<scalar_t>(r),
        y.mutable_data_ptr<scalar_t>(), pooled.mutable_data_ptr<scalar_t>(), hidden.mutable_data_ptr<scalar_t>(),
        scale.mutable_data_ptr<scalar_t>(), p, cr, stream));
  });
  return {in_memory_format(y, fmt), pooled, hidden, scale};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> squeeze_excitation_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, const at::Tensor& scale, const std::optional<at::Tensor>& output_opt,
    std::array<bool, 2> output_mask) {
  const char* op = "squeeze_excitation_backward";
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_squeeze_excitation_backward(op, grad_output, input, w1, w2, hidden, scale, output);
  const int64_t cr = w1.size(0);
  const bool want_gi = output_mask[0];
  const bool want_gr = output_mask[1] && output.defined();
  if (is_reduced_precision(input)) {
    auto [gi, gr, dz1, dz2] = squeeze_excitation_backward_cuda(
        grad_output.to(at::kFloat), input.to(at::kFloat), w1.to(at::kFloat), w2.to(at::kFloat),
        hidden.to(at::kFloat), scale.to(at::kFloat), opt_float(output), output_mask);
    const auto t = input.scalar_type();
    return {gi.to(t), gr.to(t), dz1.to(t), dz2.to(t)};
  }
  const at::MemoryFormat fmt = format_of(input);
  at::Tensor dz1 = at::empty({p.batch, cr}, input.options());
  at::Tensor dz2 = at::empty({p.batch, p.channels}, input.options());
  if (p.batch == 0) {
    auto like_input = [&](bool want) {
      return want ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options());
    };
    return {like_input(want_gi), like_input(want_gr), dz1, dz2};
  }
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor y = contiguous_or_undefined(output);
  const at::Tensor w1c = w1.contiguous(), w2c = w2.contiguous(), hc = hidden.contiguous(), sc = scale.contiguous();
  at::Tensor gi = want_gi ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  at::Tensor gr = want_gr ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  // The squeeze's share of grad_input, (N, C) scratch.
  at::Tensor shift = want_gi ? at::empty({p.batch, p.channels}, input.options()) : at::Tensor();
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  // With C = 0 the activations are empty but dz1 = 0 is still written.
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "squeeze_excitation_backward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::squeeze_excitation_backward<scalar_t>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), w1c.const_data_ptr<scalar_t>(),
        w2c.const_data_ptr<scalar_t>(), hc.const_data_ptr<scalar_t>(), sc.const_data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(y), mutable_ptr_or_null<scalar_t>(gi, want_gi),
        mutable_ptr_or_null<scalar_t>(gr, want_gr), dz1.mutable_data_ptr<scalar_t>(),
        dz2.mutable_data_ptr<scalar_t>(), mutable_ptr_or_null<scalar_t>(shift, want_gi), p, cr, stream));
  });
  return {want_gi ? in_memory_format(gi, fmt) : gi, want_gr ? in_memory_format(gr, fmt) : gr, dz1, dz2};
}

}  // namespace
}  // namespace se
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  m.impl("channel_scale", &fastconv::se::channel_scale_cuda);
  m.impl("channel_scale_grad_scale", &fastconv::se::channel_scale_grad_scale_cuda);
  m.impl("channel_scale_grad_input", &fastconv::se::channel_scale_grad_input_cuda);
  m.impl("squeeze_excitation", &fastconv::se::squeeze_excitation_cuda);
  m.impl("squeeze_excitation_backward", &fastconv::se::squeeze_excitation_backward_cuda);
}
