// ATen glue for the CPU Squeeze-and-Excitation kernels: checks, layout, work split, CPU
// registrations. The squeeze itself is the pooling family's global average pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "../../common/dispatch.h"
#include "se_kernels.h"

namespace fastconv {
namespace se {
namespace {

template <class T>
const SeKernels<T>* select_kernels();

template <>
const SeKernels<float>* select_kernels<float>() {
  return pick_kernels(se_kernels_avx512_float(), se_kernels_avx2_float(), se_kernels_default_float());
}

template <>
const SeKernels<double>* select_kernels<double>() {
  return pick_kernels(se_kernels_avx512_double(), se_kernels_avx2_double(), se_kernels_default_double());
}

bool channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

at::MemoryFormat format_of(const at::Tensor& t) {
  return channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

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

// input (N, C, H, W); per-channel tensors (N, C).
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

at::Tensor as_float(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

const at::Tensor& value_or_undefined(const std::optional<at::Tensor>& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

// Channels per channels-last reduction item when the threads split an image: enough items for
// two threads even at batch 1, and a chunk's sums (512 B) stay in L1 while the rows stream by.
constexpr int64_t kChunk = 128;

// Outputs this large cannot stay in cache for the next layer anyway: write them with
// non-temporal stores (no read-for-ownership, a third less traffic for a scale pass).
bool streams(const at::Tensor& y) { return y.nbytes() >= (size_t(16) << 20); }

// A plane or pixel row is a few KB; give each task ~32K elements.
int64_t grain(int64_t per_unit) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, per_unit)); }

// An elementwise pass over images [n0, n1): f(begin, end) on planes (cf) or pixel rows (cl).
template <class F>
void elementwise(const SeParams& p, bool cl, int64_t n0, int64_t n1, const F& f) {
  const int64_t per_image = cl ? p.inner : p.channels;
  at::parallel_for(n0 * per_image, n1 * per_image, grain(cl ? p.channels : p.inner), f);
}

// A per-channel reduction over images [n0, n1): f(begin, end) on planes (cf) or on
// (image, chunk of `chunk` channels) items (cl).
template <class F>
void reduction(const SeParams& p, bool cl, int64_t chunk, int64_t n0, int64_t n1, const F& f) {
  if (cl) {
    const int64_t chunks = (p.channels + chunk - 1) / chunk;
    at::parallel_for(n0 * chunks, n1 * chunks, 1, f);
  } else {
    at::parallel_for(n0 * p.channels, n1 * p.channels, grain(p.inner), f);
  }
}

at::Tensor channel_scale_cpu(const at::Tensor& input, const at::Tensor& scale,
                             const std::optional<at::Tensor>& residual_opt, bool relu) {
  const char* op = "channel_scale";
  const SeParams p = check_se(op, input);
  check_per_channel(op, "scale", scale, input);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  if (residual.defined()) check_like(op, "residual", residual, input);
  if (is_reduced_precision(input)) {
    return channel_scale_cpu(input.to(at::kFloat), scale.to(at::kFloat),
                             residual.defined() ? std::optional<at::Tensor>(residual.to(at::kFloat)) : std::nullopt,
                             relu)
        .to(input.scalar_type());
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor s = scale.contiguous();
  const at::Tensor r = residual.defined() ? residual.contiguous(fmt) : residual;
  at::Tensor y = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (y.numel() == 0) return y;
  const bool stream = streams(y);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_scale_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* ss = s.const_data_ptr<scalar_t>();
    const scalar_t* rs = r.defined() ? r.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* ys = y.mutable_data_ptr<scalar_t>();
    const auto scale_fn = cl ? kt->scale_cl : kt->scale_cf;
    elementwise(p, cl, 0, p.batch, [&](int64_t b, int64_t e) { scale_fn(xs, ss, rs, ys, relu, stream, p, b, e); });
  });
  return y;
}

// (grad_scale (N, C), grad_residual = g * relu mask, or an empty (0,) tensor when not asked).
std::tuple<at::Tensor, at::Tensor> channel_scale_grad_scale_cpu(const at::Tensor& grad_output,
                                                                const at::Tensor& input,
                                                                const std::optional<at::Tensor>& output_opt,
                                                                bool residual_grad) {
  const char* op = "channel_scale_grad_scale";
  const SeParams p = check_se(op, input);
  check_like(op, "grad_output", grad_output, input);
  const at::Tensor& output = value_or_undefined(output_opt);
  if (output.defined()) check_like(op, "output", output, input);
  if (is_reduced_precision(input)) {
    auto [gs, gr] = channel_scale_grad_scale_cpu(
        grad_output.to(at::kFloat), input.to(at::kFloat),
        output.defined() ? std::optional<at::Tensor>(as_float(output)) : std::nullopt, residual_grad);
    return {gs.to(input.scalar_type()), gr.to(input.scalar_type())};
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor y = output.defined() ? output.contiguous(fmt) : output;
  at::Tensor gs = at::empty({p.batch, p.channels}, input.options());
  // Without a mask the residual's gradient is grad_output itself, which the caller already
  // has (an op output may not alias an input): only the masked gradient is written.
  const bool write_gr = residual_grad && y.defined();
  at::Tensor gr = write_gr ? at::empty(input.sizes(), input.options().memory_format(fmt))
                           : at::empty({0}, input.options());
  if (gs.numel() == 0) return {gs, gr};
  if (p.inner == 0) return {gs.zero_(), gr};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_scale_grad_scale_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.defined() ? y.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gsp = gs.mutable_data_ptr<scalar_t>();
    scalar_t* grp = write_gr ? gr.mutable_data_ptr<scalar_t>() : nullptr;
    reduction(p, cl, kChunk, 0, p.batch, [&](int64_t b, int64_t e) {
      if (cl) kt->grad_scale_cl(gp, xp, yp, gsp, grp, p, kChunk, b, e);
      else kt->grad_scale_cf(gp, xp, yp, gsp, grp, p, b, e);
    });
  });
  return {gs, gr};
}

// grad_input = grad_output * relu mask * scale + shift (shift: (N, C), the squeeze's share).
at::Tensor channel_scale_grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& scale,
                                        const std::optional<at::Tensor>& shift_opt,
                                        const std::optional<at::Tensor>& output_opt) {
  const char* op = "channel_scale_grad_input";
  const SeParams p = check_se(op, grad_output);
  check_per_channel(op, "scale", scale, grad_output);
  const at::Tensor& shift = value_or_undefined(shift_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  if (shift.defined()) check_per_channel(op, "shift", shift, grad_output);
  if (output.defined()) check_like(op, "output", output, grad_output);
  if (is_reduced_precision(grad_output)) {
    return channel_scale_grad_input_cpu(
               grad_output.to(at::kFloat), scale.to(at::kFloat),
               shift.defined() ? std::optional<at::Tensor>(as_float(shift)) : std::nullopt,
               output.defined() ? std::optional<at::Tensor>(as_float(output)) : std::nullopt)
        .to(grad_output.scalar_type());
  }
  // The gradient takes the layout of the forward output when there is one (it is what the
  // input's layout was), else of grad_output.
  const at::Tensor& layout = output.defined() ? output : grad_output;
  const bool cl = channels_last(layout);
  const at::MemoryFormat fmt = format_of(layout);
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor y = output.defined() ? output.contiguous(fmt) : output;
  const at::Tensor s = scale.contiguous();
  const at::Tensor t = shift.defined() ? shift.contiguous() : shift;
  at::Tensor gx = at::empty(grad_output.sizes(), grad_output.options().memory_format(fmt));
  if (gx.numel() == 0) return gx;
  const bool stream = streams(gx);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "channel_scale_grad_input_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.defined() ? y.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = s.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const auto grad_input_fn = cl ? kt->grad_input_cl : kt->grad_input_cf;
    elementwise(p, cl, 0, p.batch, [&](int64_t b, int64_t e) { grad_input_fn(gp, yp, sp, tp, gxp, stream, p, b, e); });
  });
  return gx;
}

