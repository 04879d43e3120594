// Pooling kernels, written once against the Simd<T> layer and compiled per ISA by
// pool_kernels_{avx512,avx2,default}.cpp (each defines FASTCONV_CPU_NS and FASTCONV_ISA_NAME).
//
// NCHW: a plane is a (H, W) image; vectors run along output columns. Columns whose window
// is fully inside the input (the interior) take the vector path, with strided loads when the
// pool stride is > 1; the few border columns take a scalar path with torch's exact bounds.
// NHWC: vectors run along channels, which are contiguous, so every tap is one plain load.
#pragma once

#include <cstdint>
#include <cstring>

#include "../../common/simd.h"
#include "pool_kernels.h"

namespace fastconv {
namespace FASTCONV_CPU_NS {
namespace {

using pool::AvgWindow;
using pool::MaxWindow;
using pool::Pool2dParams;

// ---------------------------------------------------------------- stores

template <class S, class T>
FASTCONV_ALWAYS_INLINE void put(const Pool2dParams& p, T* dst, typename S::V v, int n) {
  if (p.stream_output) S::stream_n(dst, v, n); else S::store_n(dst, v, n);
}
template <class S, class I>
FASTCONV_ALWAYS_INLINE void put_idx(const Pool2dParams& p, I* dst, typename S::VI v, int n) {
  if (p.stream_output) S::stream_idx_n(dst, v, n); else S::store_idx_n(dst, v, n);
}
// Non-temporal stores are weakly ordered: fence before the slice is reported done.
template <class S>
FASTCONV_ALWAYS_INLINE void finish_stores(const Pool2dParams& p) {
  if (p.stream_output) S::fence();
}

// ---------------------------------------------------------------- max pooling, NCHW

// For a chunk of W output columns and one kernel column kw, the lanes whose tap lies inside
// the input row: [lo, hi). Interior chunks get [0, n); border chunks (padding, ceil_mode)
// fewer, and their other lanes are filled instead of loaded. Depends only on the column
// geometry, so it is tabulated once per call rather than per row and plane.
struct TapLanes {
  int32_t lo, hi;
};

class TapTable {
 public:
  TapTable(int64_t out_w, int64_t lanes, int64_t stride, int64_t pad, int64_t kernel,
           int64_t dilation, int64_t in_w)
      : kernel_(kernel), chunks_((out_w + lanes - 1) / lanes),
        taps_(new TapLanes[chunks_ * kernel]), interior_(new bool[chunks_]),
        roomy_(new bool[chunks_]) {
    for (int64_t c = 0; c < chunks_; ++c) {
      const int64_t ow = c * lanes;
      const int64_t n = out_w - ow < lanes ? out_w - ow : lanes;
      bool full = true;
      for (int64_t kw = 0; kw < kernel; ++kw) {
        const int64_t off = ow * stride - pad + kw * dilation;  // input column of lane 0
        int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
        int64_t hi = off > in_w - 1 ? 0 : (in_w - 1 - off) / stride + 1;
        if (hi > n) hi = n;
        if (lo > hi) lo = hi;
        taps_[c * kernel + kw] = {static_cast<int32_t>(lo), static_cast<int32_t>(hi)};
        full = full && lo == 0 && hi == n;
      }
      interior_[c] = full;
      // A full vector of stride-s loads reads s * lanes elements from its last tap's start.
      const int64_t last_tap = ow * stride - pad + (kernel - 1) * dilation;
      roomy_[c] = full && n == lanes && last_tap + stride * lanes <= in_w;
    }
  }
  ~TapTable() {
    delete[] taps_;
    delete[] interior_;
    delete[] roomy_;
  }
  TapTable(const TapTable&) = delete;
  TapTable& operator=(const TapTable&) = delete;
  const TapLanes* chunk(int64_t c) const { return taps_ + c * kernel_; }
  bool interior(int64_t c) const { return interior_[c]; }
  // Interior, and every tap's full-width load stays inside the row: no masks needed.
  bool roomy(int64_t c) const { return roomy_[c]; }

