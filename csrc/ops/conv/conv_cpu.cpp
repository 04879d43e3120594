// ATen glue for the CPU conv2d kernels: argument checks, algorithm choice, layout buffers,
// work split and the CPU registrations.
//
// Algorithm heuristic (forced with FASTCONV_CONV_ALGO / fastconv.set_conv_algo):
//   gemm1x1  1x1, stride 1, no padding, NCHW in and out: a GEMM over each image with pixels
//            in the SIMD lanes, reading the caller's tensor as it is (no conversion).
//   winograd F(2x2, 3x3) for 3x3 stride-1 single-group layers with at least 16 input and
//            output channels and at least 256 2x2 output tiles over the batch (2.25x fewer
//            multiplies; error at the direct path's level).
//            winograd4 = F(4x4, 3x3) only when forced (larger float32 error).
//   nchw     few input channels (<= 4 per group), stride 1 along W, NCHW in and out: direct
//            convolution with output pixels in the lanes (LeNet's first layer).
//   direct   everything else: NHWC-orientation direct convolution from a zero-padded NHWC
//            copy of the input (none when the input is channels_last and unpadded); output
//            written straight into NCHW or channels_last.
// A forced algorithm that cannot run a shape (gemm1x1 on a 3x3, winograd on a 5x5) falls
// back to direct, and so does Winograd for an input holding Inf or NaN (torch's propagation).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <tuple>

#include "../../common/dispatch.h"
#include "conv_algo.h"
#include "conv_checks.h"
#include "conv_kernels.h"
#include "conv_winograd.h"

