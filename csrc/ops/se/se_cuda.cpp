// ATen glue for the CUDA Squeeze-and-Excitation kernels: the CPU glue's checks and messages
// (se_cpu.cpp), contiguous channels-first inputs for the kernels, outputs with the CPU op's
// shapes and layouts (channels_last activations stay channels_last; empty (0,) outputs where
// the CPU op returns them).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <tuple>

#include "../../common/cuda_glue.h"
#include "se_cuda.h"

namespace fastconv {
namespace se {
namespace {

// ---- checks, as se_cpu.cpp

void check_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf, op, ": ", name,
                    " must be float32, float64, bfloat16 or float16, got ", s);
}

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), op, ": ", name, " must have the shape of input ", like.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on the device of input (",
                    like.device(), "), got ", t.device());
}

SeParams check_se(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D (shape ",
                    input.sizes(), ")");
  check_dtype(op, "input", input);
  SeParams p;
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.inner = input.size(2) * input.size(3);
  return p;
}

void check_per_channel(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == input.size(0) && t.size(1) == input.size(1), op, ": ", name,
                    " must have shape (N, C) = (", input.size(0), ", ", input.size(1), "), got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": ", name, " must be on the device of input (",
                    input.device(), "), got ", t.device());
}

void check_block(const char* op, const at::Tensor& input, const at::Tensor& w1, const at::Tensor& w2) {
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

void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t n, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must have shape (", n, ",), got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type() && t.device() == input.device(), op, ": ", name,
                    " must have input's dtype and device, got (", t.scalar_type(), ", ", t.device(), ")");
}

// ---- layout and small helpers

bool reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

// The layout the CPU op gives an activation-shaped output computed from `t`.
at::MemoryFormat format_of(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous;
}

// A contiguous kernel result in the CPU op's layout: allocated as the CPU op allocates it, so
// the strides match too (also those of size-1 dimensions).
at::Tensor in_format(const at::Tensor& t, at::MemoryFormat fmt) {
  if (fmt == at::MemoryFormat::Contiguous) return t;
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(fmt));
  out.copy_(t);
  return out;
}

std::optional<at::Tensor> opt_float(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t.to(at::kFloat)) : std::nullopt;
}

const at::Tensor& value_or_undefined(const std::optional<at::Tensor>& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

at::Tensor contiguous_or_undefined(const at::Tensor& t) { return t.defined() ? t.contiguous() : t; }

template <class T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <class T>
T* mutable_ptr_or_null(at::Tensor& t, bool use) {
  return use ? t.mutable_data_ptr<T>() : nullptr;
}

// ---- ops

at::Tensor channel_scale_cuda(const at::Tensor& input, const at::Tensor& scale,
                              const std::optional<at::Tensor>& residual_opt, bool relu) {
  const char* op = "channel_scale";
  const SeParams p = check_se(op, input);
  check_per_channel(op, "scale", scale, input);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  if (residual.defined()) check_like(op, "residual", residual, input);
  if (reduced_precision(input)) {
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
  return in_format(y, fmt);
}

std::tuple<at::Tensor, at::Tensor> channel_scale_grad_scale_cuda(const at::Tensor& grad_output,
                                                                 const at::Tensor& input,
                                                                 const std::optional<at::Tensor>& output_opt,
                                                                 bool residual_grad) {
  const char* op = "channel_scale_grad_scale";
  const SeParams p = check_se(op, input);
  check_like(op, "grad_output", grad_output, input);
  const at::Tensor& output = value_or_undefined(output_opt);
  if (output.defined()) check_like(op, "output", output, input);
  if (reduced_precision(input)) {
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
  return {gs, write_gr ? in_format(gr, fmt) : gr};
}

at::Tensor channel_scale_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& scale,
                                         const std::optional<at::Tensor>& shift_opt,
                                         const std::optional<at::Tensor>& output_opt) {
  const char* op = "channel_scale_grad_input";
  const SeParams p = check_se(op, grad_output);
  check_per_channel(op, "scale", scale, grad_output);
  const at::Tensor& shift = value_or_undefined(shift_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  if (shift.defined()) check_per_channel(op, "shift", shift, grad_output);
  if (output.defined()) check_like(op, "output", output, grad_output);
  if (reduced_precision(grad_output)) {
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
  return in_format(gx, fmt);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> squeeze_excitation_cuda(
    const at::Tensor& input, const at::Tensor& w1, const std::optional<at::Tensor>& b1_opt, const at::Tensor& w2,
    const std::optional<at::Tensor>& b2_opt, const std::optional<at::Tensor>& residual_opt) {
  const char* op = "squeeze_excitation";
  const SeParams p = check_se(op, input);
  check_block(op, input, w1, w2);
  const int64_t cr = w1.size(0);
  const at::Tensor& b1 = value_or_undefined(b1_opt);
  const at::Tensor& b2 = value_or_undefined(b2_opt);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  if (b1.defined()) check_vector(op, "fc1_bias", b1, cr, input);
  if (b2.defined()) check_vector(op, "fc2_bias", b2, p.channels, input);
  if (residual.defined()) check_like(op, "residual", residual, input);
  if (reduced_precision(input)) {
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
  return {in_format(y, fmt), pooled, hidden, scale};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> squeeze_excitation_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, const at::Tensor& scale, const std::optional<at::Tensor>& output_opt,
    std::array<bool, 2> output_mask) {
  const char* op = "squeeze_excitation_backward";
  const SeParams p = check_se(op, input);
  check_block(op, input, w1, w2);
  check_like(op, "grad_output", grad_output, input);
  const int64_t cr = w1.size(0);
  check_per_channel(op, "scale", scale, input);
  TORCH_CHECK_VALUE(hidden.dim() == 2 && hidden.size(0) == p.batch && hidden.size(1) == cr, op,
                    ": hidden must have shape (N, C/r) = (", p.batch, ", ", cr, "), got ", hidden.sizes());
  const at::Tensor& output = value_or_undefined(output_opt);
  if (output.defined()) check_like(op, "output", output, input);
  const bool want_gi = output_mask[0];
  const bool want_gr = output_mask[1] && output.defined();
  if (reduced_precision(input)) {
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
  return {want_gi ? in_format(gi, fmt) : gi, want_gr ? in_format(gr, fmt) : gr, dz1, dz2};
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