 private:
  int64_t kernel_, chunks_;
  TapLanes* taps_;
  bool* interior_;
  bool* roomy_;
};

// A strided window reads its kernel rows as interleaved streams that the hardware
// prefetchers follow poorly (VGG's 2x2/2 pool ran at 4 GB/s from DRAM). Each output row
// therefore prefetches the input rows that the output row two ahead will add. Rows past the
// plane are the next plane's first rows (planes are contiguous), which is what comes next;
// past the tensor, prefetches simply do nothing.
// NHWC: the part of the rows that output (oh_ahead, ow) adds, so prefetches are spread over
// the row's pixels instead of issued in one burst that overflows the miss queues.
template <class T>
FASTCONV_ALWAYS_INLINE void prefetch_pixels_for(const T* img, int64_t oh_ahead, int64_t ow,
                                                const Pool2dParams& p, int64_t dilation_h) {
  const int64_t last = oh_ahead * p.stride_h - p.pad_h + (p.kernel_h - 1) * dilation_h;
  const int64_t first = last - (p.stride_h < p.kernel_h ? p.stride_h : p.kernel_h) + 1;
  int64_t iw = ow * p.stride_w - p.pad_w + (p.kernel_w - 1) * p.dilation_w;  // newest column
  if (iw < 0) iw = 0;
  const int64_t C = p.channels;
  const int64_t bytes = (p.stride_w < p.kernel_w ? p.stride_w : p.kernel_w) * C * static_cast<int64_t>(sizeof(T));
  for (int64_t r = first < 0 ? 0 : first; r <= last; ++r) {
    const char* end = reinterpret_cast<const char*>(img + (r * p.in_w + iw + 1) * C);
    for (int64_t off = 64; off <= bytes + 63; off += 64) __builtin_prefetch(end - off);
  }
}

// row_elems: elements per input row (in_w for NCHW, in_w * C for NHWC).
template <class T>
FASTCONV_ALWAYS_INLINE void prefetch_rows_for(const T* plane, int64_t oh_ahead, const Pool2dParams& p,
                                              int64_t dilation_h, int64_t row_elems) {
  // Short rows of a large plane make one near-sequential stream that the hardware prefetcher
  // follows well; software prefetches there got in its way (AlexNet's 55x55 planes: 8% slower).
  // Small planes (GoogLeNet's 28x28) end before it ramps up, and keep them (20% faster).
  const int64_t row_bytes_in = row_elems * static_cast<int64_t>(sizeof(T));
  if (row_bytes_in < 512 && p.in_h * row_bytes_in >= 8192) return;
  const int64_t last = oh_ahead * p.stride_h - p.pad_h + (p.kernel_h - 1) * dilation_h;
  const int64_t first = last - (p.stride_h < p.kernel_h ? p.stride_h : p.kernel_h) + 1;
  const int64_t row_bytes = row_elems * static_cast<int64_t>(sizeof(T));
  for (int64_t r = first < 0 ? 0 : first; r <= last; ++r) {
    const char* row = reinterpret_cast<const char*>(plane + r * row_elems);
    for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off);
  }
}

// Folds one tap into the running max (and argmax) of a chunk.
// ramp holds lane * stride, so a tap's lane indices are one add away.
template <class S, bool kIndices>
FASTCONV_ALWAYS_INLINE void max_update(typename S::V v, typename S::V& best, typename S::VI& best_i,
                                       typename S::M& nan_seen, int64_t first_index,
                                       const typename S::VI& ramp) {
  if (kIndices) {
    const typename S::M take = S::mor(S::gt(v, best), S::is_nan(v));
    best = S::blend(take, best, v);
    best_i = S::iblend(take, best_i, S::iadd(ramp, first_index));
  } else {
    // max(best, v) keeps a NaN in v but drops a NaN already in best, so NaNs are tracked on
    // the side and restored at the end.
    best = S::max(best, v);
    nan_seen = S::mor(nan_seen, S::is_nan(v));
  }
}

// Max over a 2x2/2 or 3x3/2 window chunk (no argmax), vertical first: the raw row segments
// of the window's rows are maxed lane-wise, and only that one combined segment is
// deinterleaved into the even / odd / next-even columns. One set of permutes per chunk
// instead of one per tap. NaNs are caught by summing every element read (a NaN, or inf + -inf,
// turns the sum NaN); the rare chunk with one returns false and takes the exact per-tap path.
// Needs a roomy chunk: p[w0 .. w0 + kKW - 1 + 2W) inside each row.
template <class S, class T, int kKW>
FASTCONV_ALWAYS_INLINE bool max_chunk_stride2(const T* src, const Pool2dParams& p, const MaxWindow& wh,
                                              int64_t w0, typename S::V& best) {
  const typename S::V neg_inf = S::set1(-__builtin_inf());
  typename S::V lo = neg_inf, hi = neg_inf, lo2 = neg_inf, hi2 = neg_inf, sum = S::zero();
  for (int64_t ih = wh.start; ih < wh.end; ih += p.dilation_h) {
    const T* r = src + ih * p.in_w + w0;
    const typename S::V a = S::load_n(r, S::W), b = S::load_n(r + S::W, S::W);
    lo = S::max(lo, a);
    hi = S::max(hi, b);
    sum = S::add(sum, S::add(a, b));
    if (kKW == 3) {
      // Columns 2j + 2: the same segment two elements on; only d's last two are new (W >= 2).
      const typename S::V c = S::load_n(r + 2, S::W), d = S::load_n(r + 2 + S::W, S::W);
      lo2 = S::max(lo2, c);
      hi2 = S::max(hi2, d);
      sum = S::add(sum, d);
      if (S::W == 1) sum = S::add(sum, c);  // one lane: c is not inside a and b
    }
  }
  if (S::any_lane(S::is_nan(sum))) return false;
  best = S::max(S::evens(lo, hi), S::odds(lo, hi));
  if (kKW == 3) best = S::max(best, S::evens(lo2, hi2));
  return true;
}

// kKW / kSW: compile-time kernel width and stride for the common shapes (2x2/2, 3x3/2,
// 3x3/1), so the tap loop of the hot chunks unrolls into straight-line loads; 0 means "read
// from p" (any shape, dilation included).
template <class T, class I, bool kIndices, int kKW, int kSW>
void max_fwd_nchw_impl(const T* in, T* out, I* indices, const Pool2dParams& p, int64_t b,
                       int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t kernel_w = kKW ? kKW : p.kernel_w, stride_w = kSW ? kSW : p.stride_w;
  const int64_t dilation_w = kKW ? 1 : p.dilation_w;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  const TapTable table(p.out_w, S::W, stride_w, p.pad_w, kernel_w, dilation_w, p.in_w);
  const T neg_inf = -__builtin_inf();
  const typename S::VI ramp = S::iramp(0, stride_w);
  // Each output column's first in-bounds tap: a lane with no in-bounds tap keeps this as its
  // argmax, as torch does (the window start advanced past the padding, even past the row).
  const int64_t padded_w = (p.out_w + S::W - 1) / S::W * S::W;
  int64_t* col_start = kIndices ? new int64_t[padded_w] : nullptr;
  for (int64_t ow = 0; kIndices && ow < padded_w; ++ow) {
    col_start[ow] = pool::max_window(ow < p.out_w ? ow : 0, stride_w, p.pad_w, kernel_w, dilation_w, p.in_w).start;
  }
  for (int64_t plane = b; plane < e; ++plane) {
    const T* src = in + plane * plane_in;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const MaxWindow wh = pool::max_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
      T* dst = out + plane * plane_out + oh * p.out_w;
      I* dst_i = kIndices ? indices + plane * plane_out + oh * p.out_w : nullptr;
      prefetch_rows_for(src, oh + 2, p, p.dilation_h, p.in_w);
      for (int64_t ow = 0, c = 0; ow < p.out_w; ow += S::W, ++c) {
        const int n = static_cast<int>(p.out_w - ow < S::W ? p.out_w - ow : S::W);
        const int64_t w0 = ow * stride_w - p.pad_w;
        typename S::V best = S::set1(neg_inf);
        typename S::M nan_seen = S::no_lanes();
        typename S::VI best_i{};
        if (kIndices) best_i = S::iadd(ramp, wh.start * p.in_w + w0);
        if (!kIndices && kSW == 2 && (kKW == 2 || kKW == 3) && table.roomy(c) &&
            max_chunk_stride2<S, T, kKW>(src, p, wh, w0, best)) {
          // done: the vertical-first kernel below handled this chunk
        } else if (table.roomy(c)) {
          for (int64_t ih = wh.start; ih < wh.end; ih += p.dilation_h) {
            const T* row = src + ih * p.in_w + w0;
            for (int64_t kw = 0; kw < kernel_w; ++kw) {
              max_update<S, kIndices>(S::load_strided_full(row + kw * dilation_w, stride_w), best,
                                      best_i, nan_seen, ih * p.in_w + w0 + kw * dilation_w, ramp);
            }
          }
        } else {
          const TapLanes* taps = table.chunk(c);
          const bool interior = table.interior(c);
          // Lanes whose first in-bounds tap is still ahead. torch's argmax starts at the first
          // in-bounds tap even when every value is -inf; taking that tap unconditionally
          // reproduces it. Interior chunks already start with the right index ramp.
          typename S::M unvisited = interior ? S::no_lanes() : S::range_mask(0, S::W);
          if (kIndices && !interior) best_i = S::iadd(S::load_idx_n(col_start + ow, S::W), wh.start * p.in_w);
          for (int64_t ih = wh.start; ih < wh.end; ih += p.dilation_h) {
            const T* row = src + ih * p.in_w + w0;
            for (int64_t kw = 0; kw < kernel_w; ++kw) {
              const TapLanes t = taps[kw];
              if (t.lo >= t.hi) continue;
              const T* tap = row + kw * dilation_w;
              const typename S::V v = interior ? S::load_strided_n(tap, stride_w, n)
                                               : S::load_strided_range(tap, stride_w, t.lo, t.hi, neg_inf);
              const int64_t first_index = ih * p.in_w + w0 + kw * dilation_w;
              if (kIndices && !interior) {
                const typename S::M valid = S::range_mask(t.lo, t.hi);
                const typename S::M take = S::mor(S::mor(S::gt(v, best), S::is_nan(v)),
                                                  S::mand(valid, unvisited));
                unvisited = S::mandnot(unvisited, valid);
                best = S::blend(take, best, v);
                best_i = S::iblend(take, best_i, S::iadd(ramp, first_index));
              } else {
                max_update<S, kIndices>(v, best, best_i, nan_seen, first_index, ramp);
              }
            }
          }
        }
        if (!kIndices) best = S::nan_where(nan_seen, best);
        put<S>(p, dst + ow, best, n);
        if (kIndices) put_idx<S>(p, dst_i + ow, best_i, n);
      }
    }
  }
  finish_stores<S>(p);
  delete[] col_start;
}

template <class T, class I, bool kIndices>
void max_fwd_nchw(const T* in, T* out, I* indices, const Pool2dParams& p, int64_t b, int64_t e) {
  if (p.dilation_w == 1 && p.kernel_w == 2 && p.stride_w == 2) {
    max_fwd_nchw_impl<T, I, kIndices, 2, 2>(in, out, indices, p, b, e);
  } else if (p.dilation_w == 1 && p.kernel_w == 3 && p.stride_w == 2) {
    max_fwd_nchw_impl<T, I, kIndices, 3, 2>(in, out, indices, p, b, e);
  } else if (p.dilation_w == 1 && p.kernel_w == 3 && p.stride_w == 1) {
    max_fwd_nchw_impl<T, I, kIndices, 3, 1>(in, out, indices, p, b, e);
  } else {
    max_fwd_nchw_impl<T, I, kIndices, 0, 0>(in, out, indices, p, b, e);
  }
}

// ---------------------------------------------------------------- max pooling, NHWC

template <class T, class I, bool kIndices>
void max_fwd_nhwc(const T* in, T* out, I* indices, const Pool2dParams& p, int64_t b,
                  int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  for (int64_t r = b; r < e; ++r) {
    const int64_t n = r / p.out_h, oh = r % p.out_h;
    const MaxWindow wh = pool::max_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
    const T* img = in + n * p.in_h * p.in_w * C;
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      prefetch_pixels_for(img, oh + 2, ow, p, p.dilation_h);
      const MaxWindow ww = pool::max_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w);
      const int64_t o = (r * p.out_w + ow) * C;
      const int64_t first = wh.start * p.in_w + ww.start;
      for (int64_t c = 0; c < C; c += S::W) {
        const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
        typename S::V best = S::set1(-__builtin_inf());
        typename S::M nan_seen = S::no_lanes();
        typename S::VI best_i{};
        if (kIndices) best_i = S::iset1(first);
        for (int64_t ih = wh.start; ih < wh.end; ih += p.dilation_h) {
          for (int64_t iw = ww.start; iw < ww.end; iw += p.dilation_w) {
            const typename S::V v = S::load_n(img + (ih * p.in_w + iw) * C + c, lanes);
            if (kIndices) {
              const typename S::M take = S::mor(S::gt(v, best), S::is_nan(v));
              best = S::blend(take, best, v);
              best_i = S::iblend(take, best_i, S::iset1(ih * p.in_w + iw));
            } else {
              best = S::max(best, v);
              nan_seen = S::mor(nan_seen, S::is_nan(v));
            }
          }
        }
        if (!kIndices) best = S::nan_where(nan_seen, best);
        put<S>(p, out + o + c, best, lanes);
        if (kIndices) put_idx<S>(p, indices + o + c, best_i, lanes);
      }
    }
  }
  finish_stores<S>(p);
}