// ---- the whole SE block

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

std::optional<at::Tensor> opt_float(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t.to(at::kFloat)) : std::nullopt;
}

// One image per task when there are at least as many images as threads, so an image's second
// pass finds it in cache; else the phases run over the whole batch, the threads inside each.
bool image_by_image(const SeParams& p) { return p.batch >= at::get_num_threads(); }

// Channels per channels-last reduction item: image by image one item spans all channels (one
// pass over the image's rows), else kChunk channels give the threads work. The sums are the
// same either way.
int64_t reduction_chunk(const SeParams& p) { return image_by_image(p) ? std::max<int64_t>(p.channels, 1) : kChunk; }

// Runs phases(n, n + 1) for each image, one image per task, or phases(0, N) once (see
// image_by_image). Inside a parallel region at::parallel_for runs inline, so the phases may
// split their own work either way. Both orders give bitwise the same result.
template <class Phases>
void over_images(const SeParams& p, const Phases& phases) {
  if (image_by_image(p)) {
    at::parallel_for(0, p.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) phases(n, n + 1);
    });
  } else {
    phases(0, p.batch);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> se_block_cpu(
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
  if (is_reduced_precision(input)) {
    auto [y, pooled, hidden, scale] = se_block_cpu(input.to(at::kFloat), w1.to(at::kFloat), opt_float(b1),
                                                   w2.to(at::kFloat), opt_float(b2), opt_float(residual));
    const auto t = input.scalar_type();
    return {y.to(t), pooled.to(t), hidden.to(t), scale.to(t)};
  }
  const bool cl = channels_last(input);
  const bool relu = residual.defined();
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor r = residual.defined() ? residual.contiguous(fmt) : residual;
  const at::Tensor w1c = w1.contiguous(), w2c = w2.contiguous();
  const at::Tensor b1c = b1.defined() ? b1.contiguous() : b1, b2c = b2.defined() ? b2.contiguous() : b2;
  at::Tensor y = at::empty(input.sizes(), input.options().memory_format(fmt));
  at::Tensor pooled = at::empty({p.batch, p.channels}, input.options());
  at::Tensor hidden = at::empty({p.batch, cr}, input.options());
  at::Tensor scale = at::empty({p.batch, p.channels}, input.options());
  if (y.numel() == 0) return {y, pooled, hidden, scale};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "se_block_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* rp = r.defined() ? r.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* w1p = w1c.const_data_ptr<scalar_t>();
    const scalar_t* w2p = w2c.const_data_ptr<scalar_t>();
    const scalar_t* b1p = b1c.defined() ? b1c.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* b2p = b2c.defined() ? b2c.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    scalar_t* pp = pooled.mutable_data_ptr<scalar_t>();
    scalar_t* hp = hidden.mutable_data_ptr<scalar_t>();
    scalar_t* sp = scale.mutable_data_ptr<scalar_t>();
    const bool stream = streams(y);
    const int64_t chunk = reduction_chunk(p);
    const auto scale_fn = cl ? kt->scale_cl : kt->scale_cf;
    over_images(p, [&](int64_t n0, int64_t n1) {
      reduction(p, cl, chunk, n0, n1, [&](int64_t b, int64_t e) {
        if (cl) kt->squeeze_cl(xp, pp, p, chunk, b, e);
        else kt->squeeze_cf(xp, pp, p, b, e);
      });
      kt->excite(pp, w1p, b1p, w2p, b2p, hp, sp, p, cr, n0, n1);
      elementwise(p, cl, n0, n1, [&](int64_t b, int64_t e) { scale_fn(xp, sp, rp, yp, relu, stream, p, b, e); });
    });
  });
  return {y, pooled, hidden, scale};
}

