// LRN kernels, written once against Simd<T> and compiled per ISA (lrn_kernels_<isa>.cpp).
//
// Channels-first (x[n][c][s]): a block of spatial positions is walked channel by channel,
// with a ring of the last `size` channels' squares, so each input is read once per pass and
// each window sum is formed in channel order from the ring (the same additions torch's
// average-pool formulation makes, no running subtraction). Channels-last (x[n][s][c]): each
// pixel's channel vector is squared into a zero-padded scratch row and every window sum is a
// few shifted vector loads.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "../../common/simd.h"
#include "lrn_kernels.h"

namespace fastconv {
namespace FASTCONV_CPU_NS {
namespace {

using lrn::LrnParams;

// Spatial positions per channels-first block: a whole AlexNet plane (55 x 55), so rows are
// long sequential runs; the rings (3 x size rows of it) stay in L2. (256 was 40% slower.)
constexpr int64_t kBlock = 4096;

// base^-beta for base >= k > 0. AlexNet's beta = 0.75 is a = base^-1/2, b = a^-1/2 =
// base^1/4, a * a * b, from reciprocal square roots (estimate + Newton step on the SIMD paths:
// within a few ulp of pow, and no divide or square root on the critical path); 0.5 and 1 are
// direct; any other beta calls libm per lane.
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V pow_neg_beta(typename S::V base, T beta) {
  // An infinite base (an Inf in the window) must give 0, as pow does; the reciprocal square
  // root's Newton step (and rsqrt(rsqrt(inf)) = inf) would make it 0 * inf = NaN.
  if (beta == T(0.75)) {
    const typename S::V a = S::rsqrt(base);
    return S::blend(S::gt(base, S::set1(std::numeric_limits<T>::max())), S::mul(S::mul(a, a), S::rsqrt(a)),
                    S::zero());
  }
  if (beta == T(0.5))
    return S::blend(S::gt(base, S::set1(std::numeric_limits<T>::max())), S::rsqrt(base), S::zero());
  if (beta == T(1)) return S::div(S::set1(T(1)), base);
  T lanes[S::W];
  S::store_n(lanes, base, S::W);
  for (int j = 0; j < S::W; ++j) {
    if constexpr (sizeof(T) == sizeof(float)) lanes[j] = 1.0f / __builtin_powf(lanes[j], beta);
    else lanes[j] = 1.0 / __builtin_pow(lanes[j], beta);
  }
  return S::load_n(lanes, S::W);
}

// The backward's window term u = (g / t^beta) x / t, as torch's autograd of x / t^beta forms
// it in IEEE arithmetic: at an infinite t (an Inf in the window) torch multiplies the zero
// g x / t^2beta by t^(beta - 1) = Inf when beta > 1, so u is NaN there (0 otherwise).
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V window_term(typename S::V gd, typename S::V x, typename S::V t, T beta) {
  const typename S::V u = S::div(S::mul(gd, x), t);
  if (beta > T(1)) return S::nan_where(S::gt(t, S::set1(std::numeric_limits<T>::max())), u);
  return u;
}

// grad_x = g / t^beta - coef x sum(u). With beta = 0 (coef = 0) torch's pow backward is zero,
// so only x itself can turn the term NaN (0 * Inf), not a NaN u from a neighbour's Inf.
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V input_grad(typename S::V gd, typename S::V x, typename S::V acc,
                                                typename S::V coef, T beta) {
  return S::sub(gd, S::mul(coef, beta == T(0) ? x : S::mul(x, acc)));
}

// t = k + alpha / size * sum.
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V lrn_base(typename S::V sum, const LrnParams& p) {
  return S::add(S::mul(sum, S::set1(static_cast<T>(p.alpha / static_cast<double>(p.size)))),
                S::set1(static_cast<T>(p.k)));
}

// Squares of channel c (zeros outside [0, C)) into a ring row.
template <class S, class T>
FASTCONV_ALWAYS_INLINE void square_row(const T* img, const LrnParams& p, int64_t c, int64_t s0, int n,
                                       T* row) {
  if (c < 0 || c >= p.channels) {
    for (int64_t j = 0; j < n; j += S::W) S::store_n(row + j, S::zero(), S::W);
    return;
  }
  const T* src = img + c * p.inner + s0;
  for (int64_t j = 0; j < n; j += S::W) {
    const int m = static_cast<int>(n - j < S::W ? n - j : S::W);
    const typename S::V v = S::load_n(src + j, m);
    S::store_n(row + j, S::mul(v, v), S::W);
  }
}

FASTCONV_ALWAYS_INLINE int64_t ring_slot(int64_t c, int64_t size) {
  const int64_t r = c % size;
  return r < 0 ? r + size : r;
}

// The ring rows of channels first..last, in channel order, looked up once per channel: the
// slot arithmetic (a modulo per row) in the per-vector loop cost more than the loads.
template <class T>
FASTCONV_ALWAYS_INLINE void window_rows(const T* ring, int64_t first, int64_t last, int64_t size, int64_t row_len,
                                        const T** rows) {
  for (int64_t w = first; w <= last; ++w) rows[w - first] = ring + ring_slot(w, size) * row_len;
}

// Sum, in channel order, of the window's rows at column j: the window sums of both the
// forward (squares) and the backward (u terms).
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V rows_sum(const T* const* rows, int64_t count, int64_t j) {
  typename S::V sum = S::zero();
  for (int64_t w = 0; w < count; ++w) sum = S::add(sum, S::load_n(rows[w] + j, S::W));
  return sum;
}

// Channels-last: sum of `size` consecutive scratch entries from each lane's position.
template <class S, class T>
FASTCONV_ALWAYS_INLINE typename S::V shifted_sum(const T* scratch, int64_t size) {
  typename S::V sum = S::zero();
  for (int64_t w = 0; w < size; ++w) sum = S::add(sum, S::load_n(scratch + w, S::W));
  return sum;
}

// Channels-last: one pixel's squares into a scratch row.
template <class S, class T>
FASTCONV_ALWAYS_INLINE void square_pixel(const T* px, int64_t channels, T* scratch) {
  for (int64_t c = 0; c < channels; c += S::W) {
    const int m = static_cast<int>(channels - c < S::W ? channels - c : S::W);
    const typename S::V v = S::load_n(px + c, m);
    S::store_n(scratch + c, S::mul(v, v), m);
  }
}

template <class T>
void fwd_channels_first(const T* x, T* y, const LrnParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t lo = p.size / 2, hi = (p.size - 1) / 2, C = p.channels;
  const int64_t row_len = (kBlock + S::W - 1) / S::W * S::W;
  T* ring = new T[p.size * row_len];
  const T** rows = new const T*[p.size];
  const T beta = static_cast<T>(p.beta);
  for (int64_t n = b; n < e; ++n) {
    const T* img = x + n * C * p.inner;
    T* out = y + n * C * p.inner;
    for (int64_t s0 = 0; s0 < p.inner; s0 += kBlock) {
      const int nb = static_cast<int>(p.inner - s0 < kBlock ? p.inner - s0 : kBlock);
      // Channels -lo .. hi - 1 first; channel c + hi joins the ring as channel c is produced.
      for (int64_t c = -lo; c < hi; ++c) square_row<S>(img, p, c, s0, nb, ring + ring_slot(c, p.size) * row_len);
      for (int64_t c = 0; c < C; ++c) {
        square_row<S>(img, p, c + hi, s0, nb, ring + ring_slot(c + hi, p.size) * row_len);
        const T* src = img + c * p.inner + s0;
        T* dst = out + c * p.inner + s0;
        window_rows(ring, c - lo, c + hi, p.size, row_len, rows);
        for (int64_t j = 0; j < nb; j += S::W) {
          const int m = static_cast<int>(nb - j < S::W ? nb - j : S::W);
          const typename S::V sum = rows_sum<S>(rows, p.size, j);
          const typename S::V inv_d = pow_neg_beta<S>(lrn_base<S, T>(sum, p), beta);
          S::store_n(dst + j, S::mul(S::load_n(src + j, m), inv_d), m);
        }
      }
    }
  }
  delete[] rows;
  delete[] ring;
}

template <class T>
void bwd_channels_first(const T* grad_y, const T* x, T* grad_x, const LrnParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t lo = p.size / 2, hi = (p.size - 1) / 2, C = p.channels;
  const int64_t row_len = (kBlock + S::W - 1) / S::W * S::W;
  // Rings: squares of x; u_c = g_c y_c / t_c; g_c / t_c^beta.
  T* sq = new T[3 * p.size * row_len];
  T* u = sq + p.size * row_len;
  T* g_over_d = u + p.size * row_len;
  const T** rows = new const T*[p.size];
  const T beta = static_cast<T>(p.beta);
  const typename S::V coef = S::set1(static_cast<T>(2.0 * p.alpha * p.beta / static_cast<double>(p.size)));
  for (int64_t n = b; n < e; ++n) {
    const T* img = x + n * C * p.inner;
    const T* gy = grad_y + n * C * p.inner;
    T* gx = grad_x + n * C * p.inner;
    for (int64_t s0 = 0; s0 < p.inner; s0 += kBlock) {
      const int nb = static_cast<int>(p.inner - s0 < kBlock ? p.inner - s0 : kBlock);
      for (int64_t c = -lo; c < hi; ++c) square_row<S>(img, p, c, s0, nb, sq + ring_slot(c, p.size) * row_len);
      for (int64_t c = -hi; c < 0; ++c) {  // channels before 0 contribute no u
        T* ur = u + ring_slot(c, p.size) * row_len;
        for (int64_t j = 0; j < nb; j += S::W) S::store_n(ur + j, S::zero(), S::W);
      }
      // Step c produces u_c (if c < C) and then grad_x of channel i = c - lo, whose covering
      // channels [i - hi, i + lo] = [c - size + 1, c] are exactly the ring's contents.
      for (int64_t c = 0; c < C + lo; ++c) {
        T* ur = u + ring_slot(c, p.size) * row_len;
        T* gr = g_over_d + ring_slot(c, p.size) * row_len;
        if (c < C) {
          square_row<S>(img, p, c + hi, s0, nb, sq + ring_slot(c + hi, p.size) * row_len);
          const T* xs = img + c * p.inner + s0;
          const T* gs = gy + c * p.inner + s0;
          window_rows(static_cast<const T*>(sq), c - lo, c + hi, p.size, row_len, rows);
          for (int64_t j = 0; j < nb; j += S::W) {
            const int m = static_cast<int>(nb - j < S::W ? nb - j : S::W);
            const typename S::V sum = rows_sum<S>(rows, p.size, j);
            const typename S::V t = lrn_base<S, T>(sum, p);
            const typename S::V gd = S::mul(S::load_n(gs + j, m), pow_neg_beta<S>(t, beta));
            S::store_n(gr + j, gd, S::W);
            S::store_n(ur + j, window_term<S>(gd, S::load_n(xs + j, m), t, beta), S::W);
          }
        } else {
          for (int64_t j = 0; j < nb; j += S::W) S::store_n(ur + j, S::zero(), S::W);
        }
        const int64_t i = c - lo;
        if (i < 0) continue;
        const T* xi = img + i * p.inner + s0;
        T* dst = gx + i * p.inner + s0;
        const T* gdi = g_over_d + ring_slot(i, p.size) * row_len;
        window_rows(static_cast<const T*>(u), i - hi, i + lo, p.size, row_len, rows);
        for (int64_t j = 0; j < nb; j += S::W) {
          const int m = static_cast<int>(nb - j < S::W ? nb - j : S::W);
          const typename S::V acc = rows_sum<S>(rows, p.size, j);
          S::store_n(dst + j, input_grad<S>(S::load_n(gdi + j, S::W), S::load_n(xi + j, m), acc, coef, beta), m);
        }
      }
    }
  }
  delete[] rows;
  delete[] sq;
}

template <class T>
void fwd_channels_last(const T* x, T* y, const LrnParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t lo = p.size / 2, C = p.channels;
  // Squares with lo zeros before channel 0 and enough zeros after the last channel for the
  // widest shifted load: window(c) = scratch[c .. c + size - 1].
  const int64_t padded = lo + C + p.size + S::W;
  T* sq = new T[padded];
  const T beta = static_cast<T>(p.beta);
  for (int64_t i = 0; i < padded; ++i) sq[i] = T(0);
  for (int64_t n = b; n < e; ++n) {
    for (int64_t s = 0; s < p.inner; ++s) {
      const T* px = x + (n * p.inner + s) * C;
      T* py = y + (n * p.inner + s) * C;
      square_pixel<S>(px, C, sq + lo);
      for (int64_t c = 0; c < C; c += S::W) {
        const int m = static_cast<int>(C - c < S::W ? C - c : S::W);
        const typename S::V sum = shifted_sum<S>(sq + c, p.size);
        const typename S::V inv_d = pow_neg_beta<S>(lrn_base<S, T>(sum, p), beta);
        S::store_n(py + c, S::mul(S::load_n(px + c, m), inv_d), m);
      }
    }
  }
  delete[] sq;
}

template <class T>
void bwd_channels_last(const T* grad_y, const T* x, T* grad_x, const LrnParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t lo = p.size / 2, hi = (p.size - 1) / 2, C = p.channels;
  const int64_t padded = C + p.size + S::W;
  T* sq = new T[3 * padded];
  T* u = sq + padded;         // u with hi zeros in front: cover(i) = u[i .. i + size - 1]
  T* g_over_d = u + padded;
  for (int64_t i = 0; i < 3 * padded; ++i) sq[i] = T(0);
  const T beta = static_cast<T>(p.beta);
  const typename S::V coef = S::set1(static_cast<T>(2.0 * p.alpha * p.beta / static_cast<double>(p.size)));
  for (int64_t n = b; n < e; ++n) {
    for (int64_t s = 0; s < p.inner; ++s) {
      const int64_t base = (n * p.inner + s) * C;
      const T* px = x + base;
      const T* pg = grad_y + base;
      T* pgx = grad_x + base;
      square_pixel<S>(px, C, sq + lo);
      for (int64_t c = 0; c < C; c += S::W) {
        const int m = static_cast<int>(C - c < S::W ? C - c : S::W);
        const typename S::V sum = shifted_sum<S>(sq + c, p.size);
        const typename S::V t = lrn_base<S, T>(sum, p);
        const typename S::V gd = S::mul(S::load_n(pg + c, m), pow_neg_beta<S>(t, beta));
        S::store_n(g_over_d + c, gd, m);
        S::store_n(u + hi + c, window_term<S>(gd, S::load_n(px + c, m), t, beta), m);
      }
      for (int64_t c = 0; c < C; c += S::W) {
        const int m = static_cast<int>(C - c < S::W ? C - c : S::W);
        const typename S::V acc = shifted_sum<S>(u + c, p.size);
        S::store_n(pgx + c, input_grad<S>(S::load_n(g_over_d + c, S::W), S::load_n(px + c, m), acc, coef, beta), m);
      }
    }
  }
  delete[] sq;
}

template <class T>
const lrn::LrnKernels<T>* make_lrn_table() {
  static const lrn::LrnKernels<T> table = {&fwd_channels_first<T>, &fwd_channels_last<T>,
                                           &bwd_channels_first<T>, &bwd_channels_last<T>};
  return &table;
}

}  // namespace
}  // namespace FASTCONV_CPU_NS
}  // namespace fastconv

#define FASTCONV_LRN_CAT_(a, b, c) a##b##c
#define FASTCONV_LRN_CAT(a, b, c) FASTCONV_LRN_CAT_(a, b, c)

namespace fastconv {
namespace lrn {
const LrnKernels<float>* FASTCONV_LRN_CAT(lrn_kernels_, FASTCONV_ISA_NAME, _float)() {
  return FASTCONV_CPU_NS::make_lrn_table<float>();
}
const LrnKernels<double>* FASTCONV_LRN_CAT(lrn_kernels_, FASTCONV_ISA_NAME, _double)() {
  return FASTCONV_CPU_NS::make_lrn_table<double>();
}
}  // namespace lrn
}  // namespace fastconv
