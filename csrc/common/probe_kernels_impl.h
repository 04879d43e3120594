// Probe loops, compiled per ISA (see probe_kernels_<isa>.cpp).
#pragma once

#include <cstdint>

#include "probe.h"
#include "simd.h"

namespace fastconv {
namespace FASTCONV_CPU_NS {
namespace {

// 12 independent accumulators cover FMA latency (4 cycles) x 2 pipes with room to spare.
constexpr int kChains = 12;

float fma_loop(int64_t iters, double* flops) {
#if defined(__AVX512F__)
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  *flops = 2.0 * 16 * kChains * double(iters);
  return _mm512_reduce_add_ps(s);
#elif defined(__AVX2__)
  __m256 acc[kChains];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(float(i));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  *flops = 2.0 * 8 * kChains * double(iters);
  return FloatSimd::reduce_add(s);
#else
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = float(i);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < kChains; ++i) s += acc[i];
  *flops = 2.0 * kChains * double(iters);
  return s;
#endif
}

void copy_floats(const float* src, float* dst, int64_t n) {
  using S = FloatSimd;
  int64_t i = 0;
  for (; i + S::W <= n; i += S::W) S::store_n(dst + i, S::load_n(src + i, S::W), S::W);
  for (; i < n; ++i) dst[i] = src[i];
}

}  // namespace
}  // namespace FASTCONV_CPU_NS

namespace probe {
#define FASTCONV_PROBE_CAT_(a, b) a##_##b
#define FASTCONV_PROBE_CAT(a, b) FASTCONV_PROBE_CAT_(a, b)
float FASTCONV_PROBE_CAT(fma_loop, FASTCONV_ISA_NAME)(int64_t iters, double* flops) {
  return FASTCONV_CPU_NS::fma_loop(iters, flops);
}
void FASTCONV_PROBE_CAT(copy_floats, FASTCONV_ISA_NAME)(const float* src, float* dst, int64_t n) {
  FASTCONV_CPU_NS::copy_floats(src, dst, n);
}
}  // namespace probe
}  // namespace fastconv
