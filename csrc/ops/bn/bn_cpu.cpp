// ATen glue for the CPU training-mode BatchNorm + residual + ReLU kernels: checks, layout,
// work split, the per-channel statistics and coefficients (in double), CPU registrations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "../../common/dispatch.h"
#include "../../common/streaming.h"
#include "bn_checks.h"
#include "bn_kernels.h"

namespace fastconv {
namespace bn {
namespace {

template <class T>
const BnKernels<T>* select_kernels();

template <>
const BnKernels<float>* select_kernels<float>() {
  return pick_kernels(bn_kernels_avx512_float(), bn_kernels_avx2_float(), bn_kernels_default_float());
}

template <>
const BnKernels<double>* select_kernels<double>() {
  return pick_kernels(bn_kernels_avx512_double(), bn_kernels_avx2_double(), bn_kernels_default_double());
}

// ~32K values per elementwise or channel task.
int64_t grain(int64_t per_unit) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, per_unit)); }

// Per-channel sums s1 / s2 (C each): cf one task per channel run, cl kRowsPerItem-row items
// summed in item order. kernel(s1, s2, begin, end) as the BnKernels reductions take it.
template <class F>
void channel_sums(const BnParams& p, bool cl, std::vector<double>& s1, std::vector<double>& s2, const F& kernel) {
  const int64_t C = p.channels;
  s1.assign(static_cast<size_t>(C), 0.0);
  s2.assign(static_cast<size_t>(C), 0.0);
  if (!cl) {
    at::parallel_for(0, C, grain(p.count()), [&](int64_t b, int64_t e) { kernel(s1.data(), s2.data(), b, e); });
    return;
  }
  const int64_t items = (p.count() + kRowsPerItem - 1) / kRowsPerItem;
  std::vector<double> part1(static_cast<size_t>(items * C)), part2(static_cast<size_t>(items * C));
  at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { kernel(part1.data(), part2.data(), b, e); });
  for (int64_t t = 0; t < items; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += part1[t * C + c];
      s2[c] += part2[t * C + c];
    }
  }
}

// An elementwise pass: planes (cf) or pixel rows (cl), fn(begin, end).
template <class F>
void elementwise(const BnParams& p, bool cl, const F& fn) {
  if (cl) at::parallel_for(0, p.count(), grain(p.channels), fn);
  else at::parallel_for(0, p.batch * p.channels, grain(p.inner), fn);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_cpu(const at::Tensor& input,
                                                                  const std::optional<at::Tensor>& weight_opt,
                                                                  const std::optional<at::Tensor>& bias_opt,
                                                                  const std::optional<at::Tensor>& residual_opt,
                                                                  bool relu, double eps) {
  const char* op = "batch_norm_act";
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& bias = value_or_undefined(bias_opt);
  const at::Tensor& residual = value_or_undefined(residual_opt);
  BnParams p = check_batch_norm_act(op, input, weight, bias, residual, eps);
  if (is_reduced_precision(input)) {
    auto [y, mean, var] = batch_norm_act_cpu(input.to(at::kFloat), opt_float(weight), opt_float(bias),
                                             opt_float(residual), relu, eps);
    const auto t = input.scalar_type();
    return {y.to(t), mean.to(t), var.to(t)};
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor r = residual.defined() ? residual.contiguous(fmt) : residual;
  at::Tensor y = at::empty(input.sizes(), input.options().memory_format(fmt));
  at::Tensor mean = at::empty({p.channels}, input.options());
  at::Tensor var = at::empty({p.channels}, input.options());
  // No values: the statistics of an empty batch are NaN (as torch's mean and var of nothing).
  if (y.numel() == 0) return {y, mean.fill_(NAN), var.fill_(NAN)};
  const at::Tensor w = weight.defined() ? weight.contiguous() : weight;
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  p.stream = streams_past_caches(static_cast<int64_t>(y.nbytes()));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_cpu", [&] {
    using T = scalar_t;
    const auto* kt = select_kernels<T>();
    const T* xp = x.const_data_ptr<T>();
    // The shift of each channel's sums: its first value.
    std::vector<T> k(static_cast<size_t>(p.channels));
    for (int64_t c = 0; c < p.channels; ++c) k[c] = xp[cl ? c : c * p.inner];
    std::vector<double> s1, s2;
    channel_sums(p, cl, s1, s2, [&](double* a, double* q, int64_t lo, int64_t hi) {
      (cl ? kt->stats_cl : kt->stats_cf)(xp, k.data(), a, q, p, lo, hi);
    });
    const T* wp = w.defined() ? w.const_data_ptr<T>() : nullptr;
    const T* bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
    T* mp = mean.mutable_data_ptr<T>();
    T* vp = var.mutable_data_ptr<T>();
    std::vector<T> ca(static_cast<size_t>(p.channels)), cb(static_cast<size_t>(p.channels));
    for (int64_t c = 0; c < p.channels; ++c) {
      double m, v;
      channel_stats(static_cast<double>(k[c]), s1[c], s2[c], p.count(), m, v);
      mp[c] = static_cast<T>(m);
      vp[c] = static_cast<T>(v);
      ca[c] = static_cast<T>(forward_scale(v, eps, wp ? static_cast<double>(wp[c]) : 1.0));
      cb[c] = bp ? bp[c] : T(0);
    }
    const T* rp = r.defined() ? r.const_data_ptr<T>() : nullptr;
    T* yp = y.mutable_data_ptr<T>();
    elementwise(p, cl, [&](int64_t lo, int64_t hi) {
      (cl ? kt->apply_cl : kt->apply_cf)(xp, mp, ca.data(), cb.data(), rp, yp, relu, p, lo, hi);
    });
  });
  return {y, mean, var};
}

