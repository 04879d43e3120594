// ATen glue for the CUDA pooling kernels (pool_cuda.cu): the CPU glue's argument checks
// (pool_shape_checks.h, same messages), compute on contiguous NCHW, and results with the
// sizes, dtypes and memory format the CPU ops (pool_cpu.cpp) return for the same input:
// channels_last in, channels_last out; 3-D (unbatched) input handled as a batch of one.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <climits>
#include <optional>
#include <tuple>

#include "../../common/cuda_glue.h"
#include "../../common/dispatch.h"
#include "pool_cuda.h"
#include "pool_shape_checks.h"

namespace fastconv {
namespace pool {
namespace {

// The kernels read raw device pointers, so every tensor must live where input does (the CPU
// ops have no such case to check).
void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": ", name, " must be on the device of input (",
                    input.device(), "), got ", t.device());
}

// The layout the CPU op computes in and returns: its input's suggested memory format, or
// contiguous for unbatched input (which gains a batch dimension of one meanwhile).
struct Layout {
  at::MemoryFormat format;
  bool unbatched;
};

Layout layout_of(const at::Tensor& input) {
  const bool unbatched = input.dim() == 3;
  return {unbatched ? at::MemoryFormat::Contiguous : input.suggest_memory_format(), unbatched};
}

// t as the kernels take it: 4-D, contiguous NCHW.
at::Tensor as_nchw(const at::Tensor& t, const Layout& l) {
  return (l.unbatched ? t.unsqueeze(0) : t).contiguous();
}

// A 4-D NCHW result, allocated in the layout the CPU op allocates its result in (so the
// strides match too), and 3-D again for unbatched input.
at::Tensor finish(const at::Tensor& out, const Layout& l) {
  at::Tensor r = out;
  if (l.format != at::MemoryFormat::Contiguous) {
    r = at::empty(out.sizes(), out.options().memory_format(l.format));
    r.copy_(out);
  }
  return l.unbatched ? r.squeeze(0) : r;
}

// --------------------------------------------------------------------------- max pooling

std::tuple<at::Tensor, at::Tensor> max_pool2d_impl(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode,
                                                   ArgmaxKind kind, const char* op) {
  const Pool2dParams p = check_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  if (is_reduced_precision(input)) {
    auto [out, indices] = max_pool2d_impl(widened(input), kernel_size, stride, padding, dilation,
                                          ceil_mode, kind, op);
    return {out.to(input.scalar_type()), indices};
  }
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  const at::Tensor x = as_nchw(input, l);
  at::Tensor out = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options());
  const bool compact = kind == ArgmaxKind::Compact && p.in_h * p.in_w <= INT32_MAX;
  at::Tensor indices;
  if (kind != ArgmaxKind::None) {
    indices = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options().dtype(compact ? at::kInt : at::kLong));
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool2d_forward_cuda", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (compact) {
      FASTCONV_CUDA_CHECK((cuda::max_pool2d_forward<scalar_t, int32_t>(in, o, indices.mutable_data_ptr<int32_t>(), p, stream)));
    } else {
      int64_t* ix = indices.defined() ? indices.mutable_data_ptr<int64_t>() : nullptr;
      FASTCONV_CUDA_CHECK((cuda::max_pool2d_forward<scalar_t, int64_t>(in, o, ix, p, stream)));
    }
  });
  return {finish(out, l), indices.defined() ? finish(indices, l) : indices};
}

// max_pool2d, max_pool2d_with_indices, max_pool2d_with_argmax.
using MaxPool2dCuda = MaxPool2dOps<max_pool2d_impl>;

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const Pool2dParams p = check_max_pool2d_backward(op, grad_output, input, indices, kernel_size, stride, padding,
                                                   dilation, ceil_mode);
  if (is_reduced_precision(input)) {
    return max_pool2d_backward_cuda(widened(grad_output), widened(input), indices, kernel_size, stride,
                                    padding, dilation, ceil_mode).to(input.scalar_type());
  }
  check_indices_dtype(op, indices);
  check_same_device(op, "grad_output", grad_output, input);
  check_same_device(op, "indices", indices, input);
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  const at::Tensor go = as_nchw(grad_output, l);
  const at::Tensor ix = as_nchw(indices, l);
  at::Tensor grad_input = at::empty({p.batch, p.channels, p.in_h, p.in_w}, go.options());
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "max_pool2d_backward_cuda", [&] {
    const scalar_t* g = go.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    if (ix.scalar_type() == at::kInt) {
      FASTCONV_CUDA_CHECK((cuda::max_pool2d_backward<scalar_t, int32_t>(g, ix.const_data_ptr<int32_t>(), gi, p, stream)));
    } else {
      FASTCONV_CUDA_CHECK((cuda::max_pool2d_backward<scalar_t, int64_t>(g, ix.const_data_ptr<int64_t>(), gi, p, stream)));
    }
  });
  return finish(grad_input, l);
}

