// ATen glue for the CPU pooling kernels: argument checks (the one place they live for the
// real path), memory-format handling, work splitting with at::parallel_for, and the CPU
// registrations. The arithmetic lives in pool_kernels_impl.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <optional>

#include "../../common/dispatch.h"
#include "../../common/streaming.h"
#include "pool_kernels.h"
#include "pool_shape_checks.h"

namespace fastconv {
namespace pool {
namespace {

// The SIMD paths track argmax indices in int32 lanes, so a plane of 2^31 or more cells takes
// the portable kernels, whose indices are int64.
template <class T>
const PoolKernels<T>* select_kernels(int64_t plane_cells);

template <>
const PoolKernels<float>* select_kernels<float>(int64_t plane_cells) {
  if (plane_cells > INT32_MAX) return pool_kernels_default_float();
  return pick_kernels(pool_kernels_avx512_float(), pool_kernels_avx2_float(), pool_kernels_default_float());
}

template <>
const PoolKernels<double>* select_kernels<double>(int64_t plane_cells) {
  if (plane_cells > INT32_MAX) return pool_kernels_default_double();
  return pick_kernels(pool_kernels_avx512_double(), pool_kernels_avx2_double(), pool_kernels_default_double());
}

// Splits [0, units) so that each task touches at least ~64 KiB, keeping tiny planes from
// paying a task each.
void parallel_over(int64_t units, int64_t bytes_per_unit,
                   const std::function<void(int64_t, int64_t)>& body) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, bytes_per_unit));
  at::parallel_for(0, units, grain, body);
}

struct Prepared {
  at::Tensor input;  // 4-D, contiguous in `format`
  at::MemoryFormat format;
  bool unbatched;
};

Prepared prepare_input(const at::Tensor& input) {
  const bool unbatched = input.dim() == 3;
  at::Tensor x = unbatched ? input.unsqueeze(0) : input;
  const at::MemoryFormat format =
      unbatched ? at::MemoryFormat::Contiguous : x.suggest_memory_format();
  return {x.contiguous(format), format, unbatched};
}

at::Tensor finish(const at::Tensor& out, bool unbatched) {
  return unbatched ? out.squeeze(0) : out;
}

at::Tensor empty_like_format(at::IntArrayRef sizes, const at::TensorOptions& options,
                             at::MemoryFormat format) {
  return at::empty(sizes, options.memory_format(format));
}

Pool2dParams with_streaming(Pool2dParams p, int64_t output_bytes) {
  p.stream_output = streams_past_caches(output_bytes);
  return p;
}

// --------------------------------------------------------------------------- max pooling

template <class scalar_t, class I>
void run_max_forward(const Prepared& x, const Pool2dParams& p, at::Tensor& out, I* ix,
                     void (*const nchw)(const scalar_t*, scalar_t*, I*, const Pool2dParams&, int64_t, int64_t),
                     void (*const nhwc)(const scalar_t*, scalar_t*, I*, const Pool2dParams&, int64_t, int64_t)) {
  const scalar_t* in = x.input.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  if (x.format == at::MemoryFormat::ChannelsLast) {
    const int64_t row_bytes = p.stride_h * p.in_w * p.channels * sizeof(scalar_t);
    parallel_over(p.batch * p.out_h, row_bytes, [&](int64_t b, int64_t e) { nhwc(in, o, ix, p, b, e); });
  } else {
    parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                  [&](int64_t b, int64_t e) { nchw(in, o, ix, p, b, e); });
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_impl(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode,
                                                   ArgmaxKind kind, const char* op) {
  const Pool2dParams p0 = check_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  if (is_reduced_precision(input)) {
    auto [out, indices] = max_pool2d_impl(widened(input), kernel_size, stride, padding, dilation,
                                          ceil_mode, kind, op);
    return {out.to(input.scalar_type()), indices};
  }
  Prepared x = prepare_input(input);
  at::Tensor out = empty_like_format({p0.batch, p0.channels, p0.out_h, p0.out_w}, x.input.options(), x.format);
  const bool compact = kind == ArgmaxKind::Compact && p0.in_h * p0.in_w <= INT32_MAX;
  at::Tensor indices;
  if (kind != ArgmaxKind::None) {
    indices = empty_like_format({p0.batch, p0.channels, p0.out_h, p0.out_w},
                                x.input.options().dtype(compact ? at::kInt : at::kLong), x.format);
  }
  const Pool2dParams p = with_streaming(p0, out.nbytes() + (indices.defined() ? indices.nbytes() : 0));
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "max_pool2d_forward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    if (compact) {
      run_max_forward<scalar_t, int32_t>(x, p, out, indices.mutable_data_ptr<int32_t>(),
                                         k->max_fwd_nchw_i32, k->max_fwd_nhwc_i32);
    } else {
      run_max_forward<scalar_t, int64_t>(x, p, out,
                                         indices.defined() ? indices.mutable_data_ptr<int64_t>() : nullptr,
                                         k->max_fwd_nchw, k->max_fwd_nhwc);
    }
  });
  return {finish(out, x.unbatched), indices.defined() ? finish(indices, x.unbatched) : indices};
}

