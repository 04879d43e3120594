// Squeeze-and-Excitation kernels, written once against Simd<T> and compiled per ISA
// (se_kernels_<isa>.cpp). Every kernel is one streaming pass; the variants (ReLU or not,
// residual or not, mask or not) are template parameters so the inner loops carry no branches.
#pragma once

#include <cstdint>

#include "../../common/simd.h"
#include "se_kernels.h"

namespace fastconv {
namespace FASTCONV_CPU_NS {
namespace {

using se::SeParams;

// ReLU that keeps NaN (as torch's relu): zero only where 0 > v.
template <class S>
FASTCONV_ALWAYS_INLINE typename S::V relu_keep_nan(typename S::V v) {
  return S::blend(S::gt(S::zero(), v), v, S::zero());
}

// g where the ReLU passed (y > 0 or NaN), else 0.
template <class S>
FASTCONV_ALWAYS_INLINE typename S::V masked_grad(typename S::V g, typename S::V y) {
  return S::blend(S::mor(S::gt(y, S::zero()), S::is_nan(y)), S::zero(), g);
}

// Lanes of the vector at j in a run of n: a full vector, or the tail.
template <class S>
FASTCONV_ALWAYS_INLINE int lanes(int64_t n, int64_t j) {
  return n - j < S::W ? static_cast<int>(n - j) : S::W;
}

// Sum over one plane of n elements: acc = step(acc, j, w) folds in the w lanes at j. Two
// accumulators, so a plane that sits in cache is not bound by the add / FMA latency chain.
template <class S, class T, class Step>
FASTCONV_ALWAYS_INLINE T plane_sum(int64_t n, const Step& step) {
  typename S::V a0 = S::zero(), a1 = S::zero();
  int64_t j = 0;
  for (; j + 2 * S::W <= n; j += 2 * S::W) {
    a0 = step(a0, j, S::W);
    a1 = step(a1, j + S::W, S::W);
  }
  for (; j < n; j += S::W) a0 = step(a0, j, lanes<S>(n, j));
  return S::reduce_add(S::add(a0, a1));
}

// Channels-last per-channel sums. Work item = (image n, chunk of channels): the chunk's sums
// stay in L1 while the image's pixel rows stream by, folded in pixel by pixel (a fixed order,
// so the result does not depend on how items are split). step(acc, o, w) folds in the w lanes
// at element offset o; finish(sums, nc) runs on each chunk's sums at the end.
template <class S, class T, class Step, class Finish>
FASTCONV_ALWAYS_INLINE void chunk_sums(const SeParams& p, int64_t chunk, int64_t begin, int64_t end, T* sums,
                                       const Step& step, const Finish& finish) {
  const int64_t chunks = (p.channels + chunk - 1) / chunk;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / chunks;
    const int64_t c0 = (item % chunks) * chunk;
    const int64_t nc = p.channels - c0 < chunk ? p.channels - c0 : chunk;
    T* out = sums + n * p.channels + c0;
    for (int64_t j = 0; j < nc; j += S::W) S::store_n(out + j, S::zero(), lanes<S>(nc, j));
    for (int64_t i = 0; i < p.inner; ++i) {
      const int64_t o = (n * p.inner + i) * p.channels + c0;
      for (int64_t j = 0; j < nc; j += S::W) {
        const int w = lanes<S>(nc, j);
        S::store_n(out + j, step(S::load_n(out + j, w), o + j, w), w);
      }
    }
    finish(out, nc);
  }
}

// y[0, n) = act(x * s + r) with s one value (cf) or a row of values (cl). STREAM: non-temporal
// stores, for outputs far larger than the cache (no read-for-ownership of every written line).
template <class S, class T, bool RELU, bool RES, bool ROW, bool STREAM>
FASTCONV_ALWAYS_INLINE void scale_run(const T* x, const T* s, const T* r, T* y, int64_t n) {
  using V = typename S::V;
  const V s1 = S::set1(ROW ? T(0) : s[0]);
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    V v = S::mul(S::load_n(x + j, w), ROW ? S::load_n(s + j, w) : s1);
    if (RES) v = S::add(v, S::load_n(r + j, w));
    if (RELU) v = relu_keep_nan<S>(v);
    if (STREAM) S::stream_n(y + j, v, w);
    else S::store_n(y + j, v, w);
  }
}

template <class T, bool RELU, bool RES, bool STREAM>
void scale_cf_t(const T* x, const T* s, const T* r, T* y, const SeParams& p, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t o = q * p.inner;
    scale_run<S, T, RELU, RES, false, STREAM>(x + o, s + q, RES ? r + o : nullptr, y + o, p.inner);
  }
  if (STREAM) S::fence();
}

