// A thin SIMD layer for the per-ISA kernel translation units (no torch headers).
//
// Each *_avx512.cpp / *_avx2.cpp / *_default.cpp file defines FASTCONV_CPU_NS before including
// kernel code, so every inline function and template below lands in a namespace of its own
// per ISA: the linker can never merge an AVX-512 instantiation into the portable path.
//
// Kernels are written once against the `Simd<T>` interface: W lanes, loads/stores of the
// first n lanes (masked, so they never touch memory past the end of a row), strided loads for
// pooling windows, a lane mask type and an int32 index vector for argmax tracking.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef FASTCONV_CPU_NS
#error "define FASTCONV_CPU_NS (avx512 / avx2 / portable) before including simd.h"
#endif

namespace fastconv {
namespace FASTCONV_CPU_NS {

// One lane: the portable path, and the float64 path on every ISA (float64 is for
// verification and gradcheck, where throughput does not matter).
template <class T>
struct ScalarSimd {
  using V = T;
  using M = bool;
  using VI = int64_t;
  static constexpr int W = 1;
  static V zero() { return T(0); }
  static V set1(T x) { return x; }
  static V load_n(const T* p, int) { return *p; }
  static V load_strided_n(const T* p, int64_t, int) { return *p; }
  static V load_strided_range(const T* p, int64_t, int a, int b, T fill) { return a < b ? *p : fill; }
  static V load_strided_full(const T* p, int64_t) { return *p; }
  static M range_mask(int a, int b) { return a <= 0 && b > 0; }
  static M mandnot(M m, M not_this) { return m && !not_this; }
  static M mand(M a, M b) { return a && b; }
  static void store_n(T* p, V v, int) { *p = v; }
  static void store_range(T* p, V v, int a, int b) {
    if (a <= 0 && b > 0) *p = v;
  }
  static V add(V a, V b) { return a + b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static V sqrt(V a) {
    if constexpr (sizeof(T) == sizeof(float)) return __builtin_sqrtf(a); else return __builtin_sqrt(a);
  }
  static V sub(V a, V b) { return a - b; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V rsqrt(V a) { return T(1) / sqrt(a); }
  static M is_nan(V a) { return a != a; }
  static M gt(V a, V b) { return a > b; }
  static M mor(M a, M b) { return a || b; }
  static V blend(M m, V if_false, V if_true) { return m ? if_true : if_false; }
  static V nan_where(M m, V a) { return m ? a + __builtin_nan("") : a; }
  static M no_lanes() { return false; }
  static VI iramp(int64_t start, int64_t) { return start; }
  static VI iset1(int64_t v) { return v; }
  static VI iadd(VI a, int64_t b) { return a + b; }
  static VI iblend(M m, VI if_false, VI if_true) { return m ? if_true : if_false; }
  static void store_idx_n(int64_t* p, VI v, int) { *p = v; }
  static VI load_idx_n(const int64_t* p, int) { return *p; }
  static VI load_idx_n(const int32_t* p, int) { return *p; }
  static void store_idx_n(int32_t* p, VI v, int) { *p = static_cast<int32_t>(v); }
  static void stream_n(T* p, V v, int) { *p = v; }
  static void stream_idx_n(int64_t* p, VI v, int) { *p = v; }
  static void stream_idx_n(int32_t* p, VI v, int) { *p = static_cast<int32_t>(v); }
  static void fence() {}
  static M ieq(VI a, int64_t b) { return a == b; }
  static V mask_add(M m, V acc, V x) { return m ? acc + x : acc; }
  // With lo = p[0 .. W), hi = p[W .. 2W): lane j of evens is p[2j], of odds p[2j + 1].
  static V evens(V lo, V) { return lo; }
  static V odds(V, V hi) { return hi; }
  static bool any_lane(M m) { return m; }
  static T reduce_add(V v) { return v; }
};

#if defined(__AVX2__)
// Eight floats in a ymm register on both SIMD paths: the unit of the 8 x 8 transposes, and
// the base of the AVX2 path's FloatSimd.
struct Float8 {
  using V = __m256;
  using M = __m256;
  static __m256i first_i(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V load_n(const float* p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_i(n)); }
  static void store_n(float* p, V v, int n) {
    if (n >= 8) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, first_i(n), v);
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M is_nan(V a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static M mor(M a, M b) { return _mm256_or_ps(a, b); }
  static V blend(M m, V if_false, V if_true) { return _mm256_blendv_ps(if_false, if_true, m); }
  // Lanes [8 h, 8 h + 8) of a full-width register.
  static V half_of(__m256 v, int) { return v; }
#if defined(__AVX512F__)
  static V half_of(__m512 v, int h) {
    return h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)) : _mm512_castps512_ps256(v);
  }
#endif
};
#endif

#if defined(__AVX512F__)

struct FloatSimd {
  using V = __m512;
  using M = __mmask16;
  using VI = __m512i;
  static constexpr int W = 16;
  static M first(int n) { return n >= 16 ? M(0xFFFF) : n <= 0 ? M(0) : M((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load_n(const float* p, int n) {
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first(n), p);
  }
  // Lanes j < n get p[j * s]. Stride 2 (every 2x2/2 and 3x3/2 pool) deinterleaves two loads
  // with one permute; other strides gather. Masks keep every read inside the row.
  static V load_strided_n(const float* p, int64_t s, int n) {
    if (s == 1) return load_n(p, n);
    if (s == 2) {
      const int span = 2 * (n - 1) + 1;
      const V lo = _mm512_maskz_loadu_ps(first(span), p);
      const V hi = span > 16 ? _mm512_maskz_loadu_ps(first(span - 16), p + 16) : zero();
      const __m512i evens =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      return _mm512_permutex2var_ps(lo, evens, hi);
    }
    const __m512i offs = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(static_cast<int>(s)));
    return _mm512_mask_i32gather_ps(zero(), first(n), offs, p, 4);
  }
  // All lanes, for callers that know p[0 .. s * W - 1] is readable. Plain loads: masked
  // loads here left half the cache lines of a strided row to demand misses (VGG's 2x2/2 pool
  // ran at 4 GB/s from DRAM with masked loads, several times that with plain ones).
  static V load_strided_full(const float* p, int64_t s) {
    if (s == 1) return _mm512_loadu_ps(p);
    if (s == 2) {
      const __m512i evens =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      return _mm512_permutex2var_ps(_mm512_loadu_ps(p), evens, _mm512_loadu_ps(p + 16));
    }
    return load_strided_n(p, s, 16);
  }
  // Lanes j in [a, b) get p[j * s], the others `fill`; only the loaded lanes touch memory,
  // so p may point before the row (left padding) or the window may run past its end.
  static V load_strided_range(const float* p, int64_t s, int a, int b, float fill) {
    const V f = set1(fill);
    if (s == 1) return _mm512_mask_loadu_ps(f, range_mask(a, b), p);
    if (s == 2) {
      const int e0 = 2 * a, e1 = 2 * (b - 1) + 1;  // element range [e0, e1)
      const V lo = _mm512_mask_loadu_ps(f, static_cast<M>(first(e1 < 16 ? e1 : 16) & ~first(e0 < 16 ? e0 : 16)), p);
      const V hi = e1 > 16 ? _mm512_mask_loadu_ps(f, static_cast<M>(first(e1 - 16) & ~first(e0 > 16 ? e0 - 16 : 0)), p + 16) : f;
      const __m512i evens =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      return _mm512_permutex2var_ps(lo, evens, hi);
    }
    const __m512i offs = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(static_cast<int>(s)));
    return _mm512_mask_i32gather_ps(f, range_mask(a, b), offs, p, 4);
  }
  static M range_mask(int a, int b) { return static_cast<M>(first(b) & ~first(a)); }
  static M mandnot(M m, M not_this) { return static_cast<M>(m & ~not_this); }
  static M mand(M a, M b) { return static_cast<M>(a & b); }
  static void store_n(float* p, V v, int n) {
    if (n >= 16) _mm512_storeu_ps(p, v); else _mm512_mask_storeu_ps(p, first(n), v);
  }
  // Lanes [a, b) only: p may point before the run they cover.
  static void store_range(float* p, V v, int a, int b) { _mm512_mask_storeu_ps(p, range_mask(a, b), v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // 1 / sqrt(a) to ~2^-27 relative: the 14-bit estimate and one Newton step, all FMA-pipe
  // work instead of a square root and a divide.
  static V rsqrt(V a) {
    const V r = _mm512_rsqrt14_ps(a);
    const V half_a_r2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), a), _mm512_mul_ps(r, r));
    return _mm512_mul_ps(r, _mm512_sub_ps(_mm512_set1_ps(1.5f), half_a_r2));
  }
  static M is_nan(V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M mor(M a, M b) { return static_cast<M>(a | b); }
  static V blend(M m, V if_false, V if_true) { return _mm512_mask_blend_ps(m, if_false, if_true); }
  static V nan_where(M m, V a) { return _mm512_mask_blend_ps(m, a, _mm512_set1_ps(__builtin_nanf(""))); }
  static M no_lanes() { return 0; }
  static VI iramp(int64_t start, int64_t step) {
    return _mm512_add_epi32(
        _mm512_set1_epi32(static_cast<int>(start)),
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(static_cast<int>(step))));
  }
  static VI iadd(VI a, int64_t b) { return _mm512_add_epi32(a, _mm512_set1_epi32(static_cast<int>(b))); }
  static VI iset1(int64_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static VI iblend(M m, VI if_false, VI if_true) { return _mm512_mask_blend_epi32(m, if_false, if_true); }
  static void store_idx_n(int64_t* p, VI v, int n) {
    const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    const M m = first(n);
    _mm512_mask_storeu_epi64(p, static_cast<__mmask8>(m & 0xFF), lo);
    if (n > 8) _mm512_mask_storeu_epi64(p + 8, static_cast<__mmask8>(m >> 8), hi);
  }
  // int64 indices (torch's format) narrowed to the int32 lanes of VI; callers guarantee they fit.
  static VI load_idx_n(const int64_t* p, int n) {
    const M m = first(n);
    const __m256i lo = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(m & 0xFF), p));
    const __m256i hi = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(m >> 8), p + 8));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  // int32 indices: the internal argmax format of the training path (half the bytes).
  static VI load_idx_n(const int32_t* p, int n) { return _mm512_maskz_loadu_epi32(first(n), p); }
  static void store_idx_n(int32_t* p, VI v, int n) { _mm512_mask_storeu_epi32(p, first(n), v); }
  static void stream_idx_n(int32_t* p, VI v, int n) {
    if (n == 16 && (reinterpret_cast<uintptr_t>(p) & 63) == 0) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v);
    } else {
      store_idx_n(p, v, n);
    }
  }
  static M ieq(VI a, int64_t b) { return _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(static_cast<int>(b))); }
  // Non-temporal stores for outputs too large to stay in cache: they skip the read-for-
  // ownership of every written line. Full, aligned vectors only; the rest store normally.
  static void stream_n(float* p, V v, int n) {
    if (n == 16 && (reinterpret_cast<uintptr_t>(p) & 63) == 0) _mm512_stream_ps(p, v); else store_n(p, v, n);
  }
  static void stream_idx_n(int64_t* p, VI v, int n) {
    if (n == 16 && (reinterpret_cast<uintptr_t>(p) & 63) == 0) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(p), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
      _mm512_stream_si512(reinterpret_cast<__m512i*>(p + 8), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
    } else {
      store_idx_n(p, v, n);
    }
  }
  static void fence() { _mm_sfence(); }
  static V mask_add(M m, V acc, V x) { return _mm512_mask_add_ps(acc, m, acc, x); }
  static V evens(V lo, V hi) {
    return _mm512_permutex2var_ps(lo, _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), hi);
  }
  static V odds(V lo, V hi) {
    return _mm512_permutex2var_ps(lo, _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1), hi);
  }
  static bool any_lane(M m) { return m != 0; }
  static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
};

