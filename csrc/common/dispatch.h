// Picking a kernel table for the SIMD path in use, and other glue shared by the ops' ATen
// files (torch headers allowed here; kernel files never include this).
#pragma once

#include <ATen/ATen.h>

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

}  // namespace fastconv
