// LRN argument checks and the output-layout rule, shared by the CPU and CUDA glue (lrn_cpu.cpp,
// lrn_cuda_glue.cpp) so both reject the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "lrn_math.h"

namespace fastconv {
namespace lrn {

inline LrnParams check_lrn(const char* op, const at::Tensor& input, int64_t size, double alpha, double beta,
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

inline void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input) {
  TORCH_CHECK_VALUE(grad_output.sizes() == input.sizes(), op, ": grad_output must have shape ",
                    input.sizes(), ", got ", grad_output.sizes());
  TORCH_CHECK_VALUE(grad_output.scalar_type() == input.scalar_type(), op,
                    ": grad_output must have the dtype of input (", input.scalar_type(), "), got ",
                    grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == input.device(), op, ": grad_output must be on the device of input (",
                    input.device(), "), got ", grad_output.device());
}

inline bool channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// The CPU op keeps a 4-D channels_last input's layout for its output; anything else is
// computed and returned contiguous.
inline at::MemoryFormat format_of(const at::Tensor& input) {
  return channels_last(input) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace lrn
}  // namespace fastconv