// ---------------------------------------------------------------- max pooling, backward

template <class T>
FASTCONV_ALWAYS_INLINE T avg_divisor(const Pool2dParams& p, const AvgWindow& wh, const AvgWindow& ww) {
  return p.divisor_override != 0 ? static_cast<T>(p.divisor_override)
                                 : static_cast<T>(wh.count * ww.count);
}

template <class T, class I>
void max_bwd_nchw(const T* grad_out, const I* indices, T* grad_in, const Pool2dParams& p,
                  int64_t b, int64_t e) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t plane = b; plane < e; ++plane) {
    T* gi = grad_in + plane * plane_in;
    std::memset(gi, 0, sizeof(T) * plane_in);
    const T* go = grad_out + plane * plane_out;
    const I* ix = indices + plane * plane_out;
    // A window that lies wholly in the padding (possible with dilation) has torch's argmax
    // pointing past the plane; it carries no gradient, and must not be written.
    for (int64_t i = 0; i < plane_out; ++i) {
      if (static_cast<uint64_t>(ix[i]) < static_cast<uint64_t>(plane_in)) gi[ix[i]] += go[i];
    }
  }
}

// Output rows (or columns) whose window can reach input row i: [first, last], clipped.
struct Covering {
  int64_t first, last;
};
FASTCONV_ALWAYS_INLINE Covering covering_outputs(int64_t i, int64_t stride, int64_t pad,
                                                 int64_t kernel, int64_t dilation, int64_t out) {
  int64_t first = -div_floor(-(i + pad - (kernel - 1) * dilation), stride);  // ceil division
  int64_t last = div_floor(i + pad, stride);
  if (first < 0) first = 0;
  if (last > out - 1) last = out - 1;
  return {first, last};
}