// (grad_input or empty, grad_residual or empty, dz1 (N, C/r), dz2 (N, C)); the Python layer
// turns dz1 / dz2 into the FC layers' weight and bias gradients.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> se_block_backward_cpu(
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
  if (is_reduced_precision(input)) {
    auto [gi, gr, dz1, dz2] = se_block_backward_cpu(
        grad_output.to(at::kFloat), input.to(at::kFloat), w1.to(at::kFloat), w2.to(at::kFloat),
        hidden.to(at::kFloat), scale.to(at::kFloat), opt_float(output), output_mask);
    const auto t = input.scalar_type();
    return {gi.to(t), gr.to(t), dz1.to(t), dz2.to(t)};
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor y = output.defined() ? output.contiguous(fmt) : output;
  const at::Tensor w1c = w1.contiguous(), w2c = w2.contiguous(), hc = hidden.contiguous(), sc = scale.contiguous();
  at::Tensor gi = want_gi ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options());
  at::Tensor gr = want_gr ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options());
  at::Tensor dz1 = at::empty({p.batch, cr}, input.options());
  at::Tensor dz2 = at::empty({p.batch, p.channels}, input.options());
  if (x.numel() == 0) return {gi, gr, dz1, dz2};
  at::Tensor gs = at::empty({p.batch, p.channels}, input.options());
  at::Tensor shift = at::empty({p.batch, p.channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "se_block_backward_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.defined() ? y.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* w1p = w1c.const_data_ptr<scalar_t>();
    const scalar_t* w2p = w2c.const_data_ptr<scalar_t>();
    const scalar_t* hp = hc.const_data_ptr<scalar_t>();
    const scalar_t* sp = sc.const_data_ptr<scalar_t>();
    scalar_t* gip = want_gi ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* grp = want_gr ? gr.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gsp = gs.mutable_data_ptr<scalar_t>();
    scalar_t* tp = shift.mutable_data_ptr<scalar_t>();
    scalar_t* d1p = dz1.mutable_data_ptr<scalar_t>();
    scalar_t* d2p = dz2.mutable_data_ptr<scalar_t>();
    const int64_t chunk = reduction_chunk(p);
    const bool stream = want_gi && streams(gi);
    const auto grad_input_fn = cl ? kt->grad_input_cl : kt->grad_input_cf;
    over_images(p, [&](int64_t n0, int64_t n1) {
      reduction(p, cl, chunk, n0, n1, [&](int64_t b, int64_t e) {
        if (cl) kt->grad_scale_cl(gp, xp, yp, gsp, grp, p, chunk, b, e);
        else kt->grad_scale_cf(gp, xp, yp, gsp, grp, p, b, e);
      });
      kt->excite_backward(gsp, w1p, w2p, hp, sp, d1p, d2p, tp, p, cr, n0, n1);
      if (want_gi)
        elementwise(p, cl, n0, n1, [&](int64_t b, int64_t e) { grad_input_fn(gp, yp, sp, tp, gip, stream, p, b, e); });
    });
  });
  return {gi, gr, dz1, dz2};
}

}  // namespace
}  // namespace se
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("channel_scale", &fastconv::se::channel_scale_cpu);
  m.impl("channel_scale_grad_scale", &fastconv::se::channel_scale_grad_scale_cpu);
  m.impl("channel_scale_grad_input", &fastconv::se::channel_scale_grad_input_cpu);
  m.impl("squeeze_excitation", &fastconv::se::se_block_cpu);
  m.impl("squeeze_excitation_backward", &fastconv::se::se_block_backward_cpu);
}