template <class T, bool RELU, bool RES, bool STREAM>
void scale_cl_t(const T* x, const T* s, const T* r, T* y, const SeParams& p, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t o = q * p.channels;
    scale_run<S, T, RELU, RES, true, STREAM>(x + o, s + (q / p.inner) * p.channels, RES ? r + o : nullptr, y + o,
                                             p.channels);
  }
  if (STREAM) S::fence();
}

// Three runtime flags to template parameters of F<T, A, B, C>::run.
template <class T, template <class, bool, bool, bool> class F, class... Args>
void dispatch_flags(bool a, bool b, bool c, Args... args) {
  if (c) {
    if (a) (b ? F<T, true, true, true>::run : F<T, true, false, true>::run)(args...);
    else (b ? F<T, false, true, true>::run : F<T, false, false, true>::run)(args...);
  } else {
    if (a) (b ? F<T, true, true, false>::run : F<T, true, false, false>::run)(args...);
    else (b ? F<T, false, true, false>::run : F<T, false, false, false>::run)(args...);
  }
}

template <class T, bool RELU, bool RES, bool STREAM>
struct ScaleCf {
  static void run(const T* x, const T* s, const T* r, T* y, const SeParams& p, int64_t b, int64_t e) {
    scale_cf_t<T, RELU, RES, STREAM>(x, s, r, y, p, b, e);
  }
};

template <class T, bool RELU, bool RES, bool STREAM>
struct ScaleCl {
  static void run(const T* x, const T* s, const T* r, T* y, const SeParams& p, int64_t b, int64_t e) {
    scale_cl_t<T, RELU, RES, STREAM>(x, s, r, y, p, b, e);
  }
};

template <class T>
void scale_cf(const T* x, const T* s, const T* r, T* y, bool relu, bool stream, const SeParams& p, int64_t b,
              int64_t e) {
  dispatch_flags<T, ScaleCf>(relu, r != nullptr, stream, x, s, r, y, p, b, e);
}

template <class T>
void scale_cl(const T* x, const T* s, const T* r, T* y, bool relu, bool stream, const SeParams& p, int64_t b,
              int64_t e) {
  dispatch_flags<T, ScaleCl>(relu, r != nullptr, stream, x, s, r, y, p, b, e);
}

// g * m for the w lanes at offset o, also written to grad_r when asked.
template <class S, class T, bool MASK, bool GR>
FASTCONV_ALWAYS_INLINE typename S::V grad_times_mask(const T* g, const T* y, T* gr, int64_t o, int w) {
  typename S::V gv = S::load_n(g + o, w);
  if (MASK) gv = masked_grad<S>(gv, S::load_n(y + o, w));
  if (GR) S::store_n(gr + o, gv, w);
  return gv;
}

// grad_s[plane] = sum g * m * x, grad_r = g * m.
template <class T, bool MASK, bool GR>
void grad_scale_cf_t(const T* g, const T* x, const T* y, T* gs, T* gr, const SeParams& p, int64_t begin,
                     int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t base = q * p.inner;
    gs[q] = plane_sum<S, T>(p.inner, [&](V acc, int64_t j, int w) {
      return S::fma(grad_times_mask<S, T, MASK, GR>(g, y, gr, base + j, w), S::load_n(x + base + j, w), acc);
    });
  }
}

template <class T, bool MASK, bool GR>
void grad_scale_cl_t(const T* g, const T* x, const T* y, T* gs, T* gr, const SeParams& p, int64_t chunk,
                     int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  chunk_sums<S>(
      p, chunk, begin, end, gs,
      [&](V acc, int64_t o, int w) {
        return S::fma(grad_times_mask<S, T, MASK, GR>(g, y, gr, o, w), S::load_n(x + o, w), acc);
      },
      [](T*, int64_t) {});
}

template <class T>
void grad_scale_cf(const T* g, const T* x, const T* y, T* gs, T* gr, const SeParams& p, int64_t b, int64_t e) {
  if (y) (gr ? grad_scale_cf_t<T, true, true> : grad_scale_cf_t<T, true, false>)(g, x, y, gs, gr, p, b, e);
  else (gr ? grad_scale_cf_t<T, false, true> : grad_scale_cf_t<T, false, false>)(g, x, y, gs, gr, p, b, e);
}

template <class T>
void grad_scale_cl(const T* g, const T* x, const T* y, T* gs, T* gr, const SeParams& p, int64_t chunk,
                   int64_t b, int64_t e) {
  if (y) (gr ? grad_scale_cl_t<T, true, true> : grad_scale_cl_t<T, true, false>)(g, x, y, gs, gr, p, chunk, b, e);
  else (gr ? grad_scale_cl_t<T, false, true> : grad_scale_cl_t<T, false, false>)(g, x, y, gs, gr, p, chunk, b, e);
}