// Max backward, NHWC, in gather form: each input pixel sums the gradients of the outputs
// whose argmax is that pixel, a vector of channels at a time (lane mask "argmax == me").
// Every input-gradient element is written exactly once, so there is no zero fill, no
// read-modify-write, and rows of the batch can be split across threads freely.
// Precondition: no window is empty (else an argmax may point outside its window; the
// glue then uses the scatter kernel below).
template <class T, class I>
void max_bwd_nhwc(const T* grad_out, const I* indices, T* grad_in, const Pool2dParams& p,
                  int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  for (int64_t r = b; r < e; ++r) {  // r = n * in_h + ih
    const int64_t n = r / p.in_h, ih = r % p.in_h;
    const Covering rows = covering_outputs(ih, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.out_h);
    const T* go = grad_out + n * p.out_h * p.out_w * C;
    const I* ix = indices + n * p.out_h * p.out_w * C;
    for (int64_t iw = 0; iw < p.in_w; ++iw) {
      const Covering cols = covering_outputs(iw, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.out_w);
      const int64_t cell = ih * p.in_w + iw;
      T* dst = grad_in + (r * p.in_w + iw) * C;
      for (int64_t c = 0; c < C; c += S::W) {
        const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
        typename S::V acc = S::zero();
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
            const int64_t o = (oh * p.out_w + ow) * C + c;
            acc = S::mask_add(S::ieq(S::load_idx_n(ix + o, lanes), cell), acc, S::load_n(go + o, lanes));
          }
        }
        put<S>(p, dst + c, acc, lanes);
      }
    }
  }
  finish_stores<S>(p);
}

// Scatter form for the rare shapes with empty windows: torch sends such a window's gradient
// to its (out-of-window) argmax when that lies inside the image, so do the same, checked.
template <class T, class I>
void max_bwd_nhwc_scatter(const T* grad_out, const I* indices, T* grad_in,
                          const Pool2dParams& p, int64_t b, int64_t e) {
  const int64_t C = p.channels, cells = p.in_h * p.in_w;
  for (int64_t n = b; n < e; ++n) {
    T* gi = grad_in + n * cells * C;
    std::memset(gi, 0, sizeof(T) * cells * C);
    const T* go = grad_out + n * p.out_h * p.out_w * C;
    const I* ix = indices + n * p.out_h * p.out_w * C;
    for (int64_t o = 0; o < p.out_h * p.out_w; ++o) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t cell = ix[o * C + c];
        if (static_cast<uint64_t>(cell) < static_cast<uint64_t>(cells)) gi[cell * C + c] += go[o * C + c];
      }
    }
  }
}

