// ATen glue for the CUDA LRN kernels: the CPU glue's checks and messages (lrn_cpu.cpp),
// contiguous channels-first inputs for the kernels, outputs in the CPU op's layout.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../common/cuda_glue.h"
#include "lrn_cuda.h"

namespace fastconv {
namespace lrn {
namespace {

LrnParams check_lrn_cuda(const char* op, const at::Tensor& input, int64_t size, double alpha, double beta,
                         double k) {
  TORCH_CHECK_VALUE(input.dim() >= 3, op, ": input must have 3 or more dimensions (N, C, ...), got ",
                    input.dim(), " (shape ", input.sizes(), ")");
  TORCH_CHECK_VALUE(size >= 1, op, ": size must be >= 1, got ", size);
  const auto t = input.scalar_type();
  TORCH_CHECK_VALUE(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
                    ": input must be float32, float64, bfloat16 or float16, got ", t);
  LrnParams p;
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.inner = input.numel() == 0 ? 0 : input.numel() / (p.batch * p.channels);
  p.size = size;
  p.alpha = alpha;
  p.beta = beta;
  p.k = k;
  return p;
}

bool reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

// The CPU op keeps a 4-D channels_last input's layout for its output; the kernels work on
// contiguous channels-first data, so that output is written back in the input's format.
at::MemoryFormat output_format(const at::Tensor& input) {
  return input.dim() == 4 && input.suggest_memory_format() == at::MemoryFormat::ChannelsLast
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

at::Tensor in_format(const at::Tensor& t, at::MemoryFormat fmt) {
  if (fmt == at::MemoryFormat::Contiguous) return t;
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(fmt));
  out.copy_(t);
  return out;
}

at::Tensor local_response_norm_cuda(const at::Tensor& input, int64_t size, double alpha, double beta, double k) {
  const LrnParams p = check_lrn_cuda("local_response_norm", input, size, alpha, beta, k);
  if (reduced_precision(input)) {
    // Computed in float32 and rounded once, as the CPU op does.
    return local_response_norm_cuda(input.to(at::kFloat), size, alpha, beta, k).to(input.scalar_type());
  }
  const at::MemoryFormat fmt = output_format(input);
  if (input.numel() == 0) return at::empty(input.sizes(), input.options().memory_format(fmt));
  FASTCONV_DEVICE_GUARD(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  cudaStream_t stream = FASTCONV_CUDA_STREAM();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_response_norm_cuda", [&] {
    FASTCONV_CUDA_CHECK(cuda::lrn_forward<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                                    p, stream));
  });
  return in_format(y, fmt);
}

at::Tensor local_response_norm_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, int64_t size,
                                             double alpha, double beta, double k) {
  const char* op = "local_response_norm_backward";
  const LrnParams p = check_lrn_cuda(op, input, size, alpha, beta, k);
  TORCH_CHECK_VALUE(grad_output.sizes() == input.sizes(), op, ": grad_output must have shape ", input.sizes(),
                    ", got ", grad_output.sizes());
  TORCH_CHECK_VALUE(grad_output.scalar_type() == input.scalar_type(), op,
                    ": grad_output must have the dtype of input (", input.scalar_type(), "), got ",
                    grad_output.scalar_type());
  if (reduced_precision(input)) {
    return local_response_norm_backward_cuda(grad_output.to(at::kFloat), input.to(at::kFloat), size, alpha, beta,
                                             k)
        .to(input.scalar_type());
  }
  const at::MemoryFormat fmt = output_format(input);
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
  return in_format(gx, fmt);
}

}  // namespace
}  // namespace lrn
}  // namespace fastconv

TORCH_LIBRARY_IMPL(FASTCONV_CUDA_LIB, FASTCONV_CUDA_KEY, m) {
  m.impl("local_response_norm", &fastconv::lrn::local_response_norm_cuda);
  m.impl("local_response_norm_backward", &fastconv::lrn::local_response_norm_backward_cuda);
}