// grad_x[0, n) = g * m * s + t, s and t one value (cf) or rows (cl); STREAM as in scale_run.
template <class S, class T, bool MASK, bool SHIFT, bool ROW, bool STREAM>
FASTCONV_ALWAYS_INLINE void grad_input_run(const T* g, const T* y, const T* s, const T* t, T* gx, int64_t n) {
  using V = typename S::V;
  const V s1 = S::set1(ROW ? T(0) : s[0]);
  const V t1 = S::set1(ROW || !SHIFT ? T(0) : t[0]);
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    V gv = S::load_n(g + j, w);
    if (MASK) gv = masked_grad<S>(gv, S::load_n(y + j, w));
    const V sv = ROW ? S::load_n(s + j, w) : s1;
    const V v = SHIFT ? S::fma(gv, sv, ROW ? S::load_n(t + j, w) : t1) : S::mul(gv, sv);
    if (STREAM) S::stream_n(gx + j, v, w);
    else S::store_n(gx + j, v, w);
  }
}

template <class T, bool MASK, bool SHIFT, bool STREAM>
struct GradInputCf {
  static void run(const T* g, const T* y, const T* s, const T* t, T* gx, const SeParams& p, int64_t begin,
                  int64_t end) {
    using S = typename SimdFor<T>::type;
    for (int64_t q = begin; q < end; ++q) {
      const int64_t o = q * p.inner;
      grad_input_run<S, T, MASK, SHIFT, false, STREAM>(g + o, MASK ? y + o : nullptr, s + q,
                                                       SHIFT ? t + q : nullptr, gx + o, p.inner);
    }
    if (STREAM) S::fence();
  }
};

template <class T, bool MASK, bool SHIFT, bool STREAM>
struct GradInputCl {
  static void run(const T* g, const T* y, const T* s, const T* t, T* gx, const SeParams& p, int64_t begin,
                  int64_t end) {
    using S = typename SimdFor<T>::type;
    for (int64_t q = begin; q < end; ++q) {
      const int64_t o = q * p.channels;
      const int64_t so = (q / p.inner) * p.channels;
      grad_input_run<S, T, MASK, SHIFT, true, STREAM>(g + o, MASK ? y + o : nullptr, s + so,
                                                      SHIFT ? t + so : nullptr, gx + o, p.channels);
    }
    if (STREAM) S::fence();
  }
};

template <class T>
void grad_input_cf(const T* g, const T* y, const T* s, const T* t, T* gx, bool stream, const SeParams& p,
                   int64_t b, int64_t e) {
  dispatch_flags<T, GradInputCf>(y != nullptr, t != nullptr, stream, g, y, s, t, gx, p, b, e);
}

template <class T>
void grad_input_cl(const T* g, const T* y, const T* s, const T* t, T* gx, bool stream, const SeParams& p,
                   int64_t b, int64_t e) {
  dispatch_flags<T, GradInputCl>(y != nullptr, t != nullptr, stream, g, y, s, t, gx, p, b, e);
}

// Per-plane mean (cf).
template <class T>
void squeeze_cf(const T* x, T* pooled, const SeParams& p, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  const T inv = T(1) / static_cast<T>(p.inner);
  for (int64_t q = begin; q < end; ++q) {
    const T* xp = x + q * p.inner;
    pooled[q] = plane_sum<S, T>(p.inner, [&](V acc, int64_t j, int w) { return S::add(acc, S::load_n(xp + j, w)); }) * inv;
  }
}

// Channels-last mean.
template <class T>
void squeeze_cl(const T* x, T* pooled, const SeParams& p, int64_t chunk, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  const V inv = S::set1(T(1) / static_cast<T>(p.inner));
  chunk_sums<S>(
      p, chunk, begin, end, pooled, [&](V acc, int64_t o, int w) { return S::add(acc, S::load_n(x + o, w)); },
      [&](T* out, int64_t nc) {
        for (int64_t j = 0; j < nc; j += S::W) S::store_n(out + j, S::mul(S::load_n(out + j, lanes<S>(nc, j)), inv), lanes<S>(nc, j));
      });
}

// dot(a, b) over n.
template <class S, class T>
FASTCONV_ALWAYS_INLINE T dot(const T* a, const T* b, int64_t n) {
  typename S::V acc = S::zero();
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    acc = S::fma(S::load_n(a + j, w), S::load_n(b + j, w), acc);
  }
  return S::reduce_add(acc);
}

// y[0, n) += a * x[0, n).
template <class S, class T>
FASTCONV_ALWAYS_INLINE void axpy(T a, const T* x, T* y, int64_t n) {
  const typename S::V av = S::set1(a);
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    S::store_n(y + j, S::fma(av, S::load_n(x + j, w), S::load_n(y + j, w)), w);
  }
}

template <class T>
T sigmoid(T z) {
  // exp of a non-positive argument only, so neither branch overflows.
  if (z >= T(0)) return T(1) / (T(1) + __builtin_exp(-z));
  const T e = __builtin_exp(z);
  return e / (T(1) + e);
}