namespace fastconv {
namespace conv {

namespace {

std::atomic<int> g_algo{-1};

bool parse_algo(const std::string& s, ConvAlgo* out) {
  if (s == "auto") *out = ConvAlgo::Auto;
  else if (s == "direct") *out = ConvAlgo::Direct;
  else if (s == "gemm1x1") *out = ConvAlgo::Gemm1x1;
  else if (s == "winograd") *out = ConvAlgo::Winograd;
  else if (s == "winograd4") *out = ConvAlgo::Winograd4;
  else if (s == "nchw") *out = ConvAlgo::NchwDirect;
  else return false;
  return true;
}

}  // namespace

ConvAlgo forced_conv_algo() {
  int v = g_algo.load(std::memory_order_relaxed);
  if (v < 0) {
    ConvAlgo a = ConvAlgo::Auto;
    const char* env = std::getenv("FASTCONV_CONV_ALGO");
    if (env && *env) parse_algo(env, &a);  // validated loudly on import (fastconv/__init__.py)
    v = static_cast<int>(a);
    g_algo.store(v, std::memory_order_relaxed);
  }
  return static_cast<ConvAlgo>(v);
}

void set_conv_algo(const std::string& name) {
  ConvAlgo a;
  if (!parse_algo(name, &a))
    throw std::invalid_argument("conv algorithm must be one of 'auto', 'direct', 'gemm1x1', 'winograd', 'winograd4', 'nchw'; got '" +
                                name + "'");
  g_algo.store(static_cast<int>(a), std::memory_order_relaxed);
}

std::string conv_algo_name() {
  switch (forced_conv_algo()) {
    case ConvAlgo::Direct: return "direct";
    case ConvAlgo::Gemm1x1: return "gemm1x1";
    case ConvAlgo::Winograd: return "winograd";
    case ConvAlgo::Winograd4: return "winograd4";
    case ConvAlgo::NchwDirect: return "nchw";
    default: return "auto";
  }
}

namespace {

template <class T>
const ConvKernels<T>* select_kernels();
template <>
const ConvKernels<float>* select_kernels<float>() {
  return pick_kernels(conv_kernels_avx512_float(), conv_kernels_avx2_float(), conv_kernels_default_float());
}
template <>
const ConvKernels<double>* select_kernels<double>() {
  return pick_kernels(conv_kernels_avx512_double(), conv_kernels_avx2_double(), conv_kernels_default_double());
}

Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool is_plain_1x1(const ConvParams& p) {
  return p.KH == 1 && p.KW == 1 && p.sh == 1 && p.sw == 1 && p.pt == 0 && p.pb == 0 && p.pl == 0 &&
         p.pr == 0;
}

bool use_gemm1x1(const ConvParams& p, bool channels_last) {
  const ConvAlgo a = forced_conv_algo();
  return !channels_last && is_plain_1x1(p) && (a == ConvAlgo::Auto || a == ConvAlgo::Gemm1x1);
}

// Tasks of the NHWC forward: aim for ~256 output pixels per task.
template <class T>
FwdPlan nhwc_plan(const ConvKernels<T>* kt, const ConvParams& p) {
  FwdPlan plan;
  plan.blocks = ceil_div(p.ocg(), kt->nr);
  plan.rows_per_task = std::clamp<int64_t>(ceil_div(256, p.OW), 1, std::max<int64_t>(p.OH, 1));
  plan.row_chunks = ceil_div(p.OH, plan.rows_per_task);
  plan.blocks_inner = p.OC * p.icg() * p.KH * p.KW * int64_t(sizeof(T)) <= (256 << 10);
  return plan;
}

// Tasks of the NCHW 1x1 GEMM: pixel chunks whose input rows (icg x chunk) fit in ~64 KB.
template <class T>
FwdPlan gemm1x1_plan(const ConvKernels<T>* kt, const ConvParams& p) {
  FwdPlan plan;
  const int64_t hw = p.H * p.W;
  const int64_t chunk = std::max<int64_t>(kt->nr, (16384 / std::max<int64_t>(p.icg(), 1)) / kt->nr * kt->nr);
  plan.rows_per_task = std::min<int64_t>(chunk, std::max<int64_t>(hw, 1));
  plan.row_chunks = ceil_div(hw, plan.rows_per_task);
  plan.blocks = 1;
  return plan;
}

// The input as a padded NHWC stack, reusing the tensor itself when it already is one.
template <class T>
PaddedNhwc<T> padded_nhwc(const ConvKernels<T>* kt, const at::Tensor& x, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr, at::Tensor& storage) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  PaddedNhwc<T> out;
  out.c = C;
  out.hp = H + pt + pb;
  out.wp = W + pl + pr;
  if (pt == 0 && pb == 0 && pl == 0 && pr == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    out.data = x.const_data_ptr<T>();
    return out;
  }
  storage = at::empty({N * out.hp * out.wp * C}, x.options());
  T* dst = storage.mutable_data_ptr<T>();
  const T* src = x.const_data_ptr<T>();
  const Strides4 s = strides_of(x);
  const int64_t hp = out.hp, wp = out.wp;
  at::parallel_for(0, N * hp, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, wp * C)),
                   [&](int64_t b, int64_t e) { kt->pack_nhwc(src, s, C, H, W, pt, pl, hp, wp, dst, b, e); });
  out.data = dst;
  return out;
}

template <class T>
at::Tensor packed_weight(const ConvKernels<T>* kt, const at::Tensor& w, const ConvParams& p, bool swap,
                         int block) {
  const int64_t blocked = swap ? p.icg() : p.ocg(), kdim = swap ? p.ocg() : p.icg();
  at::Tensor out = at::empty({p.groups * ceil_div(blocked, block) * block * p.KH * p.KW * kdim}, w.options());
  kt->pack_weight(w.const_data_ptr<T>(), p, swap, block, out.mutable_data_ptr<T>());
  return out;
}

// Whether every element of x is finite. Winograd's transforms mix a whole tile, so an Inf or
// NaN in the input would turn a tile's neighbouring outputs NaN (Inf - Inf), where a direct
// convolution (torch's) gives Inf / NaN only in the outputs whose window holds it; such inputs
// take the direct path. x * 0 is 0 for a finite x and NaN otherwise; sixteen independent
// accumulators let the compiler vectorise the scan, which runs at memory speed (about 2% of a
// Winograd layer's time).
template <class T>
bool all_finite(const at::Tensor& x) {
  if (!x.is_non_overlapping_and_dense()) return at::isfinite(x).all().item<bool>();
  const T* data = x.const_data_ptr<T>();
  return at::parallel_reduce(
      int64_t(0), x.numel(), int64_t(1) << 16, true,
      [&](int64_t b, int64_t e, bool ok) {
        T acc[16] = {};
        int64_t i = b;
        for (; i + 16 <= e; i += 16)
          for (int j = 0; j < 16; ++j) acc[j] += data[i + j] * T(0);
        for (; i < e; ++i) acc[0] += data[i] * T(0);
        for (int j = 0; j < 16; ++j) ok = ok && acc[j] == T(0);
        return ok;
      },
      [](bool a, bool b) { return a && b; });
}