// ---------------------------------------------------------------- average pooling


template <class T>
void avg_fwd_nchw(const T* in, T* out, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  const TapTable table(p.out_w, S::W, p.stride_w, p.pad_w, p.kernel_w, 1, p.in_w);
  // Per-column share of the divisor (the row share is a scalar per output row).
  const int64_t padded_w = (p.out_w + S::W - 1) / S::W * S::W;
  T* col_count = new T[padded_w];
  for (int64_t ow = 0; ow < padded_w; ++ow) {
    col_count[ow] = ow < p.out_w ? static_cast<T>(pool::avg_window(ow, p.stride_w, p.pad_w, p.kernel_w,
                                                                   p.in_w, p.count_include_pad).count)
                                 : T(1);
  }
  for (int64_t plane = b; plane < e; ++plane) {
    const T* src = in + plane * plane_in;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const AvgWindow wh = pool::avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
      T* dst = out + plane * plane_out + oh * p.out_w;
      const typename S::V row_count = S::set1(static_cast<T>(wh.count));
      prefetch_rows_for(src, oh + 2, p, 1, p.in_w);
      for (int64_t ow = 0, c = 0; ow < p.out_w; ow += S::W, ++c) {
        const int n = static_cast<int>(p.out_w - ow < S::W ? p.out_w - ow : S::W);
        const int64_t w0 = ow * p.stride_w - p.pad_w;
        const TapLanes* taps = table.chunk(c);
        const bool interior = table.interior(c), roomy = table.roomy(c);
        typename S::V sum = S::zero();
        for (int64_t ih = wh.start; ih < wh.end; ++ih) {
          const T* row = src + ih * p.in_w + w0;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const TapLanes t = taps[kw];
            if (t.lo >= t.hi) continue;
            sum = S::add(sum, roomy      ? S::load_strided_full(row + kw, p.stride_w)
                              : interior ? S::load_strided_n(row + kw, p.stride_w, n)
                                         : S::load_strided_range(row + kw, p.stride_w, t.lo, t.hi, T(0)));
          }
        }
        const typename S::V divisor = p.divisor_override != 0
                                          ? S::set1(static_cast<T>(p.divisor_override))
                                          : S::mul(row_count, S::load_n(col_count + ow, S::W));
        put<S>(p, dst + ow, S::div(sum, divisor), n);
      }
    }
  }
  finish_stores<S>(p);
  delete[] col_count;
}

template <class T>
void avg_fwd_nhwc(const T* in, T* out, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  for (int64_t r = b; r < e; ++r) {
    const int64_t n = r / p.out_h, oh = r % p.out_h;
    const AvgWindow wh = pool::avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
    const T* img = in + n * p.in_h * p.in_w * C;
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      prefetch_pixels_for(img, oh + 2, ow, p, 1);
      const AvgWindow ww = pool::avg_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.in_w, p.count_include_pad);
      const typename S::V vdiv = S::set1(avg_divisor<T>(p, wh, ww));
      T* dst = out + (r * p.out_w + ow) * C;
      for (int64_t c = 0; c < C; c += S::W) {
        const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
        typename S::V sum = S::zero();
        for (int64_t ih = wh.start; ih < wh.end; ++ih)
          for (int64_t iw = ww.start; iw < ww.end; ++iw)
            sum = S::add(sum, S::load_n(img + (ih * p.in_w + iw) * C + c, lanes));
        put<S>(p, dst + c, S::div(sum, vdiv), lanes);
      }
    }
  }
  finish_stores<S>(p);
}

// Backward scatters each output gradient over its window. A plane (NCHW) or an image (NHWC)
// is owned by one thread, so overlapping windows accumulate without atomics.
// Backward at column stride 1, in gather form: the plane's gradients are first scaled by
// their divisors into a buffer whose rows carry kernel_w zeros on each side, then every input
// row sums, for each covering output row and kernel column, one shifted vector of it. Each
// input gradient is written once; a scatter here re-read each row right after writing it,
// one element over, and stalled on store-to-load forwarding.
template <class T>
void avg_bwd_nchw_stride1(const T* grad_out, T* grad_in, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  const int64_t margin = p.kernel_w, row_len = p.out_w + 2 * margin + S::W;
  T* scaled = new T[p.out_h * row_len];
  for (int64_t i = 0; i < p.out_h * row_len; ++i) scaled[i] = T(0);
  T* inv_div = new T[p.out_h * p.out_w];
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const AvgWindow wh = pool::avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const AvgWindow ww = pool::avg_window(ow, 1, p.pad_w, p.kernel_w, p.in_w, p.count_include_pad);
      inv_div[oh * p.out_w + ow] = T(1) / avg_divisor<T>(p, wh, ww);
    }
  }
  for (int64_t plane = b; plane < e; ++plane) {
    const T* go = grad_out + plane * plane_out;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      T* row = scaled + oh * row_len + margin;
      for (int64_t ow = 0; ow < p.out_w; ow += S::W) {
        const int n = static_cast<int>(p.out_w - ow < S::W ? p.out_w - ow : S::W);
        S::store_n(row + ow, S::mul(S::load_n(go + oh * p.out_w + ow, n), S::load_n(inv_div + oh * p.out_w + ow, n)), n);
      }
    }
    T* gi = grad_in + plane * plane_in;
    for (int64_t ih = 0; ih < p.in_h; ++ih) {
      const Covering rows = covering_outputs(ih, p.stride_h, p.pad_h, p.kernel_h, 1, p.out_h);
      for (int64_t iw = 0; iw < p.in_w; iw += S::W) {
        const int n = static_cast<int>(p.in_w - iw < S::W ? p.in_w - iw : S::W);
        typename S::V acc = S::zero();
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          // Output column ow = iw + pad_w - kw covers input column iw.
          const T* src = scaled + oh * row_len + margin + iw + p.pad_w;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) acc = S::add(acc, S::load_n(src - kw, S::W));
        }
        put<S>(p, gi + ih * p.in_w + iw, acc, n);
      }
    }
  }
  finish_stores<S>(p);
  delete[] inv_div;
  delete[] scaled;
}

