// ATen glue for the CPU LRN kernels: checks, layout, work split, CPU registrations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>

#include "../../common/dispatch.h"
#include "lrn_checks.h"
#include "lrn_kernels.h"

namespace fastconv {
namespace lrn {
namespace {

template <class T>
const LrnKernels<T>* select_kernels();

template <>
const LrnKernels<float>* select_kernels<float>() {
  return pick_kernels(lrn_kernels_avx512_float(), lrn_kernels_avx2_float(), lrn_kernels_default_float());
}

template <>
const LrnKernels<double>* select_kernels<double>() {
  return pick_kernels(lrn_kernels_avx512_double(), lrn_kernels_avx2_double(), lrn_kernels_default_double());
}

// An image's LRN touches C * inner elements; split the batch so each task has some work.
void parallel_over_images(const LrnParams& p, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t per_image = std::max<int64_t>(1, p.channels * p.inner);
  at::parallel_for(0, p.batch, std::max<int64_t>(1, (int64_t(1) << 15) / per_image), body);
}

at::Tensor local_response_norm_cpu(const at::Tensor& input, int64_t size, double alpha, double beta,
                                   double k) {
  const LrnParams p = check_lrn("local_response_norm", input, size, alpha, beta, k);
  if (is_reduced_precision(input)) {
    // Computed in float32 and rounded once, like torch's own kernels for these types.
    return local_response_norm_cpu(input.to(at::kFloat), size, alpha, beta, k).to(input.scalar_type());
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  at::Tensor y = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_response_norm_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    scalar_t* ys = y.mutable_data_ptr<scalar_t>();
    auto fn = cl ? kt->fwd_channels_last : kt->fwd_channels_first;
    parallel_over_images(p, [&](int64_t b, int64_t e) { fn(xs, ys, p, b, e); });
  });
  return y;
}

at::Tensor local_response_norm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            int64_t size, double alpha, double beta, double k) {
  const char* op = "local_response_norm_backward";
  const LrnParams p = check_lrn(op, input, size, alpha, beta, k);
  check_grad_output(op, grad_output, input);
  if (is_reduced_precision(input)) {
    return local_response_norm_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat), size,
                                            alpha, beta, k).to(input.scalar_type());
  }
  const bool cl = channels_last(input);
  const at::MemoryFormat fmt = format_of(input);
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor g = grad_output.contiguous(fmt);
  at::Tensor gx = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_response_norm_backward_cpu", [&] {
    const auto* kt = select_kernels<scalar_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* gs = g.const_data_ptr<scalar_t>();
    scalar_t* gxs = gx.mutable_data_ptr<scalar_t>();
    auto fn = cl ? kt->bwd_channels_last : kt->bwd_channels_first;
    parallel_over_images(p, [&](int64_t b, int64_t e) { fn(gs, xs, gxs, p, b, e); });
  });
  return gx;
}

}  // namespace
}  // namespace lrn
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("local_response_norm", &fastconv::lrn::local_response_norm_cpu);
  m.impl("local_response_norm_backward", &fastconv::lrn::local_response_norm_backward_cpu);
}