// 0: no Winograd for this layer; else the tile size m of F(m x m, 3 x 3).
int winograd_m(const ConvParams& p) {
  if (!winograd_applies(p.KH, p.KW, p.sh, p.sw, p.dh, p.dw, p.groups)) return 0;
  switch (forced_conv_algo()) {
    case ConvAlgo::Winograd: return 2;
    case ConvAlgo::Winograd4: return 4;
    case ConvAlgo::Auto:
      // The weight transform (16 values per filter tap pair) is paid once per call; with few
      // tiles to spread it over (batch 1 at 7x7 or 14x14: ResNet's layer3/4) it costs more
      // than the multiplies saved. Measured here: below ~256 tiles direct wins by up to 2x,
      // above it Winograd wins by up to 1.4x.
      return p.C >= 16 && p.OC >= 16 && p.N * winograd_tiles(p.OH, 2) * winograd_tiles(p.OW, 2) >= 256 ? 2 : 0;
    default: return 0;
  }
}

template <class T>
void winograd_forward(const ConvParams& p, int m, const at::Tensor& x, const at::Tensor& w,
                      const Epilogue<T>& ep, at::Tensor& y) {
  const auto* kt = select_kernels<T>();
  const int64_t alpha = m + 2, a2 = alpha * alpha;
  const int64_t th = winograd_tiles(p.OH, m), tw = winograd_tiles(p.OW, m);
  const int64_t total = p.N * th * tw;
  const int64_t ocblocks = ceil_div(p.OC, kt->nr), ocp = ocblocks * kt->nr;
  // Every tile reads a full (m + 2)^2 patch: pad the bottom / right out to whole tiles.
  at::Tensor storage;
  const PaddedNhwc<T> xp = padded_nhwc<T>(kt, x, p.pt, th * m + 2 - p.H - p.pt, p.pl, tw * m + 2 - p.W - p.pl,
                                          storage);
  at::Tensor u = at::empty({a2 * ocblocks * p.C * kt->nr}, x.options());
  const T* ws = w.const_data_ptr<T>();
  T* us = u.mutable_data_ptr<T>();
  at::parallel_for(0, ocblocks, 1, [&](int64_t b, int64_t e) { kt->winograd_weight(ws, p, m, us, b, e); });
  // Chunks of tiles whose transformed inputs (a2 x count x C) take ~2 MB: they stay in cache
  // from the input transform through the GEMMs.
  int64_t chunk = (int64_t(2) << 20) / (a2 * std::max<int64_t>(p.C, 1) * int64_t(sizeof(T)));
  chunk = std::clamp<int64_t>(chunk / kt->mr * kt->mr, kt->mr, std::max<int64_t>(total, 1));
  at::Tensor v = at::empty({a2 * chunk * p.C}, x.options());
  at::Tensor mm = at::empty({a2 * chunk * ocp}, x.options());
  T* vs = v.mutable_data_ptr<T>();
  T* ms = mm.mutable_data_ptr<T>();
  T* ys = y.mutable_data_ptr<T>();
  const Strides4 yst = strides_of(y);
  for (int64_t first = 0; first < total; first += chunk) {
    const int64_t count = std::min(chunk, total - first);
    at::parallel_for(0, count, 8, [&](int64_t b, int64_t e) { kt->winograd_input(xp, p, m, first, count, vs, b, e); });
    at::parallel_for(0, a2 * ocblocks, 1, [&](int64_t b, int64_t e) {
      kt->winograd_gemm(vs, us, p, m, count, ms, b, e);
    });
    at::parallel_for(0, count, 8, [&](int64_t b, int64_t e) {
      kt->winograd_output(ms, p, m, first, count, ep, ys, yst, b, e);
    });
  }
}