#elif defined(__AVX2__)

struct FloatSimd : Float8 {
  // M: all-ones lanes where true, as AVX2 compares produce.
  using VI = __m256i;
  static constexpr int W = 8;
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load_strided_n(const float* p, int64_t s, int n) {
    if (s == 1) return load_n(p, n);
    if (s == 2 && n == 8) {
      // 15 elements are needed; the 16th comes from a masked load so the row end is safe.
      const V a = _mm256_loadu_ps(p);
      const V b = _mm256_maskload_ps(p + 8, first_i(7));
      const V even = _mm256_shuffle_ps(a, b, 0x88);  // a0 a2 b0 b2 | a4 a6 b4 b6
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
    }
    const __m256i offs = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm256_set1_epi32(static_cast<int>(s)));
    return _mm256_mask_i32gather_ps(zero(), p, offs, _mm256_castsi256_ps(first_i(n)), 4);
  }
  static V load_strided_full(const float* p, int64_t s) {
    if (s == 2) {
      const V even = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
    }
    return load_strided_n(p, s, 8);
  }
  static V load_strided_range(const float* p, int64_t s, int a, int b, float fill) {
    const __m256i lanes = _mm256_castps_si256(range_mask(a, b));
    const V f = set1(fill);
    if (s == 1) return _mm256_blendv_ps(f, _mm256_maskload_ps(p, lanes), _mm256_castsi256_ps(lanes));
    const __m256i offs = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm256_set1_epi32(static_cast<int>(s)));
    return _mm256_mask_i32gather_ps(f, p, offs, _mm256_castsi256_ps(lanes), 4);
  }
  static M range_mask(int a, int b) {
    return _mm256_andnot_ps(_mm256_castsi256_ps(first_i(a)), _mm256_castsi256_ps(first_i(b)));
  }
  static void store_range(float* p, V v, int a, int b) {
    _mm256_maskstore_ps(p, _mm256_castps_si256(range_mask(a, b)), v);
  }
  static M mandnot(M m, M not_this) { return _mm256_andnot_ps(not_this, m); }
  static M mand(M a, M b) { return _mm256_and_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // 12-bit estimate + one Newton step: ~2^-23 relative.
  static V rsqrt(V a) {
    const V r = _mm256_rsqrt_ps(a);
    const V half_a_r2 = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), a), _mm256_mul_ps(r, r));
    return _mm256_mul_ps(r, _mm256_sub_ps(_mm256_set1_ps(1.5f), half_a_r2));
  }
  static V nan_where(M m, V a) { return _mm256_blendv_ps(a, _mm256_set1_ps(__builtin_nanf("")), m); }
  static M no_lanes() { return _mm256_setzero_ps(); }
  static VI iramp(int64_t start, int64_t step) {
    return _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(start)),
                            _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                                               _mm256_set1_epi32(static_cast<int>(step))));
  }
  static VI iadd(VI a, int64_t b) { return _mm256_add_epi32(a, _mm256_set1_epi32(static_cast<int>(b))); }
  static VI iset1(int64_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static VI iblend(M m, VI if_false, VI if_true) {
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(if_false), _mm256_castsi256_ps(if_true), m));
  }
  static void store_idx_n(int64_t* p, VI v, int n) {
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
    const __m256i nn = _mm256_set1_epi64x(n);
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(p), _mm256_cmpgt_epi64(nn, lane), lo);
    if (n > 4) {
      _mm256_maskstore_epi64(reinterpret_cast<long long*>(p + 4),
                             _mm256_cmpgt_epi64(nn, _mm256_add_epi64(lane, _mm256_set1_epi64x(4))), hi);
    }
  }
  static VI load_idx_n(const int64_t* p, int n) {
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
    const __m256i nn = _mm256_set1_epi64x(n);
    const auto* q = reinterpret_cast<const long long*>(p);
    const __m256i lo = _mm256_maskload_epi64(q, _mm256_cmpgt_epi64(nn, lane));
    const __m256i hi = _mm256_maskload_epi64(q + 4, _mm256_cmpgt_epi64(nn, _mm256_add_epi64(lane, _mm256_set1_epi64x(4))));
    // Low 32 bits of each int64, in order: the same deinterleave as stride-2 loads.
    const __m256 even = _mm256_shuffle_ps(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), 0x88);
    return _mm256_castpd_si256(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
  }
  static VI load_idx_n(const int32_t* p, int n) {
    return _mm256_maskload_epi32(reinterpret_cast<const int*>(p), first_i(n));
  }
  static void store_idx_n(int32_t* p, VI v, int n) {
    _mm256_maskstore_epi32(reinterpret_cast<int*>(p), first_i(n), v);
  }
  static void stream_idx_n(int32_t* p, VI v, int n) {
    if (n == 8 && (reinterpret_cast<uintptr_t>(p) & 31) == 0) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
    } else {
      store_idx_n(p, v, n);
    }
  }
  static M ieq(VI a, int64_t b) {
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32(static_cast<int>(b))));
  }
  static void stream_n(float* p, V v, int n) {
    if (n == 8 && (reinterpret_cast<uintptr_t>(p) & 31) == 0) _mm256_stream_ps(p, v); else store_n(p, v, n);
  }
  static void stream_idx_n(int64_t* p, VI v, int n) {
    if (n == 8 && (reinterpret_cast<uintptr_t>(p) & 31) == 0) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
    } else {
      store_idx_n(p, v, n);
    }
  }
  static void fence() { _mm_sfence(); }
  static V mask_add(M m, V acc, V x) { return _mm256_blendv_ps(acc, _mm256_add_ps(acc, x), m); }
  static V evens(V lo, V hi) {
    const V e = _mm256_shuffle_ps(lo, hi, 0x88);  // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
  }
  static V odds(V lo, V hi) {
    const V o = _mm256_shuffle_ps(lo, hi, 0xDD);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
  }
  static bool any_lane(M m) { return _mm256_movemask_ps(m) != 0; }
  static float reduce_add(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};