// Backward scatters each output gradient (divided by its window's divisor) over its window.
// Per output row: the scaled gradients of the row, then for every kernel tap one add of that
// row into the input-gradient row, shifted by the tap: contiguous vector adds at stride 1.
template <class T>
void avg_bwd_nchw(const T* grad_out, T* grad_in, const Pool2dParams& p, int64_t b, int64_t e) {
  if (p.stride_w == 1) return avg_bwd_nchw_stride1(grad_out, grad_in, p, b, e);
  using S = typename SimdFor<T>::type;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  const int64_t padded_w = (p.out_w + S::W - 1) / S::W * S::W;
  T* inv_col = new T[2 * padded_w];  // 1 / column share of the divisor, then the scaled row
  T* scaled = inv_col + padded_w;
  for (int64_t ow = 0; ow < padded_w; ++ow) {
    const int64_t count = ow < p.out_w ? pool::avg_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.in_w,
                                                          p.count_include_pad).count : 1;
    inv_col[ow] = T(1) / static_cast<T>(p.divisor_override != 0 ? 1 : count);
  }
  // Output columns whose tap kw lands inside the input row: [first, last).
  int64_t* cols = new int64_t[2 * p.kernel_w];
  for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
    const int64_t shift = kw - p.pad_w;  // input column = ow * stride + shift
    int64_t first = shift >= 0 ? 0 : (-shift + p.stride_w - 1) / p.stride_w;
    int64_t last = p.in_w - 1 - shift < 0 ? 0 : (p.in_w - 1 - shift) / p.stride_w + 1;
    if (last > p.out_w) last = p.out_w;
    cols[2 * kw] = first;
    cols[2 * kw + 1] = first < last ? last : first;
  }
  for (int64_t plane = b; plane < e; ++plane) {
    T* gi = grad_in + plane * plane_in;
    std::memset(gi, 0, sizeof(T) * plane_in);
    const T* go = grad_out + plane * plane_out;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const AvgWindow wh = pool::avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
      const typename S::V row_div =
          S::set1(static_cast<T>(p.divisor_override != 0 ? p.divisor_override : wh.count));
      for (int64_t ow = 0; ow < p.out_w; ow += S::W) {
        const int n = static_cast<int>(p.out_w - ow < S::W ? p.out_w - ow : S::W);
        S::store_n(scaled + ow, S::div(S::mul(S::load_n(go + oh * p.out_w + ow, n), S::load_n(inv_col + ow, S::W)), row_div), n);
      }
      for (int64_t ih = wh.start; ih < wh.end; ++ih) {
        T* row = gi + ih * p.in_w;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t first = cols[2 * kw], last = cols[2 * kw + 1], shift = kw - p.pad_w;
          if (p.stride_w == 1) {
            T* dst = row + shift;
            for (int64_t j = first; j < last; j += S::W) {
              const int n = static_cast<int>(last - j < S::W ? last - j : S::W);
              S::store_n(dst + j, S::add(S::load_n(dst + j, n), S::load_n(scaled + j, n)), n);
            }
          } else {
            for (int64_t j = first; j < last; ++j) row[j * p.stride_w + shift] += scaled[j];
          }
        }
      }
    }
  }
  delete[] cols;
  delete[] inv_col;
}

// Gather form, as for max: each input pixel sums share = grad / divisor over the outputs
// whose window holds it; written once, split over rows of the batch.
template <class T>
void avg_bwd_nhwc(const T* grad_out, T* grad_in, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  for (int64_t r = b; r < e; ++r) {  // r = n * in_h + ih
    const int64_t n = r / p.in_h, ih = r % p.in_h;
    const Covering rows = covering_outputs(ih, p.stride_h, p.pad_h, p.kernel_h, 1, p.out_h);
    const T* go = grad_out + n * p.out_h * p.out_w * C;
    for (int64_t iw = 0; iw < p.in_w; ++iw) {
      const Covering cols = covering_outputs(iw, p.stride_w, p.pad_w, p.kernel_w, 1, p.out_w);
      T* dst = grad_in + (r * p.in_w + iw) * C;
      for (int64_t c = 0; c < C; c += S::W) {
        const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
        typename S::V acc = S::zero();
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          const AvgWindow wh = pool::avg_window(oh, p.stride_h, p.pad_h, p.kernel_h, p.in_h, p.count_include_pad);
          for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
            const AvgWindow ww = pool::avg_window(ow, p.stride_w, p.pad_w, p.kernel_w, p.in_w, p.count_include_pad);
            acc = S::add(acc, S::div(S::load_n(go + (oh * p.out_w + ow) * C + c, lanes),
                                     S::set1(avg_divisor<T>(p, wh, ww))));
          }
        }
        put<S>(p, dst + c, acc, lanes);
      }
    }
  }
  finish_stores<S>(p);
}