// (grad_input, grad_weight (C,), grad_bias (C,), grad_residual = grad_output * relu mask, or an
// empty (0,) tensor unless residual_grad and output are given).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight_opt,
    const at::Tensor& mean, const at::Tensor& var, const std::optional<at::Tensor>& output_opt, double eps,
    bool residual_grad) {
  const char* op = "batch_norm_act_backward";
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& output = value_or_undefined(output_opt);
  BnParams p = check_batch_norm_act_backward(op, grad_output, input, weight, mean, var, output, eps);
  if (is_reduced_precision(input)) {
    auto [gi, gw, gb, gr] =
        batch_norm_act_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat), opt_float(weight),
                                    mean.to(at::kFloat), var.to(at::kFloat), opt_float(output), eps, residual_grad);
    const auto t = input.scalar_type();
    return {gi.to(t), gw.to(t), gb.to(t), gr.to(t)};
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor y = output.defined() ? output.contiguous(fmt) : output;
  const bool write_gr = residual_grad && y.defined();
  at::Tensor gi = at::empty(input.sizes(), input.options().memory_format(fmt));
  at::Tensor gw = at::empty({p.channels}, input.options());
  at::Tensor gb = at::empty({p.channels}, input.options());
  at::Tensor gr = write_gr ? at::empty(input.sizes(), input.options().memory_format(fmt))
                           : at::empty({0}, input.options());
  if (gi.numel() == 0) return {gi, gw.zero_(), gb.zero_(), gr};
  const at::Tensor w = weight.defined() ? weight.contiguous() : weight;
  const at::Tensor mc = mean.contiguous(), vc = var.contiguous();
  p.stream = streams_past_caches(static_cast<int64_t>(gi.nbytes()));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_backward_cpu", [&] {
    using T = scalar_t;
    const auto* kt = select_kernels<T>();
    const T* gp = g.const_data_ptr<T>();
    const T* xp = x.const_data_ptr<T>();
    const T* yp = y.defined() ? y.const_data_ptr<T>() : nullptr;
    const T* mp = mc.const_data_ptr<T>();
    const T* vp = vc.const_data_ptr<T>();
    const T* wp = w.defined() ? w.const_data_ptr<T>() : nullptr;
    T* grp = write_gr ? gr.mutable_data_ptr<T>() : nullptr;
    std::vector<double> s1, s2;
    channel_sums(p, cl, s1, s2, [&](double* a, double* q, int64_t lo, int64_t hi) {
      (cl ? kt->grad_sums_cl : kt->grad_sums_cf)(gp, yp, xp, mp, a, q, grp, p, lo, hi);
    });
    std::vector<T> k1(static_cast<size_t>(p.channels)), k2(k1.size()), k3(k1.size());
    T* gwp = gw.mutable_data_ptr<T>();
    T* gbp = gb.mutable_data_ptr<T>();
    for (int64_t c = 0; c < p.channels; ++c) {
      double a, b2, b3, dw;
      backward_coefficients(static_cast<double>(vp[c]), eps, wp ? static_cast<double>(wp[c]) : 1.0, s1[c], s2[c],
                            p.count(), a, b2, b3, dw);
      k1[c] = static_cast<T>(a);
      k2[c] = static_cast<T>(b2);
      k3[c] = static_cast<T>(b3);
      gwp[c] = static_cast<T>(dw);
      gbp[c] = static_cast<T>(s1[c]);
    }
    T* gip = gi.mutable_data_ptr<T>();
    // The residual's gradient is the masked gradient itself: read it instead of the gradient
    // and the output (three streams instead of four in a pass bound by memory).
    const T* gm = write_gr ? grp : gp;
    const T* ym = write_gr ? nullptr : yp;
    elementwise(p, cl, [&](int64_t lo, int64_t hi) {
      (cl ? kt->grad_input_cl : kt->grad_input_cf)(gm, ym, xp, mp, k1.data(), k2.data(), k3.data(), gip, p, lo, hi);
    });
  });
  return {gi, gw, gb, gr};
}

}  // namespace
}  // namespace bn
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("batch_norm_act", &fastconv::bn::batch_norm_act_cpu);
  m.impl("batch_norm_act_backward", &fastconv::bn::batch_norm_act_backward_cpu);
}