// --------------------------------------------------------------------------- average pooling

at::Tensor avg_pool2d_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  const Pool2dParams p = check_avg_pool2d("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor_override);
  if (is_reduced_precision(input)) {
    return avg_pool2d_cuda(widened(input), kernel_size, stride, padding, ceil_mode, count_include_pad,
                           divisor_override).to(input.scalar_type());
  }
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  const at::Tensor x = as_nchw(input, l);
  at::Tensor out = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "avg_pool2d_forward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::avg_pool2d_forward<scalar_t>(x.const_data_ptr<scalar_t>(),
                                                           out.mutable_data_ptr<scalar_t>(), p, stream));
  });
  return finish(out, l);
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                    std::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  const Pool2dParams p = check_avg_pool2d_backward(op, grad_output, input, kernel_size, stride, padding, ceil_mode,
                                                   count_include_pad, divisor_override);
  if (is_reduced_precision(input)) {
    return avg_pool2d_backward_cuda(widened(grad_output), widened(input), kernel_size, stride, padding,
                                    ceil_mode, count_include_pad, divisor_override).to(input.scalar_type());
  }
  check_same_device(op, "grad_output", grad_output, input);
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  const at::Tensor go = as_nchw(grad_output, l);
  at::Tensor grad_input = at::empty({p.batch, p.channels, p.in_h, p.in_w}, go.options());
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "avg_pool2d_backward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::avg_pool2d_backward<scalar_t>(go.const_data_ptr<scalar_t>(),
                                                            grad_input.mutable_data_ptr<scalar_t>(), p, stream));
  });
  return finish(grad_input, l);
}

// --------------------------------------------------------------------------- adaptive average

at::Tensor adaptive_avg_pool2d_cuda(const at::Tensor& input, at::IntArrayRef output_size) {
  const Pool2dParams p = check_adaptive_avg_pool2d("adaptive_avg_pool2d", input, output_size);
  if (is_reduced_precision(input)) {
    return adaptive_avg_pool2d_cuda(widened(input), output_size).to(input.scalar_type());
  }
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  const at::Tensor x = as_nchw(input, l);
  at::Tensor out = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adaptive_avg_pool2d_forward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::adaptive_avg_pool2d_forward<scalar_t>(x.const_data_ptr<scalar_t>(),
                                                                    out.mutable_data_ptr<scalar_t>(), p, stream));
  });
  return finish(out, l);
}

at::Tensor adaptive_avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input) {
  const char* op = "adaptive_avg_pool2d_backward";
  const Pool2dParams p = check_adaptive_avg_pool2d_backward(op, grad_output, input);
  if (is_reduced_precision(input)) {
    return adaptive_avg_pool2d_backward_cuda(widened(grad_output), widened(input)).to(input.scalar_type());
  }
  check_same_device(op, "grad_output", grad_output, input);
  FASTCONV_DEVICE_GUARD(input);
  const cudaStream_t stream = FASTCONV_CUDA_STREAM();
  const Layout l = layout_of(input);
  if (grad_output.numel() == 0) {
    return finish(at::zeros({p.batch, p.channels, p.in_h, p.in_w}, input.options()), l);
  }
  const at::Tensor go = as_nchw(grad_output, l);
  at::Tensor grad_input = at::empty({p.batch, p.channels, p.in_h, p.in_w}, go.options());
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "adaptive_avg_pool2d_backward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::adaptive_avg_pool2d_backward<scalar_t>(go.const_data_ptr<scalar_t>(),
                                                                     grad_input.mutable_data_ptr<scalar_t>(), p, stream));
  });
  return finish(grad_input, l);
}

}  // namespace
}  // namespace pool
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  using namespace fastconv::pool;
  m.impl("max_pool2d", &MaxPool2dCuda::max_pool2d);
  m.impl("max_pool2d_with_indices", &MaxPool2dCuda::max_pool2d_with_indices);
  m.impl("max_pool2d_with_argmax", &MaxPool2dCuda::max_pool2d_with_argmax);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cuda);
  m.impl("avg_pool2d", &avg_pool2d_cuda);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward_cuda);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d_cuda);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward_cuda);
}