// max_pool2d, max_pool2d_with_indices, max_pool2d_with_argmax.
using MaxPool2dCpu = MaxPool2dOps<max_pool2d_impl>;

template <class scalar_t, class I>
void run_max_backward(const Prepared& x, const Pool2dParams& p, const at::Tensor& go, const at::Tensor& ix,
                      at::Tensor& grad_input,
                      void (*const nchw)(const scalar_t*, const I*, scalar_t*, const Pool2dParams&, int64_t, int64_t),
                      void (*const nhwc)(const scalar_t*, const I*, scalar_t*, const Pool2dParams&, int64_t, int64_t),
                      void (*const nhwc_scatter)(const scalar_t*, const I*, scalar_t*, const Pool2dParams&, int64_t, int64_t)) {
  const scalar_t* g = go.const_data_ptr<scalar_t>();
  const I* idx = ix.const_data_ptr<I>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  if (x.format == at::MemoryFormat::ChannelsLast && has_empty_max_window(p)) {
    parallel_over(p.batch, p.in_h * p.in_w * p.channels * sizeof(scalar_t),
                  [&](int64_t b, int64_t e) { nhwc_scatter(g, idx, gi, p, b, e); });
  } else if (x.format == at::MemoryFormat::ChannelsLast) {
    parallel_over(p.batch * p.in_h, p.in_w * p.channels * sizeof(scalar_t),
                  [&](int64_t b, int64_t e) { nhwc(g, idx, gi, p, b, e); });
  } else {
    parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                  [&](int64_t b, int64_t e) { nchw(g, idx, gi, p, b, e); });
  }
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& indices, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const Pool2dParams p0 = check_max_pool2d_backward(op, grad_output, input, indices, kernel_size, stride, padding,
                                                    dilation, ceil_mode);
  if (is_reduced_precision(input)) {
    return max_pool2d_backward_cpu(widened(grad_output), widened(input), indices, kernel_size, stride,
                                   padding, dilation, ceil_mode).to(input.scalar_type());
  }
  check_indices_dtype(op, indices);
  Prepared x = prepare_input(input);
  const at::Tensor go = (x.unbatched ? grad_output.unsqueeze(0) : grad_output).contiguous(x.format);
  const at::Tensor ix = (x.unbatched ? indices.unsqueeze(0) : indices).contiguous(x.format);
  at::Tensor grad_input = empty_like_format(x.input.sizes(), x.input.options(), x.format);
  const Pool2dParams p = with_streaming(p0, grad_input.nbytes());
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "max_pool2d_backward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    if (ix.scalar_type() == at::kInt) {
      run_max_backward<scalar_t, int32_t>(x, p, go, ix, grad_input, k->max_bwd_nchw_i32,
                                          k->max_bwd_nhwc_i32, k->max_bwd_nhwc_scatter_i32);
    } else {
      run_max_backward<scalar_t, int64_t>(x, p, go, ix, grad_input, k->max_bwd_nchw, k->max_bwd_nhwc,
                                          k->max_bwd_nhwc_scatter);
    }
  });
  return finish(grad_input, x.unbatched);
}

// --------------------------------------------------------------------------- average pooling

at::Tensor avg_pool2d_cpu(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                          std::optional<int64_t> divisor_override) {
  const Pool2dParams p0 = check_avg_pool2d("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override);
  if (is_reduced_precision(input)) {
    return avg_pool2d_cpu(widened(input), kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override).to(input.scalar_type());
  }
  Prepared x = prepare_input(input);
  at::Tensor out = empty_like_format({p0.batch, p0.channels, p0.out_h, p0.out_w}, x.input.options(), x.format);
  const Pool2dParams p = with_streaming(p0, out.nbytes());
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "avg_pool2d_forward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    const scalar_t* in = x.input.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (x.format == at::MemoryFormat::ChannelsLast) {
      const int64_t row_bytes = p.stride_h * p.in_w * p.channels * sizeof(scalar_t);
      parallel_over(p.batch * p.out_h, row_bytes,
                    [&](int64_t b, int64_t e) { k->avg_fwd_nhwc(in, o, p, b, e); });
    } else {
      parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->avg_fwd_nchw(in, o, p, b, e); });
    }
  });
  return finish(out, x.unbatched);
}