#else

using FloatSimd = ScalarSimd<float>;

#endif

#if defined(__AVX2__)
// o[j] lane i = r[i] lane j: the 8 x 8 transpose of eight registers. Plain AVX2 on both SIMD
// paths (the AVX-512 build enables AVX2 too), so one tested version serves both.
inline void transpose8_regs(const __m256 (&r)[8], __m256 (&o)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  o[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  o[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  o[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  o[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  o[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  o[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  o[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  o[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Eight floats of each of eight rows ss apart, rows >= valid read as zero, transposed: o[j]
// holds element j of every row.
inline void load_transpose8(const float* src, int64_t ss, int valid, __m256 (&o)[8]) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = i < valid ? _mm256_loadu_ps(src + i * ss) : _mm256_setzero_ps();
  transpose8_regs(r, o);
}
// The first `lanes` of v (mask = Float8::first_i(lanes)); all eight by a plain store.
inline void store_lanes8(float* d, __m256 v, int lanes, __m256i mask) {
  if (lanes == 8) _mm256_storeu_ps(d, v); else _mm256_maskstore_ps(d, mask, v);
}

// dst[w * c + i] = src[i * ss + w] for i < c <= 8, w < len: a few channel planes (an RGB
// image) to pixel-major, eight pixels per 8 x 8 transpose. A pixel's 8-lane store spills into
// the following pixels' places, which their stores then overwrite; stores that would reach
// past dst[len * c] are masked.
inline void interleave_planes(const float* src, int64_t ss, int c, int64_t len, float* dst) {
  const __m256i keep = Float8::first_i(c);
  int64_t w0 = 0;
  for (; w0 + 8 <= len; w0 += 8) {
    __m256 o[8];
    load_transpose8(src + w0, ss, c, o);
    for (int j = 0; j < 8; ++j) {
      float* d = dst + (w0 + j) * c;
      if ((w0 + j) * c + 8 <= len * c) _mm256_storeu_ps(d, o[j]); else _mm256_maskstore_ps(d, keep, o[j]);
    }
  }
  for (; w0 < len; ++w0)
    for (int i = 0; i < c; ++i) dst[w0 * c + i] = src[i * ss + w0];
}
#endif

// dst[j * ds + i] = src[i * ss + j] for an 8 x 8 block of floats: layout conversions
// (NCHW <-> NHWC) at memory speed instead of one scalar move per element.
inline void transpose8x8(const float* src, int64_t ss, float* dst, int64_t ds) {
#if defined(__AVX2__)
  __m256 o[8];
  load_transpose8(src, ss, 8, o);
  for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + j * ds, o[j]);
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * ds + i] = src[i * ss + j];
#endif
}
inline void transpose8x8(const double* src, int64_t ss, double* dst, int64_t ds) {
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * ds + i] = src[i * ss + j];
}

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols, in 8 x 8 blocks.
template <class T>
inline void transpose_2d(const T* src, int64_t ss, T* dst, int64_t ds, int64_t rows, int64_t cols) {
  int64_t i = 0;
  for (; i + 8 <= rows; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) transpose8x8(src + i * ss + j, ss, dst + j * ds + i, ds);
    for (; j < cols; ++j)
      for (int64_t ii = i; ii < i + 8; ++ii) dst[j * ds + ii] = src[ii * ss + j];
  }
#if defined(__AVX2__)
  // The last rows short of eight (all of them for 3- or 6-channel maps) through the same
  // transposes, storing only their lanes: element by element they were 40% of a 6-channel
  // NCHW -> channels_last copy of LeNet's first layer output (~20 us of its ~60 at batch 8).
  if constexpr (std::is_same_v<T, float>) {
    if (i < rows) {
      const int valid = static_cast<int>(rows - i);
      if (i == 0 && ds == rows) {  // dense pixel-major rows: each store may spill into the next
        interleave_planes(src, ss, valid, cols, dst);
        return;
      }
      const __m256i mask = Float8::first_i(valid);
      int64_t j = 0;
      for (; j + 8 <= cols; j += 8) {
        __m256 o[8];
        load_transpose8(src + i * ss + j, ss, valid, o);
        for (int jj = 0; jj < 8; ++jj) store_lanes8(dst + (j + jj) * ds + i, o[jj], valid, mask);
      }
      for (; j < cols; ++j)
        for (int64_t ii = i; ii < rows; ++ii) dst[j * ds + ii] = src[ii * ss + j];
      return;
    }
  }
#endif
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ds + i] = src[i * ss + j];
}

// dst[k * mr + r] = src[r * ss + k] for r < mr, k < kk, rows r >= m read as zero: pixel rows
// (channels contiguous) into a [k][mr] microkernel panel. mr need not be a multiple of 8
// (the AVX-512 tile has 14 rows), so the last block of rows stores only its own lanes.
inline void pack_rows_to_panel(const float* src, int64_t ss, int m, int64_t kk, float* dst, int mr) {
  int64_t k0 = 0;
#if defined(__AVX2__)
  const int64_t kk8 = kk / 8 * 8;
  // Eight rows at a time over all k: rows `ss` apart (8 KB at 2048 channels) share one L1
  // set, so only one group's eight lines are live at once.
  for (int i0 = 0; i0 < mr; i0 += 8) {
    const int valid = std::min(std::max(m - i0, 0), 8), lanes = std::min(mr - i0, 8);
    const __m256i mask = Float8::first_i(lanes);
    for (k0 = 0; k0 < kk8; k0 += 8) {
      __m256 o[8];
      load_transpose8(src + i0 * ss + k0, ss, valid, o);
      float* d = dst + k0 * mr + i0;
      for (int j = 0; j < 8; ++j) store_lanes8(d + j * mr, o[j], lanes, mask);
    }
  }
  k0 = kk8;
#endif
  for (; k0 < kk; ++k0)
    for (int r = 0; r < mr; ++r) dst[k0 * mr + r] = r < m ? src[r * ss + k0] : 0.f;
}
// The same for rows whose reduction index interleaves `taps` kernel taps, element (k, t) of
// row r at src[r * ss + k * taps + t] (an OIHW weight's output channel): dst[u * kk * mr +
// k * mr + r] with u = t, or taps - 1 - t (mirror), one [k][mr] panel per tap, in one pass
// over the rows with 8 x 8 transposes.
// Tap by tap, each pass read every line of the rows for one float in `taps` (ResNet-18's
// 512 -> 512 3x3 layers at batch 1 spent a fifth of their time packing so).
inline void pack_tap_rows_to_panels(const float* src, int64_t ss, int m, int64_t kk, int64_t taps, bool mirror,
                                    float* dst, int mr) {
  const int64_t len = kk * taps;
  int64_t j0 = 0;
#if defined(__AVX2__)
  const int64_t len8 = len / 8 * 8;
  for (int i0 = 0; i0 < mr; i0 += 8) {
    const int valid = std::min(std::max(m - i0, 0), 8), lanes = std::min(mr - i0, 8);
    const __m256i mask = Float8::first_i(lanes);
    int64_t k = 0, t = 0;  // of element j0
    for (j0 = 0; j0 < len8; j0 += 8) {
      __m256 o[8];
      load_transpose8(src + i0 * ss + j0, ss, valid, o);
      for (int j = 0; j < 8; ++j) {
        store_lanes8(dst + ((mirror ? taps - 1 - t : t) * kk + k) * mr + i0, o[j], lanes, mask);
        if (++t == taps) {
          t = 0;
          ++k;
        }
      }
    }
  }
  j0 = len8;
#endif
  for (; j0 < len; ++j0) {
    const int64_t k = j0 / taps, t = j0 % taps;
    for (int r = 0; r < mr; ++r) dst[((mirror ? taps - 1 - t : t) * kk + k) * mr + r] = r < m ? src[r * ss + j0] : 0.f;
  }
}
inline void pack_tap_rows_to_panels(const double* src, int64_t ss, int m, int64_t kk, int64_t taps, bool mirror,
                                    double* dst, int mr) {
  for (int64_t j = 0; j < kk * taps; ++j) {
    const int64_t t = j % taps, u = mirror ? taps - 1 - t : t;
    for (int r = 0; r < mr; ++r) dst[(u * kk + j / taps) * mr + r] = r < m ? src[r * ss + j] : 0.0;
  }
}
inline void pack_rows_to_panel(const double* src, int64_t ss, int m, int64_t kk, double* dst, int mr) {
  for (int r = 0; r < mr; ++r)
    for (int64_t k = 0; k < kk; ++k) dst[k * mr + r] = r < m ? src[r * ss + k] : 0.0;
}

template <class T> struct SimdFor { using type = ScalarSimd<T>; };
template <> struct SimdFor<float> { using type = FloatSimd; };

}  // namespace FASTCONV_CPU_NS
}  // namespace fastconv