// ---------------------------------------------------------------- adaptive average pooling

// Elements summed in T before a block's sum joins the double total (global pooling).
constexpr int64_t kGlobalBlock = 4096;

template <class T>
void adaptive_avg_fwd_nchw(const T* in, T* out, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t plane = b; plane < e; ++plane) {
    const T* src = in + plane * plane_in;
    T* dst = out + plane * plane_out;
    if (plane_out == 1) {
      // Global pooling: one contiguous reduction, vector partial sums over blocks of
      // kGlobalBlock elements, the block sums added in double. One running float sum per lane
      // would lose digits as the plane grows (1.5% off torch's mean on a 2^30-element plane).
      double total = 0;
      for (int64_t b0 = 0; b0 < plane_in; b0 += kGlobalBlock) {
        const int64_t b1 = b0 + kGlobalBlock < plane_in ? b0 + kGlobalBlock : plane_in;
        typename S::V acc = S::zero();
        int64_t i = b0;
        for (; i + S::W <= b1; i += S::W) acc = S::add(acc, S::load_n(src + i, S::W));
        if (i < b1) acc = S::add(acc, S::load_n(src + i, static_cast<int>(b1 - i)));
        total += static_cast<double>(S::reduce_add(acc));
      }
      dst[0] = static_cast<T>(total / static_cast<double>(plane_in));
      continue;
    }
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = adaptive_start(oh, p.out_h, p.in_h), h1 = adaptive_end(oh, p.out_h, p.in_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = adaptive_start(ow, p.out_w, p.in_w), w1 = adaptive_end(ow, p.out_w, p.in_w);
        T sum = 0;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) sum += src[ih * p.in_w + iw];
        dst[oh * p.out_w + ow] = sum / static_cast<T>((h1 - h0) * (w1 - w0));
      }
    }
  }
}

template <class T>
void adaptive_avg_fwd_nhwc(const T* in, T* out, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  if (p.out_h == 1 && p.out_w == 1) {
    // Global pooling: stream the image once, pixel by pixel, accumulating all channels in
    // the output row (it stays in L1), then scale.
    // Blocks of kGlobalBlock / C pixels are summed in T, the block sums in double (as NCHW).
    const int64_t pixels = p.in_h * p.in_w;
    const int64_t block = kGlobalBlock / (C > 0 ? C : 1) > 0 ? kGlobalBlock / (C > 0 ? C : 1) : 1;
    double* total = new double[C];
    for (int64_t n = b; n < e; ++n) {
      const T* img = in + n * pixels * C;
      T* dst = out + n * C;
      for (int64_t c = 0; c < C; ++c) total[c] = 0;
      for (int64_t p0 = 0; p0 < pixels; p0 += block) {
        const int64_t p1 = p0 + block < pixels ? p0 + block : pixels;
        for (int64_t c = 0; c < C; c += S::W) S::store_n(dst + c, S::zero(), static_cast<int>(C - c < S::W ? C - c : S::W));
        for (int64_t pix = p0; pix < p1; ++pix) {
          const T* src = img + pix * C;
          for (int64_t c = 0; c < C; c += S::W) {
            const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
            S::store_n(dst + c, S::add(S::load_n(dst + c, lanes), S::load_n(src + c, lanes)), lanes);
          }
        }
        for (int64_t c = 0; c < C; ++c) total[c] += static_cast<double>(dst[c]);
      }
      for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<T>(total[c] / static_cast<double>(pixels));
    }
    delete[] total;
    return;
  }
  for (int64_t n = b; n < e; ++n) {
    const T* img = in + n * p.in_h * p.in_w * C;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = adaptive_start(oh, p.out_h, p.in_h), h1 = adaptive_end(oh, p.out_h, p.in_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = adaptive_start(ow, p.out_w, p.in_w), w1 = adaptive_end(ow, p.out_w, p.in_w);
        const typename S::V vdiv = S::set1(static_cast<T>((h1 - h0) * (w1 - w0)));
        T* dst = out + ((n * p.out_h + oh) * p.out_w + ow) * C;
        for (int64_t c = 0; c < C; c += S::W) {
          const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
          typename S::V sum = S::zero();
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw)
              sum = S::add(sum, S::load_n(img + (ih * p.in_w + iw) * C + c, lanes));
          S::store_n(dst + c, S::div(sum, vdiv), lanes);
        }
      }
    }
  }
}

template <class T>
void adaptive_avg_bwd_nchw(const T* grad_out, T* grad_in, const Pool2dParams& p, int64_t b, int64_t e) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for (int64_t plane = b; plane < e; ++plane) {
    T* gi = grad_in + plane * plane_in;
    const T* go = grad_out + plane * plane_out;
    if (plane_out == 1) {
      // Global pooling: a broadcast fill, no accumulation.
      const T g = go[0] / static_cast<T>(plane_in);
      for (int64_t i = 0; i < plane_in; ++i) gi[i] = g;
      continue;
    }
    std::memset(gi, 0, sizeof(T) * plane_in);
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = adaptive_start(oh, p.out_h, p.in_h), h1 = adaptive_end(oh, p.out_h, p.in_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = adaptive_start(ow, p.out_w, p.in_w), w1 = adaptive_end(ow, p.out_w, p.in_w);
        const T g = go[oh * p.out_w + ow] / static_cast<T>((h1 - h0) * (w1 - w0));
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) gi[ih * p.in_w + iw] += g;
      }
    }
  }
}

