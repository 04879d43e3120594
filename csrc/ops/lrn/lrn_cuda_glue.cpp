// ATen glue for the CUDA LRN kernels: the CPU glue's checks and messages (lrn_checks.h),
// contiguous channels-first inputs for the kernels, outputs in the CPU op's layout (written
// back from the kernels' contiguous channels-first results).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../common/cuda_glue.h"
#include "../../common/dispatch.h"
#include "lrn_checks.h"
#include "lrn_cuda.h"

namespace fastconv {
namespace lrn {
namespace {

at::Tensor local_response_norm_cuda(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const LrnParams p = check_lrn("local_response_norm", input, size, alpha, beta, k);
  if (is_reduced_precision(input)) {
    // Computed in float32 and rounded once, as the CPU op does.
    return local_response_norm_cuda(input.to(at::kFloat), size, alpha, beta, k).to(input.scalar_type());
  }
  const at::MemoryFormat fmt = format_of(input);
  if (input.numel() == 0) return at::empty(input.sizes(), input.options().memory_format(fmt));
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_response_norm_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::lrn_forward<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                                    p, stream));
  });
  return in_memory_format(y, fmt);
}

at::Tensor local_response_norm_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size,
                                             double alpha, double beta, double k) {
  const char* op = "local_response_norm_backward";
  const LrnParams p = check_lrn(op, input, size, alpha, beta, k);
  check_grad_output(op, grad_output, input);
  if (is_reduced_precision(input)) {
    return local_response_norm_backward_cuda(grad_output.to(at::kFloat), input.to(at::kFloat), size, alpha, beta,
                                             k)
        .to(input.scalar_type());
  }
  const at::MemoryFormat fmt = format_of(input);
  if (input.numel() == 0) return at::empty(input.sizes(), input.options().memory_format(fmt));
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  const at::Tensor g = grad_output.contiguous();
  at::Tensor gx = at::empty(input.sizes(), input.options());
  at::Tensor u = at::empty(input.sizes(), input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_response_norm_backward_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::lrn_backward<scalar_t>(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                                     gx.mutable_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>(),
                                                     p, stream));
  });
  return in_memory_format(gx, fmt);
}

}  // namespace
}  // namespace lrn
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  m.impl("local_response_norm", &fastconv::lrn::local_response_norm_cuda);
  m.impl("local_response_norm_backward", &fastconv::lrn::local_response_norm_backward_cuda);
}