template <class T>
void direct_forward(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, const Epilogue<T>& ep,
                    at::Tensor& y);

// y = epilogue(conv(x, w)); w is (OC, C / groups, KH, KW) contiguous. Padding may be negative
// (a crop) for the input-gradient convolutions.
template <class T>
void forward_into(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, const Epilogue<T>& ep,
                  at::Tensor& y, bool channels_last) {
  const auto* kt = select_kernels<T>();
  if (use_gemm1x1(p, channels_last) && x.is_contiguous() && y.is_contiguous()) {
    const at::Tensor wp = packed_weight(kt, w, p, false, kt->mr_nchw);
    const FwdPlan plan = gemm1x1_plan(kt, p);
    const T* xs = x.const_data_ptr<T>();
    const T* ws = wp.const_data_ptr<T>();
    T* ys = y.mutable_data_ptr<T>();
    at::parallel_for(0, p.N * p.groups * plan.row_chunks, 1, [&](int64_t b, int64_t e) {
      kt->forward_1x1_nchw(xs, ws, p, plan, ep, ys, b, e);
    });
    return;
  }
  // Few input channels, stride 1 along W, NCHW in and out (LeNet's first layer): pixels in
  // the lanes, read from a padded NCHW copy (tiny for so few channels).
  const ConvAlgo forced = forced_conv_algo();
  if (!channels_last && p.sw == 1 && y.is_contiguous() &&
      ((forced == ConvAlgo::Auto && p.icg() <= 4 && p.OW >= 8) || forced == ConvAlgo::NchwDirect)) {
    const at::Tensor xp = at::constant_pad_nd(x, {p.pl, p.pr, p.pt, p.pb}, 0).contiguous();
    const int64_t hp = xp.size(2), wpd = xp.size(3);
    const at::Tensor wp = packed_weight(kt, w, p, false, kt->mr_nchw);
    FwdPlan plan;
    plan.rows_per_task = std::clamp<int64_t>(ceil_div(1024, p.OW), 1, p.OH);
    plan.row_chunks = ceil_div(p.OH, plan.rows_per_task);
    const T* xs = xp.const_data_ptr<T>();
    const T* ws = wp.const_data_ptr<T>();
    T* ys = y.mutable_data_ptr<T>();
    at::parallel_for(0, p.N * p.groups * plan.row_chunks, 1, [&](int64_t b, int64_t e) {
      kt->forward_nchw_direct(xs, hp, wpd, ws, p, plan, ep, ys, b, e);
    });
    return;
  }
  int m = winograd_m(p);
  if (m != 0 && !all_finite<T>(x)) m = 0;
  // Channel-major (NCHW) output: scattering single floats from the output tiles cost up to
  // 25% (AlexNet conv2, K = 1600: 0.88x torch vs 1.13x channels_last); Winograd and direct
  // write channels-last scratch instead, transposed into y in 8 x 8 blocks with the residual
  // and ReLU applied there.
  const bool y_nchw = y.stride(1) != 1 && p.OC > 1;
  if (y_nchw) {
    at::Tensor scratch = at::empty({p.N, p.OH, p.OW, p.OC}, y.options());
    Epilogue<T> inner = ep;
    inner.residual = nullptr;
    inner.relu = false;
    at::Tensor view = scratch.permute({0, 3, 1, 2});
    if (m) {
      winograd_forward<T>(p, m, x, w, inner, view);
    } else {
      direct_forward<T>(p, x, w, inner, view);
    }
    const T* ss = scratch.const_data_ptr<T>();
    T* ys = y.mutable_data_ptr<T>();
    const Strides4 yst = strides_of(y);
    at::parallel_for(0, p.N * p.OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.OW * p.OC)),
                     [&](int64_t b, int64_t e) {
                       kt->unpack_nhwc(ss, p.OH, p.OW, p.OC, 0, 0, p.OH, p.OW, ys, yst, ep.residual, ep.rs,
                                       ep.relu, b, e);
                     });
    return;
  }
  if (m) {
    winograd_forward<T>(p, m, x, w, ep, y);
    return;
  }
  direct_forward<T>(p, x, w, ep, y);
}

