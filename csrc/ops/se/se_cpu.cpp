// ATen glue for the CPU Squeeze-and-Excitation kernels: checks, layout, work split, CPU
// registrations. The squeeze itself is the pooling family's global average pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "../../common/dispatch.h"
#include "../../common/streaming.h"
#include "se_checks.h"
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

at::Tensor as_float(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

// Channels per channels-last reduction item when the threads split an image: enough items for
// two threads even at batch 1, and a chunk's sums (512 B) stay in L1 while the rows stream by.
constexpr int64_t kChunk = 128;

bool streams(const at::Tensor& y) { return streams_past_caches(static_cast<int64_t>(y.nbytes())); }

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
  const at::Tensor& residual = value_or_undefined(residual_opt);
  const SeParams p = check_channel_scale(op, input, scale, residual);
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
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_channel_scale_grad_scale(op, grad_output, input, output);
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
  const at::Tensor& shift = value_or_undefined(shift_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_channel_scale_grad_input(op, grad_output, scale, shift, output);
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
  const at::Tensor& b1 = value_or_undefined(b1_opt);
  const at::Tensor& b2 = value_or_undefined(b2_opt);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  const SeParams p = check_squeeze_excitation(op, input, w1, b1, w2, b2, residual);
  const int64_t cr = w1.size(0);
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
  const at::Tensor& output = value_or_undefined(output_opt);
  const SeParams p = check_squeeze_excitation_backward(op, grad_output, input, w1, w2, hidden, scale, output);
  const int64_t cr = w1.size(0);
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
