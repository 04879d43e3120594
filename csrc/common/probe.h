// Machine probes for the benchmark roofline: FP32 FMA peak and copy bandwidth, measured with
// our own loops on the current SIMD path.
#pragma once

#include <cstdint>

namespace fastconv {

double probe_fma_gflops(int64_t threads);
double probe_copy_gbps(int64_t nbytes, int64_t threads);

// Per-ISA loops (probe_kernels_<isa>.cpp). fma_loop runs `iters` rounds of independent FMA
// chains and returns a checksum so the work cannot be optimised away; *flops receives the
// count of floating-point operations done.
namespace probe {
float fma_loop_avx512(int64_t iters, double* flops);
float fma_loop_avx2(int64_t iters, double* flops);
float fma_loop_default(int64_t iters, double* flops);
void copy_floats_avx512(const float* src, float* dst, int64_t n);
void copy_floats_avx2(const float* src, float* dst, int64_t n);
void copy_floats_default(const float* src, float* dst, int64_t n);
}  // namespace probe

}  // namespace fastconv
