// Picking a kernel table for the SIMD path in use, and other glue shared by the ops' ATen
// files (torch headers allowed here; kernel files never include this).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "cpu_capability.h"

namespace fastconv {

// The table of the current path (FASTCONV_CPU_CAPABILITY / set_cpu_capability / CPUID).
template <class Table>
const Table* pick_kernels(const Table* avx512, const Table* avx2, const Table* portable) {
  switch (current_cpu_capability()) {
    case CpuCapability::AVX512: return avx512;
    case CpuCapability::AVX2: return avx2;
    default: return portable;
  }
}

// bfloat16 / float16 inputs are computed in float32 and rounded back once, like torch's own
// CPU kernels for those types.
inline bool is_reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

// An optional tensor argument as a tensor, undefined when absent.
inline const at::Tensor& value_or_undefined(const std::optional<at::Tensor>& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

// An optional argument in float32 for the reduced-precision path (absent stays absent).
inline std::optional<at::Tensor> opt_float(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t.to(at::kFloat)) : std::nullopt;
}

// 4-D activations (N, C, H, W): channels_last as torch suggests it, and the layout the ops give
// an activation-shaped output computed from `t`.
inline bool channels_last(const at::Tensor& t) { return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast; }

inline at::MemoryFormat format_of(const at::Tensor& t) {
  return channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// `name` has the shape, dtype and device of input (`like`).
inline void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), op, ": ", name, " must have the shape of input ", like.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of input (",
                    like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on the device of input (",
                    like.device(), "), got ", t.device());
}

}  // namespace fastconv