template <class T>
void adaptive_avg_bwd_nhwc(const T* grad_out, T* grad_in, const Pool2dParams& p, int64_t b, int64_t e) {
  using S = typename SimdFor<T>::type;
  const int64_t C = p.channels;
  const int64_t img_in = p.in_h * p.in_w * C, img_out = p.out_h * p.out_w * C;
  if (p.out_h == 1 && p.out_w == 1) {
    // Global pooling: every pixel of an image gets the same row of shares; write the image
    // front to back, one pixel (all channels) at a time.
    const int64_t pixels = p.in_h * p.in_w;
    const typename S::V vdiv = S::set1(static_cast<T>(pixels));
    T* share = new T[C];
    for (int64_t n = b; n < e; ++n) {
      const T* g = grad_out + n * C;
      for (int64_t c = 0; c < C; c += S::W) {
        const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
        S::store_n(share + c, S::div(S::load_n(g + c, lanes), vdiv), lanes);
      }
      T* dst = grad_in + n * img_in;
      for (int64_t pix = 0; pix < pixels; ++pix) {
        for (int64_t c = 0; c < C; c += S::W) {
          const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
          put<S>(p, dst + pix * C + c, S::load_n(share + c, lanes), lanes);
        }
      }
    }
    delete[] share;
    finish_stores<S>(p);
    return;
  }
  for (int64_t n = b; n < e; ++n) {
    T* gi = grad_in + n * img_in;
    const T* go = grad_out + n * img_out;
    const bool global = p.out_h == 1 && p.out_w == 1;
    if (!global) std::memset(gi, 0, sizeof(T) * img_in);
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = adaptive_start(oh, p.out_h, p.in_h), h1 = adaptive_end(oh, p.out_h, p.in_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = adaptive_start(ow, p.out_w, p.in_w), w1 = adaptive_end(ow, p.out_w, p.in_w);
        const typename S::V vdiv = S::set1(static_cast<T>((h1 - h0) * (w1 - w0)));
        const T* g = go + (oh * p.out_w + ow) * C;
        for (int64_t c = 0; c < C; c += S::W) {
          const int lanes = static_cast<int>(C - c < S::W ? C - c : S::W);
          const typename S::V share = S::div(S::load_n(g + c, lanes), vdiv);
          for (int64_t ih = h0; ih < h1; ++ih) {
            for (int64_t iw = w0; iw < w1; ++iw) {
              T* dst = gi + (ih * p.in_w + iw) * C + c;
              // Adaptive windows may overlap; the global window cannot, so it just stores.
              S::store_n(dst, global ? share : S::add(S::load_n(dst, lanes), share), lanes);
            }
          }
        }
      }
    }
  }
}

template <class T, class I>
void max_fwd_nchw_dispatch(const T* in, T* out, I* idx, const Pool2dParams& p, int64_t b, int64_t e) {
  if (idx != nullptr) max_fwd_nchw<T, I, true>(in, out, idx, p, b, e);
  else max_fwd_nchw<T, I, false>(in, out, idx, p, b, e);
}

template <class T, class I>
void max_fwd_nhwc_dispatch(const T* in, T* out, I* idx, const Pool2dParams& p, int64_t b, int64_t e) {
  if (idx != nullptr) max_fwd_nhwc<T, I, true>(in, out, idx, p, b, e);
  else max_fwd_nhwc<T, I, false>(in, out, idx, p, b, e);
}

template <class T>
const pool::PoolKernels<T>* make_table() {
  static const pool::PoolKernels<T> table = {
      &max_fwd_nchw_dispatch<T, int64_t>, &max_fwd_nhwc_dispatch<T, int64_t>,
      &max_bwd_nchw<T, int64_t>, &max_bwd_nhwc<T, int64_t>, &max_bwd_nhwc_scatter<T, int64_t>,
      &max_fwd_nchw_dispatch<T, int32_t>, &max_fwd_nhwc_dispatch<T, int32_t>,
      &max_bwd_nchw<T, int32_t>, &max_bwd_nhwc<T, int32_t>, &max_bwd_nhwc_scatter<T, int32_t>,
      &avg_fwd_nchw<T>,          &avg_fwd_nhwc<T>,          &avg_bwd_nchw<T>, &avg_bwd_nhwc<T>,
      &adaptive_avg_fwd_nchw<T>, &adaptive_avg_fwd_nhwc<T>, &adaptive_avg_bwd_nchw<T>,
      &adaptive_avg_bwd_nhwc<T>,
  };
  return &table;
}

}  // namespace
}  // namespace FASTCONV_CPU_NS
}  // namespace fastconv

#define FASTCONV_POOL_CONCAT_(a, b) a##b
#define FASTCONV_POOL_CONCAT(a, b) FASTCONV_POOL_CONCAT_(a, b)

// Exported entry points, named after the ISA.
namespace fastconv {
namespace pool {
const PoolKernels<float>* FASTCONV_POOL_CONCAT(FASTCONV_POOL_CONCAT(pool_kernels_, FASTCONV_ISA_NAME), _float)() {
  return FASTCONV_CPU_NS::make_table<float>();
}
const PoolKernels<double>* FASTCONV_POOL_CONCAT(FASTCONV_POOL_CONCAT(pool_kernels_, FASTCONV_ISA_NAME), _double)() {
  return FASTCONV_CPU_NS::make_table<double>();
}
}  // namespace pool
}  // namespace fastconv