at::Tensor avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                   std::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  const Pool2dParams p0 = check_avg_pool2d_backward(op, grad_output, input, kernel_size, stride, padding, ceil_mode,
                                                    count_include_pad, divisor_override);
  if (is_reduced_precision(input)) {
    return avg_pool2d_backward_cpu(widened(grad_output), widened(input), kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override).to(input.scalar_type());
  }
  Prepared x = prepare_input(input);
  const at::Tensor go = (x.unbatched ? grad_output.unsqueeze(0) : grad_output).contiguous(x.format);
  at::Tensor grad_input = empty_like_format(x.input.sizes(), x.input.options(), x.format);
  const Pool2dParams p = with_streaming(p0, grad_input.nbytes());
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "avg_pool2d_backward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    const scalar_t* g = go.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    if (x.format == at::MemoryFormat::ChannelsLast) {
      parallel_over(p.batch * p.in_h, p.in_w * p.channels * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->avg_bwd_nhwc(g, gi, p, b, e); });
    } else {
      parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->avg_bwd_nchw(g, gi, p, b, e); });
    }
  });
  return finish(grad_input, x.unbatched);
}

// --------------------------------------------------------------------------- adaptive average

at::Tensor adaptive_avg_pool2d_cpu(const at::Tensor& input, at::IntArrayRef output_size) {
  const Pool2dParams p = check_adaptive_avg_pool2d("adaptive_avg_pool2d", input, output_size);
  if (is_reduced_precision(input)) {
    return adaptive_avg_pool2d_cpu(widened(input), output_size).to(input.scalar_type());
  }
  Prepared x = prepare_input(input);
  at::Tensor out = empty_like_format({p.batch, p.channels, p.out_h, p.out_w}, x.input.options(), x.format);
  if (out.numel() == 0) return finish(out, x.unbatched);
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "adaptive_avg_pool2d_forward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    const scalar_t* in = x.input.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (x.format == at::MemoryFormat::ChannelsLast) {
      parallel_over(p.batch, p.in_h * p.in_w * p.channels * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->adaptive_avg_fwd_nhwc(in, o, p, b, e); });
    } else {
      parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->adaptive_avg_fwd_nchw(in, o, p, b, e); });
    }
  });
  return finish(out, x.unbatched);
}

at::Tensor adaptive_avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input) {
  const char* op = "adaptive_avg_pool2d_backward";
  const Pool2dParams p = check_adaptive_avg_pool2d_backward(op, grad_output, input);
  if (is_reduced_precision(input)) {
    return adaptive_avg_pool2d_backward_cpu(widened(grad_output), widened(input)).to(input.scalar_type());
  }
  Prepared x = prepare_input(input);
  const at::Tensor go = (x.unbatched ? grad_output.unsqueeze(0) : grad_output).contiguous(x.format);
  at::Tensor grad_input = empty_like_format(x.input.sizes(), x.input.options(), x.format);
  if (go.numel() == 0) return finish(grad_input.zero_(), x.unbatched);
  AT_DISPATCH_FLOATING_TYPES(x.input.scalar_type(), "adaptive_avg_pool2d_backward_cpu", [&] {
    const auto* k = select_kernels<scalar_t>(p.in_h * p.in_w);
    const scalar_t* g = go.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    if (x.format == at::MemoryFormat::ChannelsLast) {
      parallel_over(p.batch, p.in_h * p.in_w * p.channels * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->adaptive_avg_bwd_nhwc(g, gi, p, b, e); });
    } else {
      parallel_over(p.batch * p.channels, p.in_h * p.in_w * sizeof(scalar_t),
                    [&](int64_t b, int64_t e) { k->adaptive_avg_bwd_nchw(g, gi, p, b, e); });
    }
  });
  return finish(grad_input, x.unbatched);
}

}  // namespace
}  // namespace pool
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  using namespace fastconv::pool;
  m.impl("max_pool2d", &MaxPool2dCpu::max_pool2d);
  m.impl("max_pool2d_with_indices", &MaxPool2dCpu::max_pool2d_with_indices);
  m.impl("max_pool2d_with_argmax", &MaxPool2dCpu::max_pool2d_with_argmax);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
  m.impl("avg_pool2d", &avg_pool2d_cpu);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward_cpu);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d_cpu);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward_cpu);
}
