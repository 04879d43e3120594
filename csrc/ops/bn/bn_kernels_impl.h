// Training-mode BatchNorm + residual + ReLU kernels, written once against Simd<T> and compiled
// per ISA (bn_kernels_<isa>.cpp). Two passes each way (see bn_math.h); the variants (ReLU or
// not, residual or not) are template parameters so the inner loops carry no branches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../common/simd.h"
#include "bn_kernels.h"

namespace fastconv {
namespace FASTCONV_CPU_NS {
namespace {

using bn::BnParams;
using bn::kRowsPerItem;
using bn::kSumRun;

template <class S>
FASTCONV_ALWAYS_INLINE int lanes(int64_t n, int64_t j) {
  return n - j < S::W ? static_cast<int>(n - j) : S::W;
}

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

// Sums over one contiguous run of n values: step(j, u, v) folds the full vector at j into the
// accumulators u and v, tail(j) the single value at j into s1 / s2 (in double); runs of
// kSumRun values are summed in T, then added into s1 / s2.
template <class S, class Step, class Tail>
FASTCONV_ALWAYS_INLINE void run_sums(int64_t n, double& s1, double& s2, const Step& step, const Tail& tail) {
  using V = typename S::V;
  const int64_t full = n - n % S::W;  // kSumRun is a multiple of W
  for (int64_t j0 = 0; j0 < full; j0 += kSumRun) {
    const int64_t j1 = std::min(full, j0 + kSumRun);
    V u = S::zero(), v = S::zero();
    for (int64_t j = j0; j < j1; j += S::W) step(j, u, v);
    s1 += static_cast<double>(S::reduce_add(u));
    s2 += static_cast<double>(S::reduce_add(v));
  }
  for (int64_t j = full; j < n; ++j) tail(j);
}

// Channels-first per-channel sums of channels [begin, end), each over its N planes:
// step(c, o, u, v) folds the full vector at element offset o into u / v, tail(c, o, a, b) the
// single value at o into the channel's double sums a / b (see run_sums).
template <class S, class Step, class Tail>
FASTCONV_ALWAYS_INLINE void plane_sums(const BnParams& p, double* s1, double* s2, int64_t begin, int64_t end,
                                       const Step& step, const Tail& tail) {
  using V = typename S::V;
  for (int64_t c = begin; c < end; ++c) {
    double a = 0.0, b = 0.0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const int64_t o = (n * p.channels + c) * p.inner;
      run_sums<S>(
          p.inner, a, b, [&](int64_t j, V& u, V& v) { step(c, o + j, u, v); }, [&](int64_t j) { tail(c, o + j, a, b); });
    }
    s1[c] = a;
    s2[c] = b;
  }
}

// Channels-last per-channel sums of items [begin, end) (kRowsPerItem pixel rows each), in
// blocks of kBlockRows rows: each channel vector's running sums are loaded from the item's
// T accumulators, updated over the block's rows in registers and stored back, so a block's
// rows are read line by line across the channels (walking all of an item's rows for one
// channel block at a time, strided by a row, ran 1.5-2x slower than the NCHW pass). 4 rows,
// not 8: on Zen 4 the 8 rows x 3-4 tensors of concurrent line streams ran the backward's sums
// at 8x1024x14x14 in 3.2 ms against 2.3 ms (median of 6 alternated runs; 8x256x56x56, bound by
// DRAM, the same either way). fold(o, c, w, u, v) updates the w lanes of channels [c, c + w)
// at element offset o into u / v.
constexpr int64_t kBlockRows = 4;

template <class S, class T, class Fold>
FASTCONV_ALWAYS_INLINE void item_sums(const BnParams& p, double* s1, double* s2, int64_t begin, int64_t end,
                                      const Fold& fold) {
  using V = typename S::V;
  const int64_t C = p.channels, rows = p.count();
  static_assert(kRowsPerItem <= kSumRun, "an item's rows are one run of T sums");
  std::vector<T> acc(static_cast<size_t>(2 * C));
  T* au = acc.data();
  T* av = au + C;
  for (int64_t t = begin; t < end; ++t) {
    std::fill(au, au + 2 * C, T(0));
    const int64_t r1 = std::min(rows, (t + 1) * kRowsPerItem);
    for (int64_t r0 = t * kRowsPerItem; r0 < r1; r0 += kBlockRows) {
      const int64_t rb = std::min(r1, r0 + kBlockRows);
      for (int64_t c = 0; c < C; c += S::W) {
        const int w = lanes<S>(C, c);
        V u = S::load_n(au + c, w), v = S::load_n(av + c, w);
        for (int64_t r = r0; r < rb; ++r) fold(r * C + c, c, w, u, v);
        S::store_n(au + c, u, w);
        S::store_n(av + c, v, w);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      s1[t * C + c] = static_cast<double>(au[c]);
      s2[t * C + c] = static_cast<double>(av[c]);
    }
  }
}

template <class T>
void stats_cf(const T* x, const T* k, double* s1, double* s2, const BnParams& p, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  plane_sums<S>(
      p, s1, s2, begin, end,
      [&](int64_t c, int64_t o, V& u, V& v) {
        const V d = S::sub(S::load(x + o), S::set1(k[c]));
        u = S::add(u, d);
        v = S::fma(d, d, v);
      },
      [&](int64_t c, int64_t o, double& a, double& b) {
        const double d = static_cast<double>(x[o] - k[c]);
        a += d;
        b += d * d;
      });
}

template <class T>
void stats_cl(const T* x, const T* k, double* s1, double* s2, const BnParams& p, int64_t begin, int64_t end) {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  item_sums<S, T>(p, s1, s2, begin, end, [&](int64_t o, int64_t c, int w, V& u, V& v) {
    // Lanes past w load as 0 from both x and k: their difference stays 0.
    const V d = S::sub(S::load_n(x + o, w), S::load_n(k + c, w));
    u = S::add(u, d);
    v = S::fma(d, d, v);
  });
}

// Stores w lanes at p, streamed past the caches when `stream`.
template <class S, class T>
FASTCONV_ALWAYS_INLINE void put(T* p, typename S::V v, int w, bool stream) {
  if (stream) S::stream_n(p, v, w);
  else S::store_n(p, v, w);
}

// The flags of the elementwise kernels as template parameters.
template <template <bool, bool> class F, class... Args>
void with_flags(bool a, bool b, Args&&... args) {
  if (a) {
    if (b) F<true, true>::run(args...); else F<true, false>::run(args...);
  } else {
    if (b) F<false, true>::run(args...); else F<false, false>::run(args...);
  }
}

// y[0, n) = act((x - m) * a + b + r), m / a / b one value (cf) or rows of values (cl).
template <class S, class T, bool RELU, bool RES, bool ROW>
FASTCONV_ALWAYS_INLINE void apply_run(const T* x, const T* m, const T* a, const T* b, const T* r, T* y, int64_t n,
                                      bool stream) {
  using V = typename S::V;
  const V m1 = S::set1(ROW ? T(0) : m[0]), a1 = S::set1(ROW ? T(0) : a[0]), b1 = S::set1(ROW ? T(0) : b[0]);
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    const V d = S::sub(S::load_n(x + j, w), ROW ? S::load_n(m + j, w) : m1);
    V v = S::fma(d, ROW ? S::load_n(a + j, w) : a1, ROW ? S::load_n(b + j, w) : b1);
    if (RES) v = S::add(v, S::load_n(r + j, w));
    if (RELU) v = relu_keep_nan<S>(v);
    put<S>(y + j, v, w, stream);
  }
}

template <class T>
struct Apply {
  template <bool RELU, bool RES>
  struct Cf {
    static void run(const T* x, const T* m, const T* a, const T* b, const T* r, T* y, const BnParams& p,
                    int64_t begin, int64_t end) {
      using S = typename SimdFor<T>::type;
      for (int64_t q = begin; q < end; ++q) {
        const int64_t o = q * p.inner, c = q % p.channels;
        apply_run<S, T, RELU, RES, false>(x + o, m + c, a + c, b + c, RES ? r + o : nullptr, y + o, p.inner,
                                          p.stream);
      }
      if (p.stream) S::fence();
    }
  };
  template <bool RELU, bool RES>
  struct Cl {
    static void run(const T* x, const T* m, const T* a, const T* b, const T* r, T* y, const BnParams& p,
                    int64_t begin, int64_t end) {
      using S = typename SimdFor<T>::type;
      for (int64_t q = begin; q < end; ++q) {
        const int64_t o = q * p.channels;
        apply_run<S, T, RELU, RES, true>(x + o, m, a, b, RES ? r + o : nullptr, y + o, p.channels, p.stream);
      }
      if (p.stream) S::fence();
    }
  };
};

template <class T>
void apply_cf(const T* x, const T* m, const T* a, const T* b, const T* r, T* y, bool relu, const BnParams& p,
              int64_t begin, int64_t end) {
  with_flags<Apply<T>::template Cf>(relu, r != nullptr, x, m, a, b, r, y, p, begin, end);
}

template <class T>
void apply_cl(const T* x, const T* m, const T* a, const T* b, const T* r, T* y, bool relu, const BnParams& p,
              int64_t begin, int64_t end) {
  with_flags<Apply<T>::template Cl>(relu, r != nullptr, x, m, a, b, r, y, p, begin, end);
}

template <class T>
struct GradSums {
  template <bool MASK, bool GR>
  struct Cf {
    static void run(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                    const BnParams& p, int64_t begin, int64_t end) {
      using S = typename SimdFor<T>::type;
      using V = typename S::V;
      plane_sums<S>(
          p, s1, s2, begin, end,
          [&](int64_t c, int64_t o, V& u, V& v) {
            V g = S::load(grad + o);
            if (MASK) g = masked_grad<S>(g, S::load(y + o));
            if (GR) put<S>(gr + o, g, S::W, p.stream);
            u = S::add(u, g);
            v = S::fma(g, S::sub(S::load(x + o), S::set1(mean[c])), v);
          },
          [&](int64_t c, int64_t o, double& a, double& b) {
            const T g = !MASK || bn::relu_passes(y[o]) ? grad[o] : T(0);
            if (GR) gr[o] = g;
            a += static_cast<double>(g);
            b += static_cast<double>(g * (x[o] - mean[c]));
          });
      if (GR && p.stream) S::fence();
    }
  };
  template <bool MASK, bool GR>
  struct Cl {
    static void run(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                    const BnParams& p, int64_t begin, int64_t end) {
      using S = typename SimdFor<T>::type;
      using V = typename S::V;
      item_sums<S, T>(p, s1, s2, begin, end, [&](int64_t o, int64_t c, int w, V& u, V& v) {
        V g = S::load_n(grad + o, w);
        if (MASK) g = masked_grad<S>(g, S::load_n(y + o, w));
        if (GR) put<S>(gr + o, g, w, p.stream);
        u = S::add(u, g);
        v = S::fma(g, S::sub(S::load_n(x + o, w), S::load_n(mean + c, w)), v);
      });
      if (GR && p.stream) S::fence();
    }
  };
};

template <class T>
void grad_sums_cf(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                  const BnParams& p, int64_t begin, int64_t end) {
  with_flags<GradSums<T>::template Cf>(y != nullptr, gr != nullptr, grad, y, x, mean, s1, s2, gr, p, begin, end);
}

template <class T>
void grad_sums_cl(const T* grad, const T* y, const T* x, const T* mean, double* s1, double* s2, T* gr,
                  const BnParams& p, int64_t begin, int64_t end) {
  with_flags<GradSums<T>::template Cl>(y != nullptr, gr != nullptr, grad, y, x, mean, s1, s2, gr, p, begin, end);
}

// gx[0, n) = g * k1 + (x - mean) * k2 + k3 with g = grad * m; mean and k one value (cf) or
// rows (cl).
template <class S, class T, bool MASK, bool ROW>
FASTCONV_ALWAYS_INLINE void grad_input_run(const T* grad, const T* y, const T* x, const T* mean, const T* k1,
                                           const T* k2, const T* k3, T* gx, int64_t n, bool stream) {
  using V = typename S::V;
  const V m0 = S::set1(ROW ? T(0) : mean[0]);
  const V c1 = S::set1(ROW ? T(0) : k1[0]), c2 = S::set1(ROW ? T(0) : k2[0]), c3 = S::set1(ROW ? T(0) : k3[0]);
  for (int64_t j = 0; j < n; j += S::W) {
    const int w = lanes<S>(n, j);
    V g = S::load_n(grad + j, w);
    if (MASK) g = masked_grad<S>(g, S::load_n(y + j, w));
    const V d = S::sub(S::load_n(x + j, w), ROW ? S::load_n(mean + j, w) : m0);
    const V v = S::fma(g, ROW ? S::load_n(k1 + j, w) : c1,
                       S::fma(d, ROW ? S::load_n(k2 + j, w) : c2, ROW ? S::load_n(k3 + j, w) : c3));
    put<S>(gx + j, v, w, stream);
  }
}

template <class T>
struct GradInput {
  template <bool MASK, bool ROW>
  struct Run {
    static void run(const T* grad, const T* y, const T* x, const T* mean, const T* k1, const T* k2, const T* k3,
                    T* gx, const BnParams& p, int64_t begin, int64_t end) {
      using S = typename SimdFor<T>::type;
      for (int64_t q = begin; q < end; ++q) {
        const int64_t o = q * (ROW ? p.channels : p.inner), c = ROW ? 0 : q % p.channels;
        grad_input_run<S, T, MASK, ROW>(grad + o, MASK ? y + o : nullptr, x + o, mean + c, k1 + c, k2 + c, k3 + c,
                                        gx + o, ROW ? p.channels : p.inner, p.stream);
      }
      if (p.stream) S::fence();
    }
  };
};

template <class T>
void grad_input_cf(const T* grad, const T* y, const T* x, const T* mean, const T* k1, const T* k2, const T* k3,
                   T* gx, const BnParams& p, int64_t begin, int64_t end) {
  with_flags<GradInput<T>::template Run>(y != nullptr, false, grad, y, x, mean, k1, k2, k3, gx, p, begin, end);
}

template <class T>
void grad_input_cl(const T* grad, const T* y, const T* x, const T* mean, const T* k1, const T* k2, const T* k3,
                   T* gx, const BnParams& p, int64_t begin, int64_t end) {
  with_flags<GradInput<T>::template Run>(y != nullptr, true, grad, y, x, mean, k1, k2, k3, gx, p, begin, end);
}

template <class T>
const bn::BnKernels<T>* make_bn_table() {
  static const bn::BnKernels<T> table = {&stats_cf<T>,     &stats_cl<T>,     &apply_cf<T>,      &apply_cl<T>,
                                         &grad_sums_cf<T>, &grad_sums_cl<T>, &grad_input_cf<T>, &grad_input_cl<T>};
  return &table;
}

}  // namespace
}  // namespace FASTCONV_CPU_NS
}  // namespace fastconv

#define FASTCONV_BN_CAT_(a, b, c) a##b##c
#define FASTCONV_BN_CAT(a, b, c) FASTCONV_BN_CAT_(a, b, c)

namespace fastconv {
namespace bn {
const BnKernels<float>* FASTCONV_BN_CAT(bn_kernels_, FASTCONV_ISA_NAME, _float)() {
  return FASTCONV_CPU_NS::make_bn_table<float>();
}
const BnKernels<double>* FASTCONV_BN_CAT(bn_kernels_, FASTCONV_ISA_NAME, _double)() {
  return FASTCONV_CPU_NS::make_bn_table<double>();
}
}  // namespace bn
}  // namespace fastconv