// out[i] = dot(w[i, :], v) + (b ? b[i] : 0) for rows [0, rows): four rows at a time, so four
// independent FMA chains hide the FMA latency that one long dot product would wait on.
template <class S, class T>
void gemv(const T* w, const T* v, const T* b, T* out, int64_t rows, int64_t cols) {
  using V = typename S::V;
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const T* w0 = w + i * cols;
    V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
    for (int64_t j = 0; j < cols; j += S::W) {
      const int n = lanes<S>(cols, j);
      const V x = S::load_n(v + j, n);
      a0 = S::fma(S::load_n(w0 + j, n), x, a0);
      a1 = S::fma(S::load_n(w0 + cols + j, n), x, a1);
      a2 = S::fma(S::load_n(w0 + 2 * cols + j, n), x, a2);
      a3 = S::fma(S::load_n(w0 + 3 * cols + j, n), x, a3);
    }
    out[i] = S::reduce_add(a0) + (b ? b[i] : T(0));
    out[i + 1] = S::reduce_add(a1) + (b ? b[i + 1] : T(0));
    out[i + 2] = S::reduce_add(a2) + (b ? b[i + 2] : T(0));
    out[i + 3] = S::reduce_add(a3) + (b ? b[i + 3] : T(0));
  }
  for (; i < rows; ++i) out[i] = dot<S>(w + i * cols, v, cols) + (b ? b[i] : T(0));
}

template <class T>
void excite(const T* pooled, const T* w1, const T* b1, const T* w2, const T* b2, T* hidden, T* scale,
            const SeParams& p, int64_t cr, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  const int64_t c = p.channels;
  for (int64_t n = begin; n < end; ++n) {
    T* h = hidden + n * cr;
    gemv<S>(w1, pooled + n * c, b1, h, cr, c);
    for (int64_t j = 0; j < cr; ++j) h[j] = T(0) > h[j] ? T(0) : h[j];  // keeps NaN, as torch.relu
    T* s = scale + n * c;
    gemv<S>(w2, h, b2, s, c, cr);
    for (int64_t k = 0; k < c; ++k) s[k] = sigmoid(s[k]);
  }
}

template <class T>
void excite_backward(const T* grad_s, const T* w1, const T* w2, const T* hidden, const T* scale, T* dz1, T* dz2,
                     T* shift, const SeParams& p, int64_t cr, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  const int64_t c = p.channels;
  const T inv = T(1) / static_cast<T>(p.inner);
  for (int64_t n = begin; n < end; ++n) {
    const T* gs = grad_s + n * c;
    const T* s = scale + n * c;
    T* d2 = dz2 + n * c;
    T* d1 = dz1 + n * cr;
    const T* h = hidden + n * cr;
    T* t = shift + n * c;
    for (int64_t k = 0; k < c; ++k) d2[k] = gs[k] * s[k] * (T(1) - s[k]);
    for (int64_t j = 0; j < cr; ++j) d1[j] = T(0);
    for (int64_t k = 0; k < c; ++k) axpy<S>(d2[k], w2 + k * cr, d1, cr);
    for (int64_t j = 0; j < cr; ++j) d1[j] = se::relu_passes(h[j]) ? d1[j] : T(0);
    for (int64_t k = 0; k < c; ++k) t[k] = T(0);
    for (int64_t j = 0; j < cr; ++j) axpy<S>(d1[j], w1 + j * c, t, c);
    for (int64_t k = 0; k < c; ++k) t[k] *= inv;
  }
}

template <class T>
const se::SeKernels<T>* make_se_table() {
  static const se::SeKernels<T> table = {&scale_cf<T>,      &scale_cl<T>,      &grad_scale_cf<T>,
                                         &grad_scale_cl<T>, &grad_input_cf<T>, &grad_input_cl<T>,
                                         &squeeze_cf<T>,    &squeeze_cl<T>,    &excite<T>,
                                         &excite_backward<T>};
  return &table;
}

}  // namespace
}  // namespace FASTCONV_CPU_NS
}  // namespace fastconv

#define FASTCONV_SE_CAT_(a, b, c) a##b##c
#define FASTCONV_SE_CAT(a, b, c) FASTCONV_SE_CAT_(a, b, c)

namespace fastconv {
namespace se {
const SeKernels<float>* FASTCONV_SE_CAT(se_kernels_, FASTCONV_ISA_NAME, _float)() {
  return FASTCONV_CPU_NS::make_se_table<float>();
}
const SeKernels<double>* FASTCONV_SE_CAT(se_kernels_, FASTCONV_ISA_NAME, _double)() {
  return FASTCONV_CPU_NS::make_se_table<double>();
}
}  // namespace se
}  // namespace fastconv