template <class T>
void direct_forward(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, const Epilogue<T>& ep,
                    at::Tensor& y) {
  const auto* kt = select_kernels<T>();
  at::Tensor storage;
  const PaddedNhwc<T> xp = padded_nhwc<T>(kt, x, p.pt, p.pb, p.pl, p.pr, storage);
  const at::Tensor wp = packed_weight(kt, w, p, false, kt->nr);
  const FwdPlan plan = nhwc_plan(kt, p);
  const T* ws = wp.const_data_ptr<T>();
  T* ys = y.mutable_data_ptr<T>();
  const Strides4 yst = strides_of(y);
  at::parallel_for(0, plan.tasks(p), 1, [&](int64_t b, int64_t e) {
    kt->forward_nhwc(xp, ws, p, plan, ep, ys, yst, b, e);
  });
}

at::Tensor conv2d_fused_cpu(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift, const std::optional<at::Tensor>& residual,
                            bool relu, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_epilogue(op, p, input, bias, scale, shift, residual);
  if (is_reduced_precision(input)) {
    auto f = [](const std::optional<at::Tensor>& t) {
      return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
    };
    return conv2d_fused_cpu(input.to(at::kFloat), weight.to(at::kFloat), f(bias), f(scale), f(shift),
                            f(residual), relu, stride, padding, dilation, groups)
        .to(input.scalar_type());
  }
  const bool cl = wants_channels_last(input, weight);
  at::Tensor y = at::empty({p.N, p.OC, p.OH, p.OW},
                           input.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                            : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  const at::Tensor w = weight.contiguous();
  // One per-channel shift: bias * scale + shift (either part optional).
  at::Tensor shift_eff;
  if (bias.has_value()) shift_eff = scale.has_value() ? bias->mul(*scale) : *bias;
  if (shift.has_value()) shift_eff = shift_eff.defined() ? shift_eff.add(*shift) : *shift;
  if (shift_eff.defined()) shift_eff = shift_eff.contiguous();
  at::Tensor scale_c = scale.has_value() ? scale->contiguous() : at::Tensor();
  at::Tensor res = residual.has_value() ? residual->contiguous(y.suggest_memory_format()) : at::Tensor();
  const at::Tensor x = input;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_cpu", [&] {
    Epilogue<scalar_t> ep;
    ep.scale = scale_c.defined() ? scale_c.const_data_ptr<scalar_t>() : nullptr;
    ep.shift = shift_eff.defined() ? shift_eff.const_data_ptr<scalar_t>() : nullptr;
    if (res.defined()) {
      ep.residual = res.const_data_ptr<scalar_t>();
      ep.rs = strides_of(res);
    }
    ep.relu = relu;
    forward_into<scalar_t>(p, x, w, ep, y, cl);
  });
  return y;
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_cpu(input, weight, bias, std::nullopt, std::nullopt, std::nullopt, false, stride, padding,
                          dilation, groups);
}

template <class T>
void input_grad(const ConvParams& p, const at::Tensor& go, const at::Tensor& w, at::Tensor& gx) {
  const auto* kt = select_kernels<T>();
  // Roles swapped: the output gradient is the input of a convolution producing gx.
  ConvParams q = p;
  q.C = p.OC;
  q.H = p.OH;
  q.W = p.OW;
  q.OC = p.C;
  q.OH = p.H;
  q.OW = p.W;
  if (p.sh == 1 && p.sw == 1) {
    // A forward convolution of the output gradient with the flipped, transposed weight
    // (per group), so every forward algorithm (1x1 GEMM, Winograd, direct) serves it.
    q.pt = transposed_pad(p.pt, p.KH, p.dh);
    q.pb = transposed_pad(p.pb, p.KH, p.dh);
    q.pl = transposed_pad(p.pl, p.KW, p.dw);
    q.pr = transposed_pad(p.pr, p.KW, p.dw);
    const at::Tensor wt = w.view({p.groups, p.ocg(), p.icg(), p.KH, p.KW})
                              .transpose(1, 2)
                              .flip({3, 4})
                              .reshape({p.C, p.ocg(), p.KH, p.KW})
                              .contiguous();
    const Epilogue<T> ep;
    forward_into<T>(q, go, wt, ep, gx, !gx.is_contiguous());
    return;
  }
  // Strided: scatter into a padded NHWC buffer, then crop into gx.
  const int64_t hp = p.H + p.pt + p.pb, wpd = p.W + p.pl + p.pr;
  at::Tensor buf = at::empty({p.N * hp * wpd * p.C}, go.options());
  const at::Tensor wp = packed_weight(kt, w, p, true, kt->nr);
  const Strides4 gst = strides_of(go);
  const T* gs = go.const_data_ptr<T>();
  const T* ws = wp.const_data_ptr<T>();
  T* bs = buf.mutable_data_ptr<T>();
  const int64_t tasks = p.N * p.groups * ceil_div(p.icg(), kt->nr);
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    kt->input_grad_scatter(gs, gst, ws, p, bs, hp, wpd, b, e);
  });
  T* xs = gx.mutable_data_ptr<T>();
  const Strides4 xst = strides_of(gx);
  at::parallel_for(0, p.N * p.H, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.W * p.C)),
                   [&](int64_t b, int64_t e) {
                     kt->unpack_nhwc(bs, hp, wpd, p.C, p.pt, p.pl, p.H, p.W, xs, xst, nullptr, {}, false, b, e);
                   });
}

template <class T>
void weight_and_bias_grad(const ConvParams& p, const at::Tensor& go, const at::Tensor& x, at::Tensor* gw,
                          at::Tensor* gb) {
  const auto* kt = select_kernels<T>();
  const Strides4 gst = strides_of(go);
  const T* gs = go.const_data_ptr<T>();
  if (gw) {
    at::Tensor storage;
    const PaddedNhwc<T> xp = padded_nhwc<T>(kt, x, p.pt, p.pb, p.pl, p.pr, storage);
    T* out = gw->mutable_data_ptr<T>();
    at::parallel_for(0, kt->weight_grad_tiles(p), 1, [&](int64_t b, int64_t e) {
      kt->weight_grad(gs, gst, xp, p, out, b, e);
    });
  }
  if (gb) {
    T* out = gb->mutable_data_ptr<T>();
    at::parallel_for(0, p.OC, 16, [&](int64_t b, int64_t e) { kt->bias_grad(gs, gst, p, out, b, e); });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask) {
  const char* op = "conv2d_backward";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_grad_output(op, p, grad_output, input);
  if (is_reduced_precision(input)) {
    auto r = conv2d_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat),
                                 stride, padding, dilation, groups, mask);
    const auto t = input.scalar_type();
    return {std::get<0>(r).to(t), std::get<1>(r).to(t), std::get<2>(r).to(t)};
  }
  const bool cl = wants_channels_last(input, weight);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor gx = mask[0] ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options());
  at::Tensor gwb;  // (OC, KH, KW, ICg): the kernel's layout
  at::Tensor gb = mask[2] ? at::empty({p.OC}, input.options()) : at::empty({0}, input.options());
  if (mask[1]) gwb = at::empty({p.OC, p.KH, p.KW, p.icg()}, input.options());
  const bool empty = p.N == 0 || p.OC == 0 || input.numel() == 0;
  if (empty) {
    if (mask[0]) gx.zero_();
    if (mask[1]) gwb.zero_();
    if (mask[2]) gb.zero_();
  } else {
    const at::Tensor w = weight.contiguous();
    const at::Tensor g = grad_output.contiguous(fmt);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_backward_cpu", [&] {
      if (mask[0]) input_grad<scalar_t>(p, g, w, gx);
      if (mask[1] || mask[2])
        weight_and_bias_grad<scalar_t>(p, g, input, mask[1] ? &gwb : nullptr, mask[2] ? &gb : nullptr);
    });
  }
  at::Tensor gw = mask[1] ? gwb.permute({0, 3, 1, 2}).contiguous(weight.suggest_memory_format())
                          : at::empty({0}, input.options());
  return {gx, gw, gb};
}

}  // namespace
}  // namespace conv
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("conv2d", &fastconv::conv::conv2d_cpu);
  m.impl("conv2d_fused", &fastconv::conv::conv2d_fused_cpu);
  m.impl("conv2d_backward", &fastconv::conv::conv2d_backward_cpu);
}
