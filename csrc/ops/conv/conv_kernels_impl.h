// conv2d kernels, written once against simd.h and compiled per ISA (conv_kernels_<isa>.cpp).
//
// Everything runs on one register-blocked microkernel in the BLIS / LIBXSMM style:
//
//   acc[r][v] += broadcast(A[r][k]) * B[k][v*W .. v*W + W)     r < M (<= MR), v < NV = 2
//
// summed over "segments" of the reduction axis (one per kernel row, or per kernel tap), each
// a run of k with fixed strides. The same kernel is every layer's inner loop:
//   forward, NHWC orientation:  A = input pixels (padded NHWC), B = packed weights; a tile is
//                               MR output pixels of a row x 2 vectors of output channels
//                               (AVX-512: 14 x 32 in 28 zmm accumulators).
//   forward 1x1, NCHW:          A = packed weights, B = input rows; MR output channels x 2
//                               vectors of pixels. No layout conversion.
//   weight gradient:            A = output gradient, B = input; MR output channels x 2
//                               vectors of (kw, input channel) — with dilation 1 and one
//                               group, a kernel row's (kw, ic) pairs are one contiguous run of
//                               the padded NHWC row, so 3-channel first layers still fill the
//                               vectors.
//   weight gradient, 1x1:       the same tile as a GEMM over the output pixels of all
//                               images; B packed from x read in place (either layout).
//   input gradient, strided:    A = output gradient, B = packed weights (transposed), the
//                               tile scatter-added into the input-gradient buffer.
// Stride-1 input gradients are forward convolutions (see conv_math.h).
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../common/simd.h"
#include "../../common/streaming.h"
#include "conv_kernels.h"
#include "conv_winograd.h"

namespace fastconv {
namespace conv {
namespace FASTCONV_CPU_NS {

using namespace ::fastconv::FASTCONV_CPU_NS;

// A run of the reduction axis: len steps from A + a and B + b.
struct Seg {
  int64_t a, b, len;
};

// Appends the run r to segs, or lengthens the last run where r continues it in A (whose
// offsets advance by a_k per step; B is laid out consecutively by every caller).
inline void add_run(std::vector<Seg>& segs, const Seg& r, int64_t a_k) {
  if (!segs.empty() && segs.back().a + segs.back().len * a_k == r.a)
    segs.back().len += r.len;
  else
    segs.push_back(r);
}

template <class T>
struct Tile {
  using S = typename SimdFor<T>::type;
  using V = typename S::V;
  static constexpr int W = S::W;
  static constexpr int NV = 2;
  static constexpr int NR = NV * W;
  // Accumulators + 2 B vectors + 1 broadcast fit the register file: 28 + 3 of 32 zmm,
  // 12 + 3 of 16 ymm.
  static constexpr int MR = W == 16 ? 14 : W == 8 ? 6 : 4;
};

// The NCHW 1x1 forward's second tile, 8 output channels x 48 pixels (24 accumulators, 3 B
// vectors, 1 broadcast of 32 zmm): float on AVX-512 only (16 ymm hold no 24 accumulators).
constexpr int kNarrowMR = 8, kNarrowNV = 3;
template <class T>
constexpr bool kHasNarrow = std::is_same_v<T, float> && Tile<T>::W == 16;

// Calls fn(std::integral_constant<int, m>) for a runtime m in [1, MAXM]: tails of a row get
// a microkernel compiled for their exact size instead of masked rows.
template <int M, int MAXM, class Fn>
FASTCONV_ALWAYS_INLINE void with_rows(int m, Fn&& fn) {
  if constexpr (M <= MAXM) {
    if (m == M) {
      fn(std::integral_constant<int, M>{});
      return;
    }
    with_rows<M + 1, MAXM>(m, fn);
  }
}

// to = from, for a tile of accumulators. The microkernels work on a local copy: GCC keeps a
// by-reference array in memory and stores it back every step.
template <class T, int M, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void copy_tile(const typename Tile<T>::V (&from)[M][NV], typename Tile<T>::V (&to)[M][NV]) {
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) to[r][v] = from[r][v];
}

// One step of the reduction with the rows of A adjacent: c[r][v] += a[r] * b[v] (a strided A
// goes through fma_rows below).
template <class T, int M, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void fma_step(typename Tile<T>::V (&c)[M][NV], const T* ap, const typename Tile<T>::V (&bv)[NV]) {
  using S = typename Tile<T>::S;
#if defined(__AVX512F__)
  // The 8 x 3-vector tile's FMAs are written out: from the intrinsics GCC 12 picked forms that
  // overwrite the broadcast register, renamed accumulators across the unrolled steps and
  // spilled two of them every step (192 -> 64 at 28x28, batch 8: 1.21-1.24 -> 1.14 ms).
  if constexpr (NV == 3 && std::is_same_v<T, float>) {
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      __m512 x;
      asm("vbroadcastss %1, %0" : "=v"(x) : "m"(ap[r]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m512 t = c[r][v];
        asm("vfmadd231ps %[b], %[x], %[c]" : [c] "+v"(t) : [b] "v"(bv[v]), [x] "v"(x));
        c[r][v] = t;
      }
    }
  } else
#endif
  {
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    const typename Tile<T>::V x = S::set1(ap[r]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[r][v] = S::fma(x, bv[v], c[r][v]);
  }
  }
}

// Rows of a strided A operand (row r at p + r * a_r, r < 16) as x86 addresses: base p for
// rows 0-7 and q = p + 8 * a_r for rows 8-15, each plus one of four byte strides (a_r, 3 a_r,
// 5 a_r, 7 a_r) scaled by 1, 2 or 4. Left to itself GCC kept one offset per row, 14 of them
// for the AVX-512 tile, and reloaded most from the stack every step: the broadcasts then
// waited on those loads and the load ports carried twice the loads the FMAs need (the NHWC
// direct kernel ran at ~70% of peak).
struct RowStrides {
  int64_t s1, s3, s5, s7;
};

// *(base + idx * SCALE bytes), broadcast. For float the address is written into the
// instruction: as C++, GCC hoists idx * SCALE out of the loop, into a register of its own.
template <class T, int SCALE>
FASTCONV_ALWAYS_INLINE typename Tile<T>::V bcast_scaled(const T* base, int64_t idx) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    typename Tile<T>::V v;
    asm("vbroadcastss (%1,%2,%c3), %0" : "=v"(v) : "r"(base), "r"(idx), "i"(SCALE));
    return v;
  }
#endif
  return Tile<T>::S::set1(*reinterpret_cast<const T*>(reinterpret_cast<const char*>(base) + idx * SCALE));
}

// SPLIT: the row from which q is the base (8, or where a tile's second output row starts).
template <class T, int R, int SPLIT = 8>
FASTCONV_ALWAYS_INLINE typename Tile<T>::V bcast_row(const T* p, const T* q, const RowStrides& s) {
  static_assert(R >= 0 && R < 16 && SPLIT >= 1 && SPLIT <= 8, "rows 0-15, split at 1-8");
  using S = typename Tile<T>::S;
  const T* b = R < SPLIT ? p : q;
  constexpr int r = R < SPLIT ? R : R - SPLIT;
  static_assert(r < 8, "at most 8 rows per base");
  if constexpr (r == 0) return S::set1(*b);
  if constexpr (r == 1) return bcast_scaled<T, 1>(b, s.s1);
  if constexpr (r == 2) return bcast_scaled<T, 2>(b, s.s1);
  if constexpr (r == 3) return bcast_scaled<T, 1>(b, s.s3);
  if constexpr (r == 4) return bcast_scaled<T, 4>(b, s.s1);
  if constexpr (r == 5) return bcast_scaled<T, 1>(b, s.s5);
  if constexpr (r == 6) return bcast_scaled<T, 2>(b, s.s3);
  return bcast_scaled<T, 1>(b, s.s7);
}

template <class T, int M, int SPLIT, size_t... R>
FASTCONV_ALWAYS_INLINE void fma_rows(typename Tile<T>::V (&c)[M][Tile<T>::NV], const T* p, const T* q,
                                     const RowStrides& s, const typename Tile<T>::V (&bv)[Tile<T>::NV],
                                     std::index_sequence<R...>) {
  using S = typename Tile<T>::S;
  auto row = [&](auto rc) FASTCONV_ALWAYS_INLINE_LAMBDA {
    constexpr int r = decltype(rc)::value;
    const typename Tile<T>::V x = bcast_row<T, r, SPLIT>(p, q, s);
#pragma GCC unroll 4
    for (int v = 0; v < Tile<T>::NV; ++v) c[r][v] = S::fma(x, bv[v], c[r][v]);
  };
  (row(std::integral_constant<int, static_cast<int>(R)>{}), ...);
}

// TAIL: only the first `valid` lanes of B (counted across the NV vectors) are read; the
// others load as zero, for B rows that end inside the tile.
// Never inlined: its register allocation (12-28 accumulators, nothing else live) then does
// not depend on the caller; inlined into a busy loop nest GCC spilled an accumulator in some
// instantiations, a 2-3x slowdown.
// A_UNIT: the rows of A are adjacent (a_r == 1), so its addresses are constant offsets.
// SPLIT < 8: rows SPLIT.. of A start q_off elements after row 0 (a_r apart from there): a
// tile of two output rows of SPLIT pixels each (7x7 outputs fill 14 rows instead of 7).
template <class T, int M, bool TAIL, bool A_UNIT = false, int SPLIT = 8>
__attribute__((noinline)) void ukernel(const T* FASTCONV_RESTRICT a, int64_t a_r, int64_t a_k,
                                    const T* FASTCONV_RESTRICT b, int64_t b_k, const Seg* segs,
                                    int64_t nseg, typename Tile<T>::V (&acc)[M][Tile<T>::NV],
                                    int valid, int64_t q_off = 0) {
  static_assert(SPLIT == 8 || !A_UNIT, "a split tile has strided rows");
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int NV = Tile<T>::NV, W = Tile<T>::W;
  int lanes[NV];
  for (int v = 0; v < NV; ++v) lanes[v] = std::clamp(valid - v * W, 0, W);
  V c[M][NV];
  copy_tile<T, M>(acc, c);
  const int64_t row_bytes = a_r * int64_t(sizeof(T));
  const RowStrides rs{row_bytes, 3 * row_bytes, 5 * row_bytes, 7 * row_bytes};
  const int64_t q_rows = SPLIT == 8 ? 8 * a_r : q_off;
  auto step = [&](const T* ap, const T* bp) FASTCONV_ALWAYS_INLINE_LAMBDA {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (TAIL)
        bv[v] = lanes[v] ? S::load_n(bp + v * W, lanes[v]) : S::zero();
      else
        bv[v] = S::load(bp + v * W);
    }
    if constexpr (A_UNIT)
      fma_step<T, M>(c, ap, bv);
    else
      fma_rows<T, M, SPLIT>(c, ap, ap + q_rows, rs, bv, std::make_index_sequence<M>{});
  };
  for (int64_t s = 0; s < nseg; ++s) {
    const T* ap = a + segs[s].a;
    const T* bp = b + segs[s].b;
    int64_t k = segs[s].len;
    // Two steps per iteration: measured 63 -> 81-93 GFLOP/s for the 6 x 16 AVX2 tile here
    // (the loop's own instructions and the scheduler window, not the FMAs, were the limit).
    for (; k >= 2; k -= 2, ap += 2 * a_k, bp += 2 * b_k) {
      step(ap, bp);
      // Keeps GCC from interleaving the two steps, which needs more than 16 ymm registers
      // and spilled an accumulator to the stack in some instantiations (a 3x slowdown).
      asm volatile("" ::: "memory");
      step(ap + a_k, bp + b_k);
    }
    if (k) step(ap, bp);
  }
  copy_tile<T, M>(c, acc);
}

// The same tile with both operands packed, A as [k][MR] and B as [k][NR]: every address in
// the loop is a constant offset from two pointers. The strided ukernel above needs a register
// per row offset and reloaded some from the stack each step (6 x 16 AVX2 tile, K = 64: 78 ->
// 88 GFLOP/s in L1 here).
// PACK_B, for a B tile's first use: B is read from its source rows (src, src_k apart) and
// stored into the [k][NR] panel on the way, so the copy overlaps the FMAs instead of being a
// pass of its own before them (the NCHW 1x1 forward spent ~20% of its time in that pass,
// waiting on loads, at 64 output channels where each packed value serves only 64 FMAs).
// PACK_A, the same for A (the channels_last 1x1 forward's pixel panel): row r of A is read
// from src + r * src_k and written into the [k][MR] panel at `a` four steps at a time, just
// before the steps read it back (from L1). As a pass of its own, that transpose was ~17% of a
// 256 -> 64 layer's time (perf, 1 thread), mostly waiting on its loads.
// PF_SRC (with PACK_B): each step also asks for B's source rows kSrcAhead steps on, into L1.
// For an input far larger than the caches each row is a new line from DRAM (NCHW 256 -> 64 at
// 56x56, batch 8: the packing calls ran at half the speed of the others); the L2 prefetch of
// the next panel (pf) does not reach those in time. Where the input fits in L3 the extra loads
// cost more than they save (1024 -> 256 at 14x14: 2-3% slower).
// MR is A's panel width (the tile's widest M) and NV the tile's vectors across: the NCHW 1x1
// forward also runs an 8 x 3-vector tile (forward_1x1_nchw_narrow).
constexpr int kSrcAhead = 16;
template <class T, int M, bool PACK_B = false, bool PACK_A = false, bool PF_SRC = false, int MR = Tile<T>::MR,
          int NV = Tile<T>::NV>
__attribute__((noinline)) void ukernel_packed(const T* FASTCONV_RESTRICT a, const T* FASTCONV_RESTRICT b, int64_t k,
                                           typename Tile<T>::V (&acc)[M][NV],
                                           const T* FASTCONV_RESTRICT src = nullptr, int64_t src_k = 0,
                                           T* FASTCONV_RESTRICT panel = nullptr, const T* pf = nullptr,
                                           int64_t pf_stride = 0, int64_t pf_n = 0) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int W = Tile<T>::W, NR = NV * W;
  static_assert(!(PACK_A && PACK_B), "one operand is packed on the way");
  static_assert(!PF_SRC || PACK_B, "the source prefetch runs ahead of B's packing loop");
  V c[M][NV];
  copy_tile<T, M>(acc, c);
  // PACK_A: the panel rows of steps [0, n) from the source rows (written through `a`, which
  // is the panel).
  // Each value goes through a general register: left to itself GCC vectorized the copy
  // into shuffles (the FMAs' port on AVX-512) and spilled accumulators for them.
  auto copy_a = [&](int n) FASTCONV_ALWAYS_INLINE_LAMBDA {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    T* dst = const_cast<T*>(a);
    const T* s = src;
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r, s += src_k)
#pragma GCC unroll 4
      for (int i = 0; i < n; ++i) {
        U u;
        std::memcpy(&u, s + i, sizeof(U));
        asm("" : "+r"(u));
        std::memcpy(dst + i * MR + r, &u, sizeof(U));
      }
  };
  const int64_t src_step = PACK_A ? 1 : src_k;
  auto step = [&](int i, auto with_pf) FASTCONV_ALWAYS_INLINE_LAMBDA {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (PACK_B) {
        if constexpr (PF_SRC) __builtin_prefetch(src + (i + kSrcAhead) * src_k + v * W, 0, 3);
        bv[v] = S::load(src + i * src_k + v * W);
        S::store(panel + i * NR + v * W, bv[v]);
      } else {
        bv[v] = S::load(b + i * NR + v * W);
      }
    }
    fma_step<T, M>(c, a + i * MR, bv);
    if constexpr (decltype(with_pf)::value) {  // one line of the next panel per step (see PrefetchRuns)
      __builtin_prefetch(pf, 0, 2);
      pf += pf_stride;
    }
  };
  // The steps that prefetch and those that do not are separate loops, written out twice: a
  // test in the step let GCC hoist the broadcasts across it and spill accumulators to the
  // stack, and so did a lambda holding the loops or the four steps (GCC 12; checked in the
  // disassembly). The barriers keep the steps apart, as in ukernel.
  int64_t k_pf = pf ? std::min(k, pf_n) : 0;
  k -= k_pf;
  constexpr std::true_type yes{};
  constexpr std::false_type no{};
  for (; k_pf >= 4; k_pf -= 4, a += 4 * MR, b += 4 * NR, src += 4 * src_step, panel += 4 * NR) {
    if constexpr (PACK_A) {
      copy_a(4);
      asm volatile("" ::: "memory");
    }
    step(0, yes);
    asm volatile("" ::: "memory");
    step(1, yes);
    asm volatile("" ::: "memory");
    step(2, yes);
    asm volatile("" ::: "memory");
    step(3, yes);
  }
  for (; k_pf > 0; --k_pf, a += MR, b += NR, src += src_step, panel += NR) {
    if constexpr (PACK_A) {
      copy_a(1);
      asm volatile("" ::: "memory");
    }
    step(0, yes);
  }
  for (; k >= 4; k -= 4, a += 4 * MR, b += 4 * NR, src += 4 * src_step, panel += 4 * NR) {
    if constexpr (PACK_A) {
      copy_a(4);
      asm volatile("" ::: "memory");
    }
    step(0, no);
    asm volatile("" ::: "memory");
    step(1, no);
    asm volatile("" ::: "memory");
    step(2, no);
    asm volatile("" ::: "memory");
    step(3, no);
  }
  for (; k > 0; --k, a += MR, b += NR, src += src_step, panel += NR) {
    if constexpr (PACK_A) {
      copy_a(1);
      asm volatile("" ::: "memory");
    }
    step(0, no);
  }
  copy_tile<T, M>(c, acc);
}

// Asks for the lines of a tile's output rows (M rows, row_stride apart) before the
// microkernel computes it: stored cold at its end, the tile's writes waited on their lines
// and filled the store buffer (perf: ~40% of the 1x1 epilogue on the first store after it;
// same process, 1 thread, NCHW 64 -> 256 at 56x56: torch / ours 0.95-1.02 -> 1.09-1.14).
// READ: the same for the residual the epilogue adds (M more cold lines per tile; NCHW
// 64 -> 256 at 56x56 with a residual ran at twice the time of the layer without one).
template <class T, int M, bool READ = false, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void prefetch_tile(const T* y, int64_t row_stride) {
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) __builtin_prefetch(y + r * row_stride + v * Tile<T>::W, READ ? 0 : 1, 2);
}

// The lanes of each of a tile's vectors that hold the first `valid` of its NR columns.
template <class T, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void tile_lanes(int valid, int (&lanes)[NV]) {
  for (int v = 0; v < NV; ++v) lanes[v] = std::clamp(valid - v * Tile<T>::W, 0, Tile<T>::W);
}

// acc = the partial sums of an earlier pass (row r at p + r * row_stride, the first lanes[v]
// lanes of vector v, the rest zero), or zero when there is none (p null).
template <class T, int M, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void load_tile(typename Tile<T>::V (&acc)[M][NV], const T* p, int64_t row_stride,
                                      const int (&lanes)[NV]) {
  using S = typename Tile<T>::S;
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = p && lanes[v] ? S::load_n(p + r * row_stride + v * Tile<T>::W, lanes[v]) : S::zero();
}

template <class T, int M, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void zero_acc(typename Tile<T>::V (&acc)[M][NV]) {
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Tile<T>::S::zero();
}

// ---- layout conversion --------------------------------------------------------------------

template <class T>
void pack_nhwc(const T* src, Strides4 s, int64_t C, int64_t H, int64_t W, int64_t pt, int64_t pl,
               int64_t hp, int64_t wp, T* dst, int64_t row_begin, int64_t row_end) {
  const int64_t w_lo = std::clamp<int64_t>(pl, 0, wp);
  const int64_t w_hi = std::clamp<int64_t>(pl + W, w_lo, wp);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / hp, h = row % hp - pt;
    T* d = dst + (row - row_begin) * wp * C;
    if (h < 0 || h >= H || w_hi <= w_lo) {
      std::memset(d, 0, sizeof(T) * wp * C);
      continue;
    }
    std::memset(d, 0, sizeof(T) * w_lo * C);
    std::memset(d + w_hi * C, 0, sizeof(T) * (wp - w_hi) * C);
    const T* sr = src + n * s.n + h * s.h + (w_lo - pl) * s.w;
    T* dr = d + w_lo * C;
    const int64_t len = w_hi - w_lo;
    if (s.c == 1 && s.w == C) {
      std::memcpy(dr, sr, sizeof(T) * len * C);
    } else if (s.w == 1) {
      transpose_2d(sr, s.c, dr, C, C, len);  // channel planes to pixel-major
    } else {
      for (int64_t w = 0; w < len; ++w)
        for (int64_t c = 0; c < C; ++c) dr[w * C + c] = sr[w * s.w + c * s.c];
    }
  }
}

template <class T>
void unpack_nhwc(const T* src, int64_t hp, int64_t wp, int64_t C, int64_t pt, int64_t pl, int64_t H,
                 int64_t W, T* dst, Strides4 d, const T* res, Strides4 rs, bool relu, int64_t row_begin,
                 int64_t row_end) {
  if (d.w == 1 && d.h == W && wp == W && pl == 0 && !res && !relu) {
    // NCHW rows without padding: an image's run of rows is one contiguous run of each
    // channel plane, written a block of 8 planes at a time along the whole run.
    for (int64_t row = row_begin; row < row_end;) {
      const int64_t n = row / H, h = row % H, nr = std::min(row_end - row, H - h), npix = nr * W;
      const T* sr = src + (n * hp + h + pt) * wp * C;
      T* dr = dst + n * d.n + h * d.h;
      for (int64_t c0 = 0; c0 < C; c0 += 8) {
        const int64_t nc = std::min<int64_t>(8, C - c0);
        int64_t i = 0;
        if (nc == 8)
          for (; i + 8 <= npix; i += 8) transpose8x8(sr + i * C + c0, C, dr + c0 * d.c + i, d.c);
        for (; i < npix; ++i)
          for (int64_t c = c0; c < c0 + nc; ++c) dr[c * d.c + i] = sr[i * C + c];
      }
      row += nr;
    }
    return;
  }
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / H, h = row % H;
    const T* sr = src + ((n * hp + h + pt) * wp + pl) * C;
    T* dr = dst + n * d.n + h * d.h;
    if (d.c == 1 && d.w == C) {
      std::memcpy(dr, sr, sizeof(T) * W * C);
    } else if (d.w == 1) {
      transpose_2d(sr, C, dr, d.c, W, C);
    } else {
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) dr[w * d.w + c * d.c] = sr[w * C + c];
    }
    if (!res && !relu) continue;
    // The row just written is still in cache.
    const T* rr = res ? res + n * rs.n + h * rs.h : nullptr;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t w = 0; w < W; ++w) {
        T& v = dr[c * d.c + w * d.w];
        T o = v + (rr ? rr[c * rs.c + w * rs.w] : T(0));
        v = relu && o < T(0) ? T(0) : o;
      }
  }
}

template <class T>
void pack_weight(const T* w, const ConvParams& p, bool swap, bool transposed, bool hwi, int block, T* out,
                 int64_t item_begin, int64_t item_end) {
  const int64_t ICg = p.icg(), OCg = p.ocg(), KH = p.KH, KW = p.KW, taps = KH * KW;
  const int64_t blocked = swap ? ICg : OCg, kdim = swap ? OCg : ICg;
  const int64_t nblk = (blocked + block - 1) / block;
  // Element (o, i, kh, kw) of group g sits at g * group + o * so + i * si + tap(kh, kw) * st;
  // the blocked channel steps by s_ch along a block's lanes, the reduction channel by s_k. The
  // block is filled 64 reduction rows at a time, lane by lane: a gather across the lanes
  // would read `block` rows whose equal strides (8 KB at 2048 channels) map to one L1 set.
  // The generic element-by-element nest cost ~1.5 ms for ResNet-50's 2048 -> 512 1x1, about
  // 10% of that layer at batch 8.
  // The stored weight's own axes: its output channel steps by d0, its input channel by d1
  // (transposed, these are the convolution's input and output channels).
  const int64_t in_w = transposed ? OCg : ICg, d0 = in_w * taps, d1 = hwi ? 1 : taps, st = hwi ? in_w : 1;
  const int64_t so = transposed ? d1 : d0, si = transposed ? d0 : d1;
  const int64_t s_ch = swap ? si : so, s_k = swap ? so : si, group = OCg * ICg * taps;
  out += item_begin * taps * kdim * block;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t g = item / nblk, blk = item % nblk;
    const int64_t lanes = std::min<int64_t>(block, blocked - blk * block);
    const T* base = w + g * group + blk * block * s_ch;
    if (!hwi && taps > 1 && s_k == taps) {  // a lane's (channel, tap) pairs are one contiguous run
      // Tap t = kh * KW + kw goes to the packed position (kh, kw): t itself, or its mirror.
      pack_tap_rows_to_panels(base, s_ch, static_cast<int>(lanes), kdim, taps, transposed, out, block);
      out += taps * kdim * block;
      continue;
    }
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw) {
        const int64_t tap = transposed ? (KH - 1 - kh) * KW + (KW - 1 - kw) : kh * KW + kw;
        if (s_k == 1) {  // 1x1 or (O, KH, KW, I): rows of contiguous channels, 8x8 transposes
          pack_rows_to_panel(base + tap * st, s_ch, static_cast<int>(lanes), kdim, out, block);
          out += kdim * block;
          continue;
        }
        for (int64_t k0 = 0; k0 < kdim; k0 += 64) {
          const int64_t kn = std::min<int64_t>(64, kdim - k0);
          for (int64_t l = 0; l < block; ++l) {
            T* dst = out + k0 * block + l;
            if (l >= lanes) {
              for (int64_t k = 0; k < kn; ++k) dst[k * block] = T(0);
              continue;
            }
            const T* src = base + l * s_ch + k0 * s_k + tap * st;
            for (int64_t k = 0; k < kn; ++k) dst[k * block] = src[k * s_k];
          }
        }
        out += kdim * block;
      }
  }
}

// ---- epilogues --------------------------------------------------------------------------

template <class T>
FASTCONV_ALWAYS_INLINE T finish_scalar(T v, const Epilogue<T>& ep, const T* res) {
  if (ep.residual) v += *res;
  if (ep.relu) v = v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
  return v;
}

// max(o, 0) that keeps NaN (as torch.relu) and gives +0 for -0, as every epilogue here does.
template <class S>
FASTCONV_ALWAYS_INLINE typename S::V relu_v(typename S::V o) {
  return S::blend(S::mor(S::gt(o, S::zero()), S::is_nan(o)), S::zero(), o);
}

#if defined(__AVX2__)
// A float tile of M pixels x nvalid channels (channels in the lanes, scale / shift applied)
// stored channel-major: each channel's M pixels are a contiguous run of an NCHW row
// (channel stride `plane`), transposed in registers 8 x 8 at a time, with the residual and
// ReLU applied on the way. Direct NCHW output needs no NHWC band and no unpacking pass.
template <int M>
FASTCONV_ALWAYS_INLINE void store_tile_nchw(typename Tile<float>::V (&acc)[M][Tile<float>::NV],
                                            const Epilogue<float>& ep, int nvalid, float* y, int64_t plane,
                                            const float* res) {
  constexpr int W = Tile<float>::W, NR = Tile<float>::NR;
  using H = Float8;
  if (nvalid == NR && !res) {
    const bool relu = ep.relu;  // a local: the stores could alias ep for all GCC knows
    // A whole tile without a residual, in loops of constant bounds: with the runtime channel
    // and pixel counts, GCC picked each transposed row out of the registers through a chain
    // of compares and stored through vmaskmovps (ResNet stem, NCHW: the store was ~19% of
    // the layer's time).
#pragma GCC unroll 4
    for (int c0 = 0; c0 < NR; c0 += 8) {
      const int v = c0 / W, half = c0 % W / 8;
#pragma GCC unroll 2
      for (int p0 = 0; p0 < M; p0 += 8) {
        const int np = std::min(8, M - p0);
        __m256 r[8], o[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = p0 + i < M ? H::half_of(acc[p0 + i][v], half) : _mm256_setzero_ps();
        transpose8_regs(r, o);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          float* d = y + (c0 + j) * plane + p0;
          const __m256 x = relu ? relu_v<H>(o[j]) : o[j];
          if (np == 8) {
            _mm256_storeu_ps(d, x);
          } else {
#if defined(__AVX512VL__)
            _mm256_mask_storeu_ps(d, static_cast<__mmask8>((1u << np) - 1), x);
#else
            H::store_n(d, x, np);
#endif
          }
        }
      }
    }
    return;
  }
  for (int c0 = 0; c0 < nvalid; c0 += 8) {
    const int v = c0 / W, half = c0 % W / 8, nc = std::min(8, nvalid - c0);
    for (int p0 = 0; p0 < M; p0 += 8) {
      const int np = std::min(8, M - p0);
      __m256 r[8], o[8];
      for (int i = 0; i < 8; ++i) r[i] = p0 + i < M ? H::half_of(acc[p0 + i][v], half) : _mm256_setzero_ps();
      transpose8_regs(r, o);
      for (int j = 0; j < nc; ++j) {
        float* d = y + (c0 + j) * plane + p0;
        __m256 x = o[j];
        if (res) x = H::add(x, H::load_n(res + (c0 + j) * ep.rs.c + p0, np));
        if (ep.relu) x = relu_v<H>(x);
        H::store_n(d, x, np);
      }
    }
  }
}
#endif

// Tile of m pixels x nvalid channels (channels in the lanes). y / res point at pixel 0,
// channel oc0; ys / ep.rs step pixels by .w and channels by .c.
template <class T, int M>
FASTCONV_ALWAYS_INLINE void store_pixels_by_channels(typename Tile<T>::V (&acc)[M][Tile<T>::NV],
                                                     const Epilogue<T>& ep, int64_t oc0, int nvalid,
                                                     T* y, Strides4 ys, const T* res, bool stream = false) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int NV = Tile<T>::NV, W = Tile<T>::W, NR = Tile<T>::NR;
  int lanes[NV];
  for (int v = 0; v < NV; ++v) lanes[v] = std::clamp(nvalid - v * W, 0, W);
  for (int v = 0; v < NV; ++v) {
    if (lanes[v] == 0) continue;
    if (ep.scale) {
      const V sc = S::load_n(ep.scale + oc0 + v * W, lanes[v]);
      for (int r = 0; r < M; ++r) acc[r][v] = S::mul(acc[r][v], sc);
    }
    if (ep.shift) {
      const V sh = S::load_n(ep.shift + oc0 + v * W, lanes[v]);
      for (int r = 0; r < M; ++r) acc[r][v] = S::add(acc[r][v], sh);
    }
  }
  if (ys.c == 1 && (!ep.residual || ep.rs.c == 1)) {
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < NV; ++v) {
        if (lanes[v] == 0) continue;
        V o = acc[r][v];
        if (ep.residual) o = S::add(o, S::load_n(res + r * ep.rs.w + v * W, lanes[v]));
        if (ep.relu) o = S::max(S::zero(), o);
        if (stream) S::stream_n(y + r * ys.w + v * W, o, lanes[v]);
        else S::store_n(y + r * ys.w + v * W, o, lanes[v]);
      }
    return;
  }
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (ys.w == 1 && (!ep.residual || ep.rs.w == 1)) {
      store_tile_nchw<M>(acc, ep, nvalid, y, ys.c, res);
      return;
    }
  }
#endif
  // Channel-major output with pixels apart: transpose through a stack tile.
  alignas(64) T tmp[M][NR];
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) S::store(&tmp[r][v * W], acc[r][v]);
  for (int c = 0; c < nvalid; ++c) {
    T* yc = y + c * ys.c;
    const T* rc = ep.residual ? res + c * ep.rs.c : nullptr;
    for (int r = 0; r < M; ++r) yc[r * ys.w] = finish_scalar(tmp[r][c], ep, rc ? rc + r * ep.rs.w : nullptr);
  }
}

// Lanes [lo, hi) of a tile of M channels (rows) x contiguous pixels (lanes), lane j of row r
// to y[r * plane + j], through the epilogue. RANGE: lo may be above 0, and y (and res) may then
// point before the run of pixels the lanes cover, whose other lanes touch no memory (a 1x1
// tile across two images stores each image's piece so); otherwise lo is 0 and the stores are
// of the first lanes (plain stores for whole vectors: AVX2's masked stores cost more).
template <class T, int M, bool RANGE, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void store_channel_lanes(typename Tile<T>::V (&acc)[M][NV], const Epilogue<T>& ep,
                                                int64_t oc0, int lo, int hi, T* y, int64_t plane, const T* res,
                                                bool stream = false) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int W = Tile<T>::W;
  for (int r = 0; r < M; ++r) {
    const V sc = S::set1(ep.scale ? ep.scale[oc0 + r] : T(1));
    const V sh = S::set1(ep.shift ? ep.shift[oc0 + r] : T(0));
    for (int v = 0; v < NV; ++v) {
      const int a = RANGE ? std::clamp(lo - v * W, 0, W) : 0, b = std::clamp(hi - v * W, 0, W);
      if (a >= b) continue;
      V o = acc[r][v];
      if (ep.scale) o = S::mul(o, sc);
      if (ep.shift) o = S::add(o, sh);
      if (ep.residual)
        o = S::add(o, RANGE ? S::load_strided_range(res + r * plane + v * W, 1, a, b, T(0))
                            : S::load_n(res + r * plane + v * W, b));
      if (ep.relu) o = relu_v<S>(o);
      if constexpr (RANGE) S::store_range(y + r * plane + v * W, o, a, b);
      else if (stream) S::stream_n(y + r * plane + v * W, o, b);
      else S::store_n(y + r * plane + v * W, o, b);
    }
  }
}

// Tile of M channels (rows) x nvalid contiguous pixels (lanes); y / res at channel 0, pixel 0,
// channel stride `plane`.
template <class T, int M, int NV = Tile<T>::NV>
FASTCONV_ALWAYS_INLINE void store_channels_by_pixels(typename Tile<T>::V (&acc)[M][NV], const Epilogue<T>& ep,
                                                     int64_t oc0, int nvalid, T* y, int64_t plane, const T* res,
                                                     bool stream = false) {
  store_channel_lanes<T, M, false, NV>(acc, ep, oc0, 0, nvalid, y, plane, res, stream);
}

// ---- forward ----------------------------------------------------------------------------

// The reduction of one output pixel as segments over the padded NHWC input (offsets from the
// pixel's top-left tap) and the packed weights.
template <class T>
std::vector<Seg> forward_segments(const ConvParams& p, int64_t wp, int64_t c) {
  constexpr int NR = Tile<T>::NR;
  const int64_t icg = p.icg();
  std::vector<Seg> segs;
  if (p.groups == 1 && p.dw == 1) {
    for (int64_t kh = 0; kh < p.KH; ++kh)
      segs.push_back({kh * p.dh * wp * c, kh * p.KW * icg * NR, p.KW * icg});
  } else {
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw = 0; kw < p.KW; ++kw)
        segs.push_back({kh * p.dh * wp * c + kw * p.dw * c, (kh * p.KW + kw) * icg * NR, icg});
  }
  return segs;
}

template <class T>
void forward_nhwc(const PaddedNhwc<T>& x, const T* wpack, const ConvParams& p, const FwdPlan& plan,
                  const Epilogue<T>& ep, T* y, Strides4 ys, int64_t task_begin, int64_t task_end) {
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV;
  const int64_t icg = p.icg(), ocg = p.ocg();
  const std::vector<Seg> segs = forward_segments<T>(p, x.wp, x.c);
  const int64_t wblock = p.KH * p.KW * icg * NR;
  const int64_t a_r = p.sw * x.c;
  // Rows of MR / 2 pixels (7x7 outputs on AVX-512) go two to a tile: one row per tile left
  // half of the accumulators idle. Each row's pixels then continue the previous row's in y.
  const bool pairs = MR % 2 == 0 && p.OW == MR / 2 && ys.h == p.OW * ys.w &&
                     (!ep.residual || ep.rs.h == p.OW * ep.rs.w);
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t chunk = t % plan.row_chunks;
    int64_t rest = t / plan.row_chunks;
    int64_t blk_begin = 0, blk_end = plan.blocks;
    if (!plan.blocks_inner) {
      blk_begin = rest % plan.blocks;
      blk_end = blk_begin + 1;
      rest /= plan.blocks;
    }
    const int64_t g = rest % p.groups, n = rest / p.groups;
    const int64_t oh_end = std::min(p.OH, (chunk + 1) * plan.rows_per_task);
    for (int64_t oh = chunk * plan.rows_per_task, rows = 1; oh < oh_end; oh += rows) {
      rows = pairs && oh + 1 < oh_end ? 2 : 1;
      for (int64_t blk = blk_begin; blk < blk_end; ++blk) {
        const int64_t oc0 = g * ocg + blk * NR;
        const int nvalid = static_cast<int>(std::min<int64_t>(NR, ocg - blk * NR));
        const T* wb = wpack + (g * plan.blocks + blk) * wblock;
        const T* arow = x.data + (n * x.hp + oh * p.sh) * x.wp * x.c + g * icg;
        T* yrow = y + n * ys.n + oc0 * ys.c + oh * ys.h;
        const T* rrow = ep.residual ? ep.residual + n * ep.rs.n + oc0 * ep.rs.c + oh * ep.rs.h : nullptr;
        if constexpr (MR % 2 == 0) {
          if (rows == 2) {  // the two rows' pixels follow each other in y (and the residual)
            V acc[MR][NV];
            zero_acc<T, MR>(acc);
            ukernel<T, MR, false, false, MR / 2>(arow, a_r, 1, wb, NR, segs.data(), static_cast<int64_t>(segs.size()),
                                                 acc, NR, p.sh * x.wp * x.c);
            store_pixels_by_channels<T, MR>(acc, ep, oc0, nvalid, yrow, ys, rrow);
            continue;
          }
        }
        for (int64_t ow0 = 0; ow0 < p.OW; ow0 += MR) {
          const int m = static_cast<int>(std::min<int64_t>(MR, p.OW - ow0));
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int M = decltype(mc)::value;
            V acc[M][NV];
            zero_acc<T, M>(acc);
            ukernel<T, M, false>(arow + ow0 * a_r, a_r, 1, wb, NR, segs.data(),
                                 static_cast<int64_t>(segs.size()), acc, NR);
            store_pixels_by_channels<T, M>(acc, ep, oc0, nvalid, yrow + ow0 * ys.w, ys,
                                           rrow ? rrow + ow0 * ep.rs.w : nullptr);
          });
        }
      }
    }
  }
}

// 1x1 GEMMs. The pixels of all images are one axis q = n * H * W + h * W + w, cut into chunks
// of `chunk` pixels (a task = (group, chunk)); a tile may span two images, so 7x7 and 14x14
// layers fill their tiles (per-image tiles of 16 pixels used 49 of 64 lanes at 7x7).

// A run of a tile's lanes that lies in one image: lanes [lane, lane + len) are pixels
// p .. p + len of image n.
struct Piece {
  int64_t tile, lane, len, n, p;
};
// The pieces of one tile, [begin, end). A type of this namespace: a std::vector of a std type
// would be instantiated in every ISA's object and the linker could keep the AVX-512 copy.
struct TilePieces {
  size_t begin = 0, end = 0;
};

// Lines to prefetch into L2 while the current chunk computes: runs of `n` addresses `stride`
// elements apart. The 1x1 GEMMs hand a run to each packed microkernel call, which issues one
// per reduction step among its FMAs; issued in bursts between calls, they stalled on full
// fill buffers (perf: ~10% of the NCHW 256 -> 64 forward on one prefetch instruction).
template <class T>
struct PrefetchRuns {
  struct Run {
    const T* p;
    int64_t stride, n;
  };
  std::vector<Run> runs;
  int64_t lines = 0;
  size_t ri = 0;
  int64_t done = 0;
  void clear() {
    runs.clear();
    lines = done = 0;
    ri = 0;
  }
  void add(const T* p, int64_t stride, int64_t n) {
    if (n <= 0) return;
    runs.push_back({p, stride, n});
    lines += n;
  }
  // The first lines of the full lines of [p, p + len): its 64-byte lines from the one holding p.
  static void span(const T* p, int64_t len, const T*& first, int64_t& count) {
    const auto a = reinterpret_cast<uintptr_t>(p), e = reinterpret_cast<uintptr_t>(p + len);
    first = reinterpret_cast<const T*>(a & ~uintptr_t(63));
    count = static_cast<int64_t>((e - (a & ~uintptr_t(63)) + 63) / 64);
  }
  // Up to `most` addresses, all from one run.
  Run take(int64_t most) {
    if (ri == runs.size() || most <= 0) return {nullptr, 0, 0};
    const Run& r = runs[ri];
    const Run out{r.p + done * r.stride, r.stride, std::min(most, r.n - done)};
    done += out.n;
    if (done == r.n) {
      ++ri;
      done = 0;
    }
    return out;
  }
  void issue(int64_t count) {
    while (count > 0) {
      const Run r = take(count);
      if (r.n == 0) return;
      for (int64_t i = 0; i < r.n; ++i) __builtin_prefetch(r.p + i * r.stride, 0, 2);
      count -= r.n;
    }
  }
};

// The NCHW panel copy reads icg channel planes at once (hundreds of short streams the
// hardware prefetcher does not follow); it waited on DRAM for ~25% of a 56x56 layer's time.
// Runs: one per line of the chunk's pixels, down the channel planes.
template <class T>
struct NextPanel : PrefetchRuns<T> {
  // The panel of pixels [q0, q1) of group g, input channels [k0, k0 + kc).
  void reset(const T* x, const ConvParams& p, int64_t g, int64_t q0, int64_t q1, int64_t k0, int64_t kc) {
    const int64_t hw = p.H * p.W;
    this->clear();
    for (int64_t q = q0; q < q1;) {
      const int64_t n = q / hw, pp = q % hw, len = std::min(hw - pp, q1 - q);
      const T* first;
      int64_t count;
      this->span(x + (n * p.C + g * p.icg() + k0) * hw + pp, len, first, count);
      for (int64_t j = 0; j < count; ++j) this->add(first + j * (64 / sizeof(T)), hw, kc);
      q += len;
    }
  }
};

// Points `next` (NextPanel or NextRows) at the panel a 1x1 GEMM task packs after the one of
// pixels [q0, q1), input channels [k0, k0 + kk): the next block of channels of the same
// pixels, else the first block of the next task's pixels, else nothing.
template <class T, class Next>
void aim_next(Next& next, const T* x, const ConvParams& p, int64_t chunk, int64_t t, int64_t task_end, int64_t q0,
              int64_t q1, int64_t k0, int64_t kk, int64_t kc) {
  const int64_t total = p.N * p.H * p.W, chunks = (total + chunk - 1) / chunk, icg = p.icg();
  if (k0 + kk < icg) {
    next.reset(x, p, t / chunks, q0, q1, k0 + kk, std::min(kc, icg - k0 - kk));
  } else if (t + 1 < task_end) {
    const int64_t q2 = (t + 1) % chunks * chunk;
    next.reset(x, p, (t + 1) / chunks, q2, std::min(total, q2 + chunk), 0, kc);
  } else {
    next.clear();
  }
}

// The weight panel of output channels [oc0, oc0 + m) and input channels [k0, k0 + kk) of a 1x1
// weight w (OC x icg), packed as [kk][block] into buf (lanes past m zero). For a layer with
// few pixels, whose tasks each use a panel once (ResNet-50's 2048 -> 512 at batch 1: a 4 MB
// weight for 49 pixels), packing the whole weight up front wrote it out to DRAM and read it
// back (28% of the layer in pack_rows_to_panel).
template <class T>
const T* own_panel(const T* w, int64_t icg, int64_t oc0, int m, int64_t k0, int64_t kk, int block,
                   std::vector<T>& buf) {
  pack_rows_to_panel(w + oc0 * icg + k0, icg, m, kk, buf.data(), block);
  return buf.data();
}

// Tiles of MR output channels x NV vectors of pixels (weights packed with block MR).
template <class T, int MR, int NV>
void forward_1x1_nchw_tile(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                           int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int W = Tile<T>::W, NR = NV * W;
  const int64_t icg = p.icg(), ocg = p.ocg(), hw = p.H * p.W, total = p.N * hw;
  const int64_t nblk = (ocg + MR - 1) / MR, chunks = (total + chunk - 1) / chunk;
  kc = std::min(kc, icg);
  // The chunk's input is first copied into [tile][ic][NR] panels: read in place, each step of
  // the reduction would touch a different channel plane.
  std::vector<T> panel(static_cast<size_t>((chunk + NR - 1) / NR * kc * NR));
  std::vector<T> wpanel(raw ? static_cast<size_t>(kc * MR) : 0);
  std::vector<Piece> pieces;
  std::vector<TilePieces> spans;
  NextPanel<T> next;
  const Epilogue<T> none;
  const int64_t gc = p.groups * chunks;
  const bool far_input = streams_past_caches(total * p.C * int64_t(sizeof(T)));
  // An output past the caches is written with streaming stores in the last reduction block,
  // as in forward_1x1_nhwc, where whole tiles cover whole lines: every image's plane and
  // every chunk a whole number of lines (a tile's rows then start on a line).
  constexpr int64_t line = 64 / int64_t(sizeof(T));
  const bool stream = streams_past_caches(total * p.OC * int64_t(sizeof(T))) && hw % line == 0 &&
                      chunk % line == 0 && reinterpret_cast<uintptr_t>(y) % 64 == 0;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t part = task / gc, t = task % gc;
    const int64_t blk0 = part * nblk / parts, blk1 = (part + 1) * nblk / parts;
    const int64_t g = t / chunks, q0 = t % chunks * chunk, q1 = std::min(total, q0 + chunk);
    const int64_t ntiles = (q1 - q0 + NR - 1) / NR;
    pieces.clear();
    spans.resize(static_cast<size_t>(ntiles));
    for (int64_t q = q0; q < q1;) {
      const int64_t tile = (q - q0) / NR, lane = (q - q0) % NR, n = q / hw, pp = q % hw;
      const int64_t len = std::min(std::min(int64_t(NR) - lane, hw - pp), q1 - q);
      if (lane == 0) spans[tile].begin = pieces.size();
      pieces.push_back({tile, lane, len, n, pp});
      spans[tile].end = pieces.size();
      q += len;
    }
    // Blocks of kc input channels; y holds the partial sums in between (the epilogue comes
    // with the last block). Each output's sum runs over the channels in order either way.
    for (int64_t k0 = 0; k0 < icg; k0 += kc) {
      const int64_t kk = std::min(kc, icg - k0);
      const bool first = k0 == 0, last = k0 + kk == icg;
      const Epilogue<T>& e = last ? ep : none;
      for (const Piece& pc : pieces) {
        if (pc.len == NR) continue;  // a whole tile: packed by its first block's microkernel (PACK_B)
        const T* src = x + (pc.n * p.C + g * icg + k0) * hw + pc.p;
        T* dst = panel.data() + pc.tile * kk * NR + pc.lane;
        const int len = static_cast<int>(pc.len);
        // Vectors, not an element loop: GCC made the loop a memcpy call per channel (7% of
        // ResNet-50's 2048 -> 512 at 7x7, where most tiles span two images).
        for (int64_t k = 0; k < kk; ++k)
          for (int j = 0; j < len; j += W) S::store_n(dst + k * NR + j, S::load_n(src + k * hw + j, len - j), len - j);
      }
      aim_next(next, x, p, chunk, t, std::min(gc, task_end - part * gc), q0, q1, k0, kk, kc);
      // The calls that pack their tile (the first block's) already wait on its lines; the
      // others issue the next panel's prefetches.
      const int64_t nb = blk1 - blk0;
      const int64_t pf_calls = (nb > 1 ? nb - 1 : 1) * ntiles;
      const int64_t per_call = (next.lines + pf_calls - 1) / pf_calls;
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t oc0 = g * ocg + blk * MR;
        const int m = static_cast<int>(std::min<int64_t>(MR, ocg - blk * MR));
        const T* wb = raw ? own_panel(raw, icg, oc0, m, k0, kk, MR, wpanel) : wpack + (g * nblk + blk) * icg * MR + k0 * MR;
        for (int64_t ti = 0; ti < ntiles; ++ti) {
          const auto pf = next.take(nb > 1 && blk == blk0 ? 0 : std::min(kk, per_call));
          const size_t pb = spans[ti].begin, pe = spans[ti].end;
          const bool whole = pe - pb == 1 && pieces[pb].lane == 0;
          const int64_t whole_off = (pieces[pb].n * p.OC + oc0) * hw + pieces[pb].p;
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int M = decltype(mc)::value;
            V acc[M][NV];
            if (first || whole) {
              int lanes[NV];
              tile_lanes<T>(static_cast<int>(pieces[pb].len), lanes);
              load_tile<T, M>(acc, first ? nullptr : y + whole_off, hw, lanes);
            } else {
              // A tile across images: each piece is its own run of the output rows, read
              // through a pointer `lane` pixels before the run (masked: only its lanes load).
              zero_acc<T, M>(acc);
              for (size_t i = pb; i < pe; ++i) {
                const Piece& pc = pieces[i];
                const T* src = y + (pc.n * p.OC + oc0) * hw + pc.p - pc.lane;
                for (int v = 0; v < NV; ++v) {
                  const int a = std::clamp(static_cast<int>(pc.lane) - v * W, 0, W);
                  const int b = std::clamp(static_cast<int>(pc.lane + pc.len) - v * W, 0, W);
                  if (a >= b) continue;
                  for (int r = 0; r < M; ++r)
                    acc[r][v] = S::blend(S::range_mask(a, b), acc[r][v],
                                         S::load_strided_range(src + r * hw + v * W, 1, a, b, T(0)));
                }
              }
            }
            if (whole && !(stream && last)) prefetch_tile<T, M, false, NV>(y + whole_off, hw);
            if (whole && e.residual) prefetch_tile<T, M, true, NV>(e.residual + whole_off, hw);
            if (blk == blk0 && whole && pieces[pb].len == NR) {
              const T* src = x + (pieces[pb].n * p.C + g * icg + k0) * hw + pieces[pb].p;
              T* dst = panel.data() + ti * kk * NR;
              if (far_input)
                ukernel_packed<T, M, true, false, true, MR>(wb, nullptr, kk, acc, src, hw, dst, pf.p, pf.stride, pf.n);
              else
                ukernel_packed<T, M, true, false, false, MR>(wb, nullptr, kk, acc, src, hw, dst, pf.p, pf.stride, pf.n);
            } else
              ukernel_packed<T, M, false, false, false, MR>(wb, panel.data() + ti * kk * NR, kk, acc, nullptr, 0,
                                                            nullptr, pf.p, pf.stride, pf.n);
            if (whole) {
              store_channels_by_pixels<T, M>(acc, e, oc0, static_cast<int>(pieces[pb].len), y + whole_off, hw,
                                             e.residual ? e.residual + whole_off : nullptr, stream && last);
              return;
            }
            for (size_t i = pb; i < pe; ++i) {
              const Piece& pc = pieces[i];
              const int64_t off = (pc.n * p.OC + oc0) * hw + pc.p - pc.lane;
              store_channel_lanes<T, M, true>(acc, e, oc0, static_cast<int>(pc.lane), static_cast<int>(pc.lane + pc.len),
                                        y + off, hw, e.residual ? e.residual + off : nullptr);
            }
          });
        }
      }
    }
  }
#if defined(__AVX2__)
  if (stream) _mm_sfence();
#endif
}

template <class T>
void forward_1x1_nchw(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                      int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end) {
  forward_1x1_nchw_tile<T, Tile<T>::MR, Tile<T>::NV>(x, wpack, raw, p, chunk, kc, parts, ep, y, task_begin, task_end);
}

template <class T>
void forward_1x1_nchw_narrow(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                             int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end) {
  forward_1x1_nchw_tile<T, kNarrowMR, kNarrowNV>(x, wpack, raw, p, chunk, kc, parts, ep, y, task_begin, task_end);
}

// The same for a channels_last chunk: pixels [q0, q1) are rows C apart, each a run of kc
// channels. Without it the panel packing waited on DRAM for most of its time (AVX-512,
// 256 -> 64 at 56x56: a quarter of the layer).
template <class T>
struct NextRows : PrefetchRuns<T> {
  void reset(const T* x, const ConvParams& p, int64_t g, int64_t q0, int64_t q1, int64_t k0, int64_t kc) {
    this->clear();
    const T* first;
    int64_t count;
    if (kc == p.C) {  // one contiguous run
      this->span(x + q0 * p.C, (q1 - q0) * p.C, first, count);
      this->add(first, 64 / sizeof(T), count);
    } else {  // one run per line of a row, down the rows
      this->span(x + q0 * p.C + g * p.icg() + k0, kc, first, count);
      for (int64_t j = 0; j < count; ++j) this->add(first + j * (64 / sizeof(T)), p.C, q1 - q0);
    }
  }
};

template <class T>
void forward_1x1_nhwc(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                      int64_t parts,
                      const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end) {
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV;
  const int64_t icg = p.icg(), ocg = p.ocg(), total = p.N * p.H * p.W;
  const int64_t nblk = (ocg + NR - 1) / NR, chunks = (total + chunk - 1) / chunk;
  kc = std::min(kc, icg);
  const Strides4 ys{0, 1, 0, p.OC};
  const Epilogue<T> none;
  // The chunk's pixels as [tile][ic][MR] panels, so both operands of the microkernel are
  // packed; each is written by its first output-channel block's microkernel and then read
  // by the others.
  std::vector<T> panel(static_cast<size_t>((chunk + MR - 1) / MR * kc * MR));
  std::vector<T> wpanel(raw ? static_cast<size_t>(kc * NR) : 0);
  NextRows<T> next;
  const int64_t gc = p.groups * chunks;
  // An output far larger than the caches (64 -> 256 at 56x56, batch 8: 26 MB) is written past
  // them with streaming stores in its last reduction block: ordinary stores first read every
  // line they fill, a third of the layer's DRAM traffic.
  const bool stream = streams_past_caches(total * p.OC * int64_t(sizeof(T))) && p.OC % (64 / int64_t(sizeof(T))) == 0;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t part = task / gc, t = task % gc;
    const int64_t blk0 = part * nblk / parts, blk1 = (part + 1) * nblk / parts;
    const int64_t g = t / chunks, q0 = t % chunks * chunk, q1 = std::min(total, q0 + chunk);
    const int64_t ntiles = (q1 - q0 + MR - 1) / MR;
    // Blocks of kc input channels, as in forward_1x1_nchw.
    for (int64_t k0 = 0; k0 < icg; k0 += kc) {
      const int64_t kk = std::min(kc, icg - k0);
      const bool first = k0 == 0, last = k0 + kk == icg;
      const Epilogue<T>& e = last ? ep : none;
      aim_next(next, x, p, chunk, t, std::min(gc, task_end - part * gc), q0, q1, k0, kk, kc);
      const int64_t per_call = (next.lines + (blk1 - blk0) * ntiles - 1) / ((blk1 - blk0) * ntiles);
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t oc0 = g * ocg + blk * NR;
        const int nvalid = static_cast<int>(std::min<int64_t>(NR, ocg - blk * NR));
        int lanes[NV];
        tile_lanes<T>(nvalid, lanes);
        const T* wb = raw ? own_panel(raw, icg, oc0, nvalid, k0, kk, NR, wpanel) : wpack + (g * nblk + blk) * icg * NR + k0 * NR;
        for (int64_t ti = 0; ti < ntiles; ++ti) {
          const int64_t qa = q0 + ti * MR;
          const int m = static_cast<int>(std::min<int64_t>(MR, q1 - qa));
          T* yt = y + qa * p.OC + oc0;
          const auto pf = next.take(std::min(kk, per_call));
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int M = decltype(mc)::value;
            V acc[M][NV];
            if (!(stream && last)) prefetch_tile<T, M>(yt, p.OC);
            if (last && e.residual) prefetch_tile<T, M, true>(e.residual + qa * p.OC + oc0, p.OC);
            load_tile<T, M>(acc, first ? nullptr : yt, p.OC, lanes);
            if (blk == blk0)  // packs the tile's panel on the way (PACK_A)
              ukernel_packed<T, M, false, true>(panel.data() + ti * kk * MR, wb, kk, acc, x + qa * p.C + g * icg + k0, p.C,
                                                nullptr, pf.p, pf.stride, pf.n);
            else
              ukernel_packed<T, M>(panel.data() + ti * kk * MR, wb, kk, acc, nullptr, 0, nullptr, pf.p, pf.stride, pf.n);
            store_pixels_by_channels<T, M>(acc, e, oc0, nvalid, yt, ys,
                                           e.residual ? e.residual + qa * p.OC + oc0 : nullptr, stream && last);
          });
        }
      }
    }
  }
#if defined(__AVX2__)
  if (stream) _mm_sfence();  // the streamed lines reach memory before the task is seen done
#endif
}

template <class T>
void forward_nchw_direct(const T* x, int64_t hp, int64_t wp, const T* wpack, const ConvParams& p,
                         const FwdPlan& plan, const Epilogue<T>& ep, T* y, int64_t task_begin,
                         int64_t task_end) {
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV;
  const int64_t icg = p.icg(), ocg = p.ocg(), plane = hp * wp, oplane = p.OH * p.OW;
  const int B = plan.block;
  const int64_t nblk = (ocg + B - 1) / B;
  // One segment per kernel tap: the input channels at that tap, a plane apart.
  std::vector<Seg> segs;
  for (int64_t kh = 0; kh < p.KH; ++kh)
    for (int64_t kw = 0; kw < p.KW; ++kw)
      segs.push_back({(kh * p.KW + kw) * icg * B, kh * p.dh * wp + kw * p.dw, icg});
  const int64_t nseg = static_cast<int64_t>(segs.size());
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t chunk = t % plan.row_chunks;
    const int64_t rest = t / plan.row_chunks;
    const int64_t g = rest % p.groups, n = rest / p.groups;
    const T* xg = x + (n * p.C + g * icg) * plane;
    const int64_t oh_end = std::min(p.OH, (chunk + 1) * plan.rows_per_task);
    for (int64_t oh = chunk * plan.rows_per_task; oh < oh_end; ++oh)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t oc0 = g * ocg + blk * B;
        const int m = static_cast<int>(std::min<int64_t>(B, ocg - blk * B));
        const T* wb = wpack + (g * nblk + blk) * p.KH * p.KW * icg * B;
        const T* xrow = xg + oh * p.sh * wp;
        T* yb = y + (n * p.OC + oc0) * oplane + oh * p.OW;
        const T* rb = ep.residual ? ep.residual + (n * p.OC + oc0) * oplane + oh * p.OW : nullptr;
        for (int64_t ow0 = 0; ow0 < p.OW; ow0 += NR) {
          const int nvalid = static_cast<int>(std::min<int64_t>(NR, p.OW - ow0));
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int M = decltype(mc)::value;
            V acc[M][NV];
            zero_acc<T, M>(acc);
            ukernel<T, M, false, true>(wb, 1, B, xrow + ow0, plane, segs.data(), nseg, acc, NR);
            store_channels_by_pixels<T, M>(acc, ep, oc0, nvalid, yb + ow0, oplane, rb ? rb + ow0 : nullptr);
          });
        }
      }
  }
}

// ---- weight gradient ----------------------------------------------------------------------

struct WgradShape {
  bool fused;         // (kw, ic) as one contiguous run (one group, dilation 1)
  int64_t oblocks;    // output-channel blocks of MR per group
  int64_t jlen;       // length of the lane axis: KW * ICg (fused) or ICg
  int64_t jblocks;    // lane blocks of NR
  int64_t kcols;      // KH (fused) or KH * KW
};

template <class T>
WgradShape wgrad_shape(const ConvParams& p) {
  WgradShape s;
  s.fused = p.groups == 1 && p.dw == 1;
  s.oblocks = (p.ocg() + Tile<T>::MR - 1) / Tile<T>::MR;
  s.jlen = s.fused ? p.KW * p.icg() : p.icg();
  s.jblocks = (s.jlen + Tile<T>::NR - 1) / Tile<T>::NR;
  s.kcols = s.fused ? p.KH : p.KH * p.KW;
  return s;
}

// The oc-lanes orientation (wgrad_oc_lanes): a kernel row's KW * C (kw, ic) pairs in
// row blocks of even size (at most MR; 33 -> 3 x 11).
struct WgradRows {
  int64_t jlen, blocks, rows;
};
template <class T>
WgradRows wgrad_rows(const ConvParams& p) {
  WgradRows r;
  r.jlen = p.KW * p.C;
  r.blocks = (r.jlen + Tile<T>::MR - 1) / Tile<T>::MR;
  r.rows = (r.jlen + r.blocks - 1) / r.blocks;
  return r;
}

// Tiles: (group, kernel column kc, lane block jb); every output-channel block is inside.
// oc lanes: (kh, row block); every output-channel block is inside.
template <class T>
int64_t weight_grad_tiles(const ConvParams& p) {
  if (wgrad_oc_lanes(p, Tile<T>::MR, Tile<T>::NR)) return p.KH * wgrad_rows<T>(p).blocks;
  const WgradShape s = wgrad_shape<T>(p);
  return p.groups * s.kcols * s.jblocks;
}

// Weight gradient with the output channels in the lanes, into gwt[kh][kw][ic][o] (one group,
// dilation 1): acc[(kw, ic)][o] += x[pixel][(kw, ic)] * go[pixel][o] over output pixels. Per
// chunk of rows, the output gradient is packed once into [pixel][NR] panels, one per channel
// block, which serve every tile; a tile's rows are a run of adjacent (kw, ic) pairs of the
// padded NHWC input, broadcast in place (packing them cost a quarter of the time). Same
// chunking as weight_grad, so the sums do not depend on the thread count either.
template <class T>
void weight_grad_oc_lanes(const T* go, Strides4 gs, const PaddedNhwc<T>& x, const ConvParams& p, T* gwt,
                          int64_t row_begin, int64_t row_end, int64_t tile_begin, int64_t tile_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const WgradRows jr = wgrad_rows<T>(p);
  const int64_t oc = p.OC, oblocks = (oc + NR - 1) / NR;
  const int64_t rows_per_chunk = wgrad_rows_per_chunk(p), chunk_px = rows_per_chunk * p.OW;
  std::vector<T> gpanel(static_cast<size_t>(oblocks * chunk_px * NR));
  std::vector<Seg> segs(static_cast<size_t>(rows_per_chunk));
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows_per_chunk) {
    const int64_t r1 = std::min(row_end, r0 + rows_per_chunk);
    const bool first = r0 == 0;
    for (int64_t ob = 0; ob < oblocks; ++ob) {
      const int valid = static_cast<int>(std::min<int64_t>(NR, oc - ob * NR));
      int lanes[NV];
      tile_lanes<T>(valid, lanes);
      T* d = gpanel.data() + ob * chunk_px * NR;
      for (int64_t r = r0; r < r1; ++r) {
        const T* src = go + r / p.OH * gs.n + r % p.OH * gs.h + ob * NR * gs.c;
        if (gs.w == 1) {
          pack_rows_to_panel(src, gs.c, valid, p.OW, d, NR);
          d += p.OW * NR;
        } else if (gs.c == 1) {
          for (int64_t ow = 0; ow < p.OW; ++ow, d += NR)
            for (int v = 0; v < NV; ++v)
              S::store(d + v * W, lanes[v] ? S::load_n(src + ow * gs.w + v * W, lanes[v]) : S::zero());
        } else {
          for (int64_t ow = 0; ow < p.OW; ++ow, d += NR)
            for (int i = 0; i < NR; ++i) d[i] = i < valid ? src[ow * gs.w + i * gs.c] : T(0);
        }
      }
    }
    for (int64_t t = tile_begin; t < tile_end; ++t) {
      const int64_t kh = t / jr.blocks, j0 = t % jr.blocks * jr.rows;
      const int m = static_cast<int>(std::min(jr.rows, jr.jlen - j0));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / p.OH, oh = r % p.OH;
        segs[r - r0] = {((n * x.hp + oh * p.sh + kh * p.dh) * x.wp) * x.c + j0, (r - r0) * p.OW * NR, p.OW};
      }
      T* gt = gwt + (kh * jr.jlen + j0) * oc;
      for (int64_t ob = 0; ob < oblocks; ++ob) {
        int lanes[NV];
        tile_lanes<T>(static_cast<int>(std::min<int64_t>(NR, oc - ob * NR)), lanes);
        with_rows<1, MR>(m, [&](auto mc) {
          constexpr int M = decltype(mc)::value;
          V acc[M][NV];
          load_tile<T, M>(acc, first ? nullptr : gt + ob * NR, oc, lanes);
          ukernel<T, M, false, true>(x.data, 1, p.sw * x.c, gpanel.data() + ob * chunk_px * NR, NR, segs.data(),
                                     r1 - r0, acc, NR);
          for (int rr = 0; rr < M; ++rr)
            for (int v = 0; v < NV; ++v)
              if (lanes[v]) S::store_n(gt + rr * oc + ob * NR + v * W, acc[rr][v], lanes[v]);
        });
      }
    }
  }
}

template <class T>
void weight_grad(const T* go, Strides4 gs, const PaddedNhwc<T>& x, const ConvParams& p, T* gw,
                 int64_t row_begin, int64_t row_end, int64_t tile_begin, int64_t tile_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  if (wgrad_oc_lanes(p, MR, NR)) {
    weight_grad_oc_lanes<T>(go, gs, x, p, gw, row_begin, row_end, tile_begin, tile_end);
    return;
  }
  const WgradShape sh = wgrad_shape<T>(p);
  const int64_t icg = p.icg(), ocg = p.ocg();
  // The reduction runs over output pixels in chunks of whole rows (~256 pixels). Per chunk
  // and tile, the input lanes the tile needs are copied into one contiguous [pixel][NR]
  // panel (in place they sit one padded row apart, a cache line per step), which then
  // serves every output-channel block; partial sums live in gw between chunks. Chunks are
  // visited in order, so the result does not depend on the thread count.
  const int64_t rows_per_chunk = wgrad_rows_per_chunk(p);
  const int64_t wsize_o = p.KH * p.KW * icg;  // gw stride between output channels
  // Output channels in super-blocks whose slab of the output gradient (~96 KB) stays in L2
  // while this task's tiles stream past it (BLIS's MC level); without it the whole chunk of
  // the output gradient was re-read from L3 for every tile.
  const int64_t chunk_px = rows_per_chunk * p.OW;
  const int64_t oc_super = std::max<int64_t>(MR, (int64_t(96) * 1024 / int64_t(sizeof(T)) / chunk_px) / MR * MR);
  std::vector<Seg> segs;
  segs.reserve(static_cast<size_t>(rows_per_chunk));
  std::vector<T> panel(static_cast<size_t>(rows_per_chunk * p.OW * NR));
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows_per_chunk) {
    const int64_t r1 = std::min(row_end, r0 + rows_per_chunk);
    const bool first = r0 == 0;
    for (int64_t os = 0; os < ocg; os += oc_super)
    for (int64_t t = tile_begin; t < tile_end; ++t) {
      int64_t rest = t;
      const int64_t jb = rest % sh.jblocks;
      rest /= sh.jblocks;
      const int64_t kc = rest % sh.kcols;
      const int64_t g = rest / sh.kcols;
      const int64_t kh = sh.fused ? kc : kc / p.KW, kw = sh.fused ? 0 : kc % p.KW;
      const int64_t j0 = jb * NR;
      const int jvalid = static_cast<int>(std::min<int64_t>(NR, sh.jlen - j0));
      int lanes[NV];
      for (int v = 0; v < NV; ++v) lanes[v] = std::clamp(jvalid - v * W, 0, W);
      T* pp = panel.data();
      segs.clear();
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / p.OH, oh = r % p.OH;
        const T* src = x.data + ((n * x.hp + oh * p.sh + kh * p.dh) * x.wp + kw * p.dw) * x.c + g * icg + j0;
        if (jvalid == NR) {
          for (int64_t ow = 0; ow < p.OW; ++ow, pp += NR, src += p.sw * x.c)
            for (int v = 0; v < NV; ++v) S::store(pp + v * W, S::load(src + v * W));
        } else {
          for (int64_t ow = 0; ow < p.OW; ++ow, pp += NR, src += p.sw * x.c)
            for (int v = 0; v < NV; ++v)
              S::store(pp + v * W, lanes[v] ? S::load_n(src + v * W, lanes[v]) : S::zero());
        }
        // Rows that continue the previous one (an NCHW output gradient) extend its segment:
        // longer runs, less loop overhead.
        add_run(segs, {n * gs.n + oh * gs.h + g * ocg * gs.c, (r - r0) * p.OW * NR, p.OW}, gs.w);
      }
      T* gt = gw + g * ocg * wsize_o + (sh.fused ? kh * p.KW * icg : (kh * p.KW + kw) * icg) + j0;
      for (int64_t o0 = os; o0 < std::min(ocg, os + oc_super); o0 += MR) {
        const int m = static_cast<int>(std::min<int64_t>(MR, ocg - o0));
        T* go_t = gt + o0 * wsize_o;
        with_rows<1, MR>(m, [&](auto mc) {
          constexpr int M = decltype(mc)::value;
          V acc[M][NV];
          load_tile<T, M>(acc, first ? nullptr : go_t, wsize_o, lanes);
          ukernel<T, M, false>(go + o0 * gs.c, gs.c, gs.w, panel.data(), NR, segs.data(),
                               static_cast<int64_t>(segs.size()), acc, NR);
          for (int rr = 0; rr < M; ++rr)
            for (int v = 0; v < NV; ++v)
              if (lanes[v]) S::store_n(go_t + rr * wsize_o + v * W, acc[rr][v], lanes[v]);
        });
      }
    }
  }
}

// ---- weight gradient of 1x1 layers without padding ----------------------------------------

// A GEMM over the output pixels of all images, q = (n, oh, ow):
//   gw[g][o][i] = sum_q go[n][g * ocg + o][oh][ow] * x[n][g * icg + i][oh * sh][ow * sw]
// read in place from either layout (the general kernel above pads x into NHWC bands first and
// re-gathers an input panel for every block of output channels; at ResNet's 2048 -> 512 its
// 16-lane columns are 8 KB apart, one L1 set). Per chunk of pixels, the task's input
// channels are packed once into [sliver][k][NR] and serve all its output channels, which
// are broadcast from the output gradient in place (MR rows, a run of pixels per segment).
template <class T>
void weight_grad_1x1(const T* go, Strides4 gs, const T* x, Strides4 xs, const ConvParams& p,
                     const Wgrad1x1Plan& plan, T* gw, T* partials, int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const int64_t icg = p.icg(), ocg = p.ocg(), ohw = p.OH * p.OW, total = p.N * ohw;
  const int64_t slivers = (icg + NR - 1) / NR, kc = plan.chunk;
  const int64_t xstep = p.sw * xs.w;
  // Output channels per pass over the packed panel: their rows of the chunk (~96 KB) stay in
  // L2 while the panel's slivers stream past them.
  const int64_t mc = std::max<int64_t>(MR, (int64_t(96) * 1024 / int64_t(sizeof(T)) / kc) / MR * MR);
  std::vector<T> panel(static_cast<size_t>(plan.slivers_per_task * kc * NR));
  std::vector<Seg> xsegs, dsegs;
  // Packing the output gradient pays once its rows serve enough input channels: 128 lanes
  // (measured, channels_last 64 -> 256 at 56x56 with 32-64 lanes: torch / ours 0.95 -> 0.65
  // when packed; 256 -> 64 with 128-256 lanes: 0.84 -> 0.91).
  const bool pack_a = std::min(plan.slivers_per_task, slivers) * NR >= 128;
  std::vector<T> abuf(pack_a ? static_cast<size_t>((mc + MR) * kc) : 0);
  NextPanel<T> next;
  NextRows<T> next_rows;
  const bool unit = p.sh == 1 && p.sw == 1;
  const bool prefetch = unit && xs.w == 1 && xs.h == p.W && xs.c == p.H * p.W && xs.n == p.C * p.H * p.W;
  const bool prefetch_rows = unit && xs.c == 1 && xs.w == p.C && xs.h == p.W * p.C && xs.n == p.H * p.W * p.C;
  PrefetchRuns<T>& pf_runs = prefetch_rows ? static_cast<PrefetchRuns<T>&>(next_rows) : next;
  const int64_t per_run = p.groups * plan.sliver_blocks * plan.row_splits;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t run = task / per_run, t = task % per_run;
    const int64_t q_begin = run * total / plan.runs, q_end = (run + 1) * total / plan.runs;
    T* const gr = run == 0 ? gw : partials + (run - 1) * p.OC * icg;
    const int64_t rs = t % plan.row_splits, sb = t / plan.row_splits % plan.sliver_blocks;
    const int64_t g = t / plan.row_splits / plan.sliver_blocks;
    const int64_t o_begin = std::min(ocg, rs * plan.rows_per_split);
    const int64_t o_end = std::min(ocg, o_begin + plan.rows_per_split);
    const int64_t jb0 = sb * plan.slivers_per_task;
    const int64_t nb = std::min(plan.slivers_per_task, slivers - jb0);
    if (o_begin >= o_end || nb <= 0) continue;
    for (int64_t q0 = q_begin; q0 < q_end; q0 += kc) {
      const int64_t kk = std::min(kc, q_end - q0);
      // Runs of pixels: a == offset in x (xsegs) or go (dsegs), b == k (xsegs) or k * NR.
      xsegs.clear();
      dsegs.clear();
      for (int64_t q = q0; q < q0 + kk;) {
        const int64_t n = q / ohw, r = q % ohw, oh = r / p.OW, ow = r % p.OW;
        const int64_t len = std::min(p.OW - ow, q0 + kk - q), k = q - q0;
        const int64_t xo = n * xs.n + oh * p.sh * xs.h + ow * xstep;
        const int64_t d = n * gs.n + oh * gs.h + ow * gs.w;
        add_run(xsegs, {xo, k, len}, xstep);
        add_run(dsegs, {d, k * NR, len}, gs.w);
        q += len;
      }
      // Input-channel sliver s of this chunk as [k][NR], from channel planes (channels_last
      // is packed below, all slivers in one pass). With one block of output channels each
      // sliver is packed just before its products (still in L1); with several, all are
      // packed first and serve every block.
      auto pack_sliver = [&](int64_t s, T* dst) {
        const int64_t c0 = g * icg + (jb0 + s) * NR;
        const int valid = static_cast<int>(std::min<int64_t>(NR, icg - (jb0 + s) * NR));
        if (valid < NR)
          for (int64_t k = 0; k < kk; ++k)
            for (int lane = valid; lane < NR; ++lane) dst[k * NR + lane] = T(0);
        for (const Seg& sg : xsegs) {
          const T* src = x + c0 * xs.c + sg.a;
          T* d = dst + sg.b * NR;
          if (xstep == 1) {
            transpose_2d(src, xs.c, d, NR, valid, sg.len);  // channel planes to [k][lane]
          } else {
            for (int lane = 0; lane < valid; ++lane)
              for (int64_t j = 0; j < sg.len; ++j) d[j * NR + lane] = src[lane * xs.c + j * xstep];
          }
        }
      };
      // channels_last: every sliver is packed in one pass over the pixels, each pixel's
      // channels read as one run (sliver by sliver, the reads were 128-byte pieces a row
      // apart, each pass waiting on memory: ~13% of 256 -> 64 at 56x56).
      const bool one_block = o_end - o_begin <= mc && xs.c != 1;
      if (xs.c == 1) {
        const T* xc = x + g * icg + jb0 * NR;
        const int64_t cw = std::min(nb * NR, icg - jb0 * NR);
        for (const Seg& sg : xsegs)
          for (int64_t j = 0; j < sg.len; ++j) {
            const T* src = xc + sg.a + j * xstep;
            T* d = panel.data() + (sg.b + j) * NR;
            for (int64_t c = 0; c < nb * NR; c += W, src += W) {
              const int64_t n = std::clamp<int64_t>(cw - c, 0, W);
              T* dc = d + c / NR * kk * NR + c % NR;
              S::store(dc, n == W ? S::load(src) : n ? S::load_n(src, static_cast<int>(n)) : S::zero());
            }
          }
      } else if (!one_block) {
        for (int64_t s = 0; s < nb; ++s) pack_sliver(s, panel.data() + s * kk * NR);
      }
      // The next chunk of a contiguous input is prefetched during this one's products (NCHW:
      // its channel planes are as many short streams as in the 1x1 forward).
      if (prefetch && q0 + kc < q_end)
        next.reset(x, p, g, q0 + kc, std::min(q_end, q0 + 2 * kc), jb0 * NR, std::min(nb * NR, icg - jb0 * NR));
      else if (prefetch_rows && q0 + kc < q_end)
        next_rows.reset(x, p, g, q0 + kc, std::min(q_end, q0 + 2 * kc), jb0 * NR, std::min(nb * NR, icg - jb0 * NR));
      else
        pf_runs.clear();
      const int64_t per_call = pf_runs.lines / std::max<int64_t>(1, nb * ((o_end - o_begin + MR - 1) / MR)) + 1;
      const bool first = q0 == q_begin;
      for (int64_t m0 = o_begin; m0 < o_end; m0 += mc) {
        const int64_t m1 = std::min(o_end, m0 + mc);
        if (pack_a) {
          // [block][k][MR], zero rows past m1: the packed microkernel then has constant
          // offsets only (the strided one keeps a register per row and reloads some).
          const int64_t nblk = (m1 - m0 + MR - 1) / MR;
          if (gs.c == 1) {
            // channels_last: each pixel's m1 - m0 channels are one contiguous run, read once
            // and dealt out to the blocks (per block, the pixels lie a whole row apart).
            const T* a = go + g * ocg + m0;
            for (const Seg& sg : dsegs)
              for (int64_t j = 0; j < sg.len; ++j) {
                const T* src = a + sg.a + j * gs.w;
                T* d = abuf.data() + (sg.b / NR + j) * MR;
                for (int64_t b = 0; b < nblk; ++b, d += kk * MR, src += MR) {
                  const int rows = static_cast<int>(std::min<int64_t>(MR, m1 - m0 - b * MR));
                  if constexpr (MR <= W) {  // one masked vector per block
                    S::store_n(d, S::load_n(src, rows), MR);
                  } else {
                    int r = 0;
                    for (; r < rows; ++r) d[r] = src[r];
                    for (; r < MR; ++r) d[r] = T(0);
                  }
                }
              }
          } else {
            for (int64_t b = 0; b < nblk; ++b) {
              const int64_t rows = std::min<int64_t>(MR, m1 - m0 - b * MR);
              const T* a = go + (g * ocg + m0 + b * MR) * gs.c;
              for (const Seg& sg : dsegs) {
                T* d = abuf.data() + b * kk * MR + sg.b / NR * MR;
                const T* src = a + sg.a;
                if (gs.w == 1) {
                  pack_rows_to_panel(src, gs.c, static_cast<int>(rows), sg.len, d, MR);
                  continue;
                }
                for (int r = 0; r < MR; ++r)
                  for (int64_t j = 0; j < sg.len; ++j) d[j * MR + r] = r < rows ? src[r * gs.c + j * gs.w] : T(0);
              }
            }
          }
        }
        for (int64_t s = 0; s < nb; ++s) {
          int lanes[NV];
          tile_lanes<T>(static_cast<int>(std::min<int64_t>(NR, icg - (jb0 + s) * NR)), lanes);
          const T* bs = panel.data() + (one_block ? 0 : s * kk * NR);
          if (one_block) pack_sliver(s, panel.data());
          for (int64_t o0 = m0; o0 < m1; o0 += MR) {
            const int m = static_cast<int>(std::min<int64_t>(MR, m1 - o0));
            T* gt = gr + (g * ocg + o0) * icg + (jb0 + s) * NR;
            const T* a = go + (g * ocg + o0) * gs.c;
            // The packed microkernel issues its share among its FMAs (see PrefetchRuns).
            const auto pf = pack_a ? pf_runs.take(std::min(kk, per_call)) : typename PrefetchRuns<T>::Run{nullptr, 0, 0};
            if (!pack_a) pf_runs.issue(per_call);
            with_rows<1, MR>(m, [&](auto mcnt) {
              constexpr int M = decltype(mcnt)::value;
              V acc[M][NV];
              load_tile<T, M>(acc, first ? nullptr : gt, icg, lanes);
              if (pack_a)
                ukernel_packed<T, M>(abuf.data() + (o0 - m0) * kk, bs, kk, acc, nullptr, 0, nullptr, pf.p, pf.stride, pf.n);
              else
                ukernel<T, M, false>(a, gs.c, gs.w, bs, NR, dsegs.data(), static_cast<int64_t>(dsegs.size()), acc, NR);
              for (int r = 0; r < M; ++r)
                for (int v = 0; v < NV; ++v)
                  if (lanes[v]) S::store_n(gt + r * icg + v * W, acc[r][v], lanes[v]);
            });
          }
        }
      }
    }
  }
}

// ---- weight gradient, output pixels in the lanes ----------------------------------------

// Accumulator vectors of weight_grad_rows: all but the output-gradient vector and a spare of
// the register file (x is read by the FMAs' memory operands).
template <class S>
constexpr int rows_accumulators() {
  return S::W >= 16 ? 30 : S::W >= 8 ? 14 : 8;
}

// c[o][kw] += the products of NO output-gradient rows (g + o * g_o, `nr` rows g_r apart) with
// the input rows x + kw * dw (x_r apart), OW pixels each, a vector at a time. Never inlined,
// as ukernel: inlined into the task loop GCC kept the sums on the stack.
template <class T, int KW, int NO>
__attribute__((noinline)) void rows_sum(typename Tile<T>::V (&acc)[NO][KW], const T* FASTCONV_RESTRICT g, int64_t g_o,
                                     int64_t g_r, const T* FASTCONV_RESTRICT x, int64_t x_r, int64_t dw, int64_t nr,
                                     int64_t OW) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int W = S::W;
  V c[NO][KW];
#pragma GCC unroll 30
  for (int o = 0; o < NO; ++o)
#pragma GCC unroll 11
    for (int kw = 0; kw < KW; ++kw) c[o][kw] = acc[o][kw];
  const int64_t full = OW / W * W;
  const int tail = static_cast<int>(OW - full);
  for (int64_t r = 0; r < nr; ++r, g += g_r, x += x_r) {
    for (int64_t w0 = 0; w0 < full; w0 += W) {
#pragma GCC unroll 30
      for (int o = 0; o < NO; ++o) {
        const V gv = S::load(g + o * g_o + w0);
#pragma GCC unroll 11
        for (int kw = 0; kw < KW; ++kw) c[o][kw] = S::fma(gv, S::load(x + w0 + kw * dw), c[o][kw]);
      }
    }
    if (tail) {
#pragma GCC unroll 30
      for (int o = 0; o < NO; ++o) {
        const V gv = S::load_n(g + o * g_o + full, tail);
#pragma GCC unroll 11
        for (int kw = 0; kw < KW; ++kw) c[o][kw] = S::fma(gv, S::load_n(x + full + kw * dw, tail), c[o][kw]);
      }
    }
  }
#pragma GCC unroll 30
  for (int o = 0; o < NO; ++o)
#pragma GCC unroll 11
    for (int kw = 0; kw < KW; ++kw) acc[o][kw] = c[o][kw];
}

template <class T, int KW>
void weight_grad_rows_kw(const T* go, const T* xp, int64_t hp, int64_t wp, const ConvParams& p,
                         const WgradRowsPlan& plan, T* gw, T* partials, int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MAXO = std::max(1, rows_accumulators<S>() / KW);
  const int64_t icg = p.icg(), ocg = p.ocg(), ohw = p.OH * p.OW, rows = p.N * p.OH;
  const int64_t oblocks = (ocg + plan.ob - 1) / plan.ob;
  const int64_t per_run = p.groups * icg * p.KH * oblocks;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t run = task / per_run, t = task % per_run;
    const int64_t obk = t % oblocks, kh = t / oblocks % p.KH, c = t / oblocks / p.KH % icg;
    const int64_t g = t / oblocks / p.KH / icg;
    const int64_t o0 = obk * plan.ob, no = std::min(plan.ob, ocg - o0);
    const int64_t r0 = run * rows / plan.runs, r1 = (run + 1) * rows / plan.runs;
    T* out = run == 0 ? gw : partials + (run - 1) * p.OC * icg * p.KH * p.KW;
    // A whole block of MAXO channels at once, the channels of a short block one at a time.
    for (int64_t ob = 0; ob < no;) {
      const bool whole = no - ob == MAXO;
      const int64_t cnt = whole ? MAXO : 1;
      V acc[MAXO][KW];
      for (int o = 0; o < MAXO; ++o)
        for (int kw = 0; kw < KW; ++kw) acc[o][kw] = S::zero();
      for (int64_t row = r0; row < r1;) {
        const int64_t n = row / p.OH, oh = row % p.OH, nr = std::min(r1 - row, p.OH - oh);
        const T* gr = go + (n * p.OC + g * ocg + o0 + ob) * ohw + oh * p.OW;
        const T* xr = xp + ((n * p.C + g * icg + c) * hp + oh * p.sh + kh * p.dh) * wp;
        if (whole)
          rows_sum<T, KW, MAXO>(acc, gr, ohw, p.OW, xr, p.sh * wp, p.dw, nr, p.OW);
        else
          rows_sum<T, KW, 1>(reinterpret_cast<V(&)[1][KW]>(acc[0]), gr, ohw, p.OW, xr, p.sh * wp, p.dw, nr, p.OW);
        row += nr;
      }
      for (int64_t o = 0; o < cnt; ++o)
        for (int kw = 0; kw < KW; ++kw)
          out[(((g * ocg + o0 + ob + o) * p.KH + kh) * p.KW + kw) * icg + c] = S::reduce_add(acc[o][kw]);
      ob += cnt;
    }
  }
}

// gw (OC, KH, KW, C / groups) of a layer with stride 1 along W, from an NCHW output gradient
// and a zero-padded NCHW input xp (hp x wp planes): task = (run of output rows, group, input
// channel, kh, block of plan.ob output channels), holding ob x KW vectors of sums over the
// run's rows, a vector of output pixels at a time. Run 0 writes gw, run r > 0 partials
// + (r - 1) * gw.numel() (added in order by the caller).
template <class T>
void weight_grad_rows(const T* go, const T* xp, int64_t hp, int64_t wp, const ConvParams& p,
                      const WgradRowsPlan& plan, T* gw, T* partials, int64_t task_begin, int64_t task_end) {
  with_rows<1, kMaxRowsKW>(static_cast<int>(p.KW), [&](auto kw) {
    weight_grad_rows_kw<T, decltype(kw)::value>(go, xp, hp, wp, p, plan, gw, partials, task_begin, task_end);
  });
}

// Output channels per task of weight_grad_rows for a kernel width (the accumulators it has).
template <class T>
int64_t weight_grad_rows_block(int64_t kw) {
  return std::max<int64_t>(1, rows_accumulators<typename Tile<T>::S>() / std::max<int64_t>(1, kw));
}

// ---- input gradient (strided layers) -----------------------------------------------------

template <class T>
void input_grad_scatter(const T* go, Strides4 gs, const T* wpack, const ConvParams& p, T* gx,
                        int64_t hp, int64_t wp, int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const int64_t icg = p.icg(), ocg = p.ocg(), C = p.C;
  const int64_t iblocks = (icg + NR - 1) / NR;
  for (int64_t t = task_begin; t < task_end; ++t) {
    const int64_t ib = t % iblocks;
    const int64_t rest = t / iblocks;
    const int64_t g = rest % p.groups, n = rest / p.groups;
    const int64_t ic0 = g * icg + ib * NR;
    const int nvalid = static_cast<int>(std::min<int64_t>(NR, icg - ib * NR));
    int lanes[NV];
    for (int v = 0; v < NV; ++v) lanes[v] = std::clamp(nvalid - v * W, 0, W);
    T* gxn = gx + n * hp * wp * C + ic0;
    for (int64_t px = 0; px < hp * wp; ++px)
      std::memset(gxn + px * C, 0, sizeof(T) * nvalid);
    const Seg seg{0, 0, ocg};
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow0 = 0; ow0 < p.OW; ow0 += MR) {
        const int m = static_cast<int>(std::min<int64_t>(MR, p.OW - ow0));
        const T* a = go + n * gs.n + (g * ocg) * gs.c + oh * gs.h + ow0 * gs.w;
        for (int64_t kh = 0; kh < p.KH; ++kh)
          for (int64_t kw = 0; kw < p.KW; ++kw) {
            const T* wb = wpack + (((g * iblocks + ib) * p.KH + kh) * p.KW + kw) * ocg * NR;
            T* dst = gxn + ((oh * p.sh + kh * p.dh) * wp + ow0 * p.sw + kw * p.dw) * C;
            with_rows<1, MR>(m, [&](auto mc) {
              constexpr int M = decltype(mc)::value;
              V acc[M][NV];
              zero_acc<T, M>(acc);
              ukernel<T, M, false>(a, gs.w, gs.c, wb, NR, &seg, 1, acc, NR);
              for (int r = 0; r < M; ++r)
                for (int v = 0; v < NV; ++v)
                  if (lanes[v]) {
                    T* d = dst + r * p.sw * C + v * W;
                    S::store_n(d, S::add(S::load_n(d, lanes[v]), acc[r][v]), lanes[v]);
                  }
            });
          }
      }
  }
}

// ---- bias gradient -----------------------------------------------------------------------

template <class T>
void bias_grad(const T* go, Strides4 gs, const ConvParams& p, T* gb, int64_t oc_begin, int64_t oc_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int W = Tile<T>::W;
  if (gs.c == 1) {
    // Channels in the lanes: one pass over the pixels per vector of channels.
    for (int64_t oc0 = oc_begin; oc0 < oc_end; oc0 += W) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, oc_end - oc0));
      V acc = S::zero();
      for (int64_t n = 0; n < p.N; ++n)
        for (int64_t h = 0; h < p.OH; ++h)
          for (int64_t w = 0; w < p.OW; ++w)
            acc = S::add(acc, S::load_n(go + n * gs.n + h * gs.h + w * gs.w + oc0, lanes));
      S::store_n(gb + oc0, acc, lanes);
    }
    return;
  }
  for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
    V acc = S::zero();
    T tail = T(0);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t h = 0; h < p.OH; ++h) {
        const T* row = go + n * gs.n + oc * gs.c + h * gs.h;
        if (gs.w == 1) {
          int64_t w = 0;
          for (; w + W <= p.OW; w += W) acc = S::add(acc, S::load(row + w));
          if (w < p.OW) acc = S::add(acc, S::load_n(row + w, static_cast<int>(p.OW - w)));
        } else {
          for (int64_t w = 0; w < p.OW; ++w) tail += row[w * gs.w];
        }
      }
    gb[oc] = S::reduce_add(acc) + tail;
  }
}

// ---- Winograd F(m x m, 3 x 3) ------------------------------------------------------------

// sum_k c[k] * x[k] for a row of constant coefficients: zero terms vanish and +-1 terms
// become adds once the loops are unrolled over constexpr tables.
template <class S, int K>
FASTCONV_ALWAYS_INLINE typename S::V const_dot(const double (&c)[K], const typename S::V* x, int xs) {
  typename S::V acc = S::zero();
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) {
    if (c[k] == 0.0) continue;
    if (c[k] == 1.0) acc = S::add(acc, x[k * xs]);
    else if (c[k] == -1.0) acc = S::sub(acc, x[k * xs]);
    else acc = S::fma(S::set1(c[k]), x[k * xs], acc);
  }
  return acc;
}

// out = L x L^T for a constant P x A matrix L: the input (B^T d B) and output (A^T m A)
// transforms, on vectors of channels.
template <class S, int P, int A>
FASTCONV_ALWAYS_INLINE void sandwich(const double (&L)[P][A], const typename S::V (&x)[A][A],
                                     typename S::V (&out)[P][P]) {
  typename S::V tmp[P][A];
#pragma GCC unroll 8
  for (int i = 0; i < P; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < A; ++j) tmp[i][j] = const_dot<S, A>(L[i], &x[0][j], A);
#pragma GCC unroll 8
  for (int i = 0; i < P; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < P; ++j) out[i][j] = const_dot<S, A>(L[j], &tmp[i][0], 1);
}

template <class T, int M>
void winograd_weight_m(const T* w, const ConvParams& p, bool transposed, bool hwi, int64_t oc0, int64_t oc_total, T* u,
                       int64_t ocb_begin, int64_t ocb_end) {
  using WG = Winograd<M>;
  // F(4x4)'s G has fractions (1/6, 1/24): its products run in double and each U is rounded to
  // T once. F(2x2)'s halves are exact in T, whose vectors are twice as wide (the transform of
  // a 5x5 layer's four pieces at batch 1 was ~20% of AlexNet conv2 in double).
  using R = std::conditional_t<M == 2, T, double>;
  constexpr int A = WG::A, NR = Tile<T>::NR;
  const int64_t C = p.C, ocblocks = (p.OC + NR - 1) / NR, K = p.KH, KK = K * K, pieces = winograd_pieces(K);
  // The NR output channels of a block side by side, so that the transform's products run as
  // vectors over them (one (oc, ic) pair at a time took a quarter of VGG conv5's forward).
  // They come from pack_weight's panels (tap, ic, lane), filled by 8 x 8 transposes in any
  // layout: gathered here one float at a time, the taps took more time than the transform's
  // arithmetic (27% of a batch-1 13x13 layer), and a channels_last weight's taps (NR x k x k
  // lines, C apart) fell into a few L1 sets, so it was converted to OIHW first.
  ConvParams whole = p;
  whole.OC = oc_total;
  std::vector<T> panel(static_cast<size_t>(KK * C * NR));
  alignas(64) const T zero[NR] = {};
  alignas(64) R gg[A][3][NR];
  for (int64_t ocb = ocb_begin; ocb < ocb_end; ++ocb) {
    // pack_weight writes item i at out + i * KK * C * NR; this block is item oc0 / NR + ocb.
    const int64_t item = oc0 / NR + ocb;
    pack_weight(w, whole, false, transposed, hwi, NR, rebased(panel.data(), item * KK * C * NR), item, item + 1);
    for (int64_t ic = 0; ic < C; ++ic)
      for (int64_t piece = 0; piece < pieces; ++piece) {
        const T* g[9];
        for (int t = 0; t < 9; ++t) {
          const int64_t kh = winograd_piece_tap(piece / 2, t / 3), kw = winograd_piece_tap(piece % 2, t % 3);
          g[t] = kh < 0 || kw < 0 ? zero : panel.data() + ((kh * K + kw) * C + ic) * NR;
        }
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
#pragma GCC unroll 3
          for (int j = 0; j < 3; ++j)
            for (int l = 0; l < NR; ++l)
              gg[i][j][l] = R(WG::G[i][0]) * R(g[j][l]) + R(WG::G[i][1]) * R(g[3 + j][l]) + R(WG::G[i][2]) * R(g[6 + j][l]);
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
          for (int j = 0; j < A; ++j) {
            T* dst = u + ((((i * A + j) * ocblocks + ocb) * pieces + piece) * C + ic) * NR;
            for (int l = 0; l < NR; ++l)
              dst[l] = static_cast<T>(gg[i][0][l] * R(WG::G[j][0]) + gg[i][1][l] * R(WG::G[j][1]) +
                                      gg[i][2][l] * R(WG::G[j][2]));
          }
      }
  }
}

template <class T, int M>
void winograd_input_m(const PaddedNhwc<T>& x, const ConvParams& p, int64_t first, int64_t count, T* v,
                      int64_t t_begin, int64_t t_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  using WG = Winograd<M>;
  constexpr int A = WG::A, W = Tile<T>::W;
  const int64_t tw_n = winograd_tiles(p.OW, M), th_n = winograd_tiles(p.OH, M);
  const int64_t C = x.c;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t g = first + t;
    const int64_t tw = g % tw_n, th = (g / tw_n) % th_n, n = g / (tw_n * th_n);
    const T* base = x.data + ((n * x.hp + th * M) * x.wp + tw * M) * C;
    for (int64_t c0 = 0; c0 < C; c0 += W) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, C - c0));
      V d[A][A], vt[A][A];
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < A; ++j) d[i][j] = S::load_n(base + (i * x.wp + j) * C + c0, lanes);
      sandwich<S, A, A>(WG::BT, d, vt);
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < A; ++j) S::store_n(v + ((i * A + j) * count + t) * C + c0, vt[i][j], lanes);
    }
  }
}

template <class T>
void winograd_gemm(const T* v, const T* u, const ConvParams& p, int m, int64_t count, T* mm,
                   int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const int64_t C = p.C, ocblocks = (p.OC + NR - 1) / NR, ocp = ocblocks * NR;
  const Seg seg{0, 0, C};
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t xi = task / ocblocks, ocb = task % ocblocks;
    const T* a = v + xi * count * C;
    const T* b = u + (xi * ocblocks + ocb) * C * NR;
    T* out = mm + xi * count * ocp + ocb * NR;
    for (int64_t t0 = 0; t0 < count; t0 += MR) {
      const int rows = static_cast<int>(std::min<int64_t>(MR, count - t0));
      with_rows<1, MR>(rows, [&](auto mc) {
        constexpr int R = decltype(mc)::value;
        V acc[R][NV];
        zero_acc<T, R>(acc);
        ukernel<T, R, false>(a + t0 * C, C, 1, b, NR, &seg, 1, acc, NR);
        for (int r = 0; r < R; ++r)
          for (int vv = 0; vv < NV; ++vv) S::store(out + (t0 + r) * ocp + vv * W, acc[r][vv]);
      });
    }
  }
  (void)m;
}

// The 5x5 layer's products: output tile (n, th, tw) sums piece (a, b)'s weights times the
// input tile (th + a, tw + b) of the extended grid (th_n + 1 rows of tw_n + 1 tiles per
// image), whose v row is a constant offset from the tile's own: the four pieces are four
// segments of one reduction. A microkernel call takes tiles of one tile row only (the next
// row's first tile is two extended tiles on, not one).
template <class T>
void winograd_gemm5(const T* v, int64_t vcount, const T* u, const ConvParams& p, int64_t first, int64_t count, T* mm,
                    int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const int64_t C = p.C, ocblocks = (p.OC + NR - 1) / NR, ocp = ocblocks * NR;
  const int64_t th_n = winograd_tiles(p.OH, 2), tw_n = winograd_tiles(p.OW, 2), ew = tw_n + 1;
  const Seg segs[4] = {{0, 0, C}, {C, C * NR, C}, {ew * C, 2 * C * NR, C}, {(ew + 1) * C, 3 * C * NR, C}};
  const int64_t r0 = first / tw_n, rows = count / tw_n;
  const int64_t e0 = winograd_ext_row(r0, th_n);
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t xi = task / ocblocks, ocb = task % ocblocks;
    const T* a = v + xi * vcount * C;
    const T* b = u + (xi * ocblocks + ocb) * 4 * C * NR;
    T* out = mm + xi * count * ocp + ocb * NR;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t e = winograd_ext_row(r0 + r, th_n) - e0;
      for (int64_t t0 = 0; t0 < tw_n; t0 += MR) {
        const int n = static_cast<int>(std::min<int64_t>(MR, tw_n - t0));
        T* o = out + (r * tw_n + t0) * ocp;
        with_rows<1, MR>(n, [&](auto mc) {
          constexpr int R = decltype(mc)::value;
          V acc[R][NV];
          zero_acc<T, R>(acc);
          ukernel<T, R, false>(a + (e * ew + t0) * C, C, 1, b, NR, segs, 4, acc, NR);
          for (int rr = 0; rr < R; ++rr)
            for (int vv = 0; vv < NV; ++vv) S::store(o + rr * ocp + vv * W, acc[rr][vv]);
        });
      }
    }
  }
}

template <class T, int M>
bool winograd_output_m(const T* mm, const ConvParams& p, int64_t first, int64_t count, const Epilogue<T>& ep,
                       T* y, Strides4 ys, int64_t t_begin, int64_t t_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  using WG = Winograd<M>;
  constexpr int A = WG::A, W = Tile<T>::W, NR = Tile<T>::NR;
  const int64_t ocp = (p.OC + NR - 1) / NR * NR;
  const int64_t tw_n = winograd_tiles(p.OW, M), th_n = winograd_tiles(p.OH, M);
  const bool vec_store = ys.c == 1 && (!ep.residual || ep.rs.c == 1);
  // Sums of o * 0 over the outputs kept: 0 while they are all finite, NaN from the first
  // that is not (before the epilogue, whose ReLU could hide a NaN).
  V junk = S::zero();
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t g = first + t;
    const int64_t tw = g % tw_n, th = (g / tw_n) % th_n, n = g / (tw_n * th_n);
    const int rows = static_cast<int>(std::min<int64_t>(M, p.OH - th * M));
    const int cols = static_cast<int>(std::min<int64_t>(M, p.OW - tw * M));
    for (int64_t oc0 = 0; oc0 < p.OC; oc0 += W) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, p.OC - oc0));
      V mv[A][A], o[M][M];
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < A; ++j) mv[i][j] = S::load(mm + ((i * A + j) * count + t) * ocp + oc0);
      sandwich<S, M, A>(WG::AT, mv, o);
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) junk = S::fma(o[i][j], S::zero(), junk);
      const V sc = ep.scale ? S::load_n(ep.scale + oc0, lanes) : S::set1(T(1));
      const V sh = ep.shift ? S::load_n(ep.shift + oc0, lanes) : S::zero();
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) {
          V val = o[i][j];
          if (ep.scale) val = S::mul(val, sc);
          if (ep.shift) val = S::add(val, sh);
          const int64_t oh = th * M + i, ow = tw * M + j;
          T* yp = y + n * ys.n + oc0 * ys.c + oh * ys.h + ow * ys.w;
          const T* rp = ep.residual ? ep.residual + n * ep.rs.n + oc0 * ep.rs.c + oh * ep.rs.h + ow * ep.rs.w
                                    : nullptr;
          if (vec_store) {
            if (rp) val = S::add(val, S::load_n(rp, lanes));
            if (ep.relu) val = S::max(S::zero(), val);
            S::store_n(yp, val, lanes);
          } else {
            alignas(64) T buf[W];
            S::store(buf, val);
            for (int l = 0; l < lanes; ++l) yp[l * ys.c] = finish_scalar(buf[l], ep, rp ? rp + l * ep.rs.c : nullptr);
          }
        }
    }
  }
  // The padded output-channel lanes hold 0 * V: NaN only where the real lanes are too.
  alignas(64) T buf[W];
  S::store(buf, junk);
  for (int l = 0; l < W; ++l)
    if (buf[l] != T(0)) return false;
  return true;
}

template <class T>
void winograd_weight(const T* w, const ConvParams& p, int m, bool transposed, bool hwi, int64_t oc0, int64_t oc_total,
                     T* u, int64_t b, int64_t e) {
  if (m == 4) winograd_weight_m<T, 4>(w, p, transposed, hwi, oc0, oc_total, u, b, e);
  else winograd_weight_m<T, 2>(w, p, transposed, hwi, oc0, oc_total, u, b, e);
}
template <class T>
void winograd_input(const PaddedNhwc<T>& x, const ConvParams& p, int m, int64_t first, int64_t count, T* v,
                    int64_t b, int64_t e) {
  if (m == 4) winograd_input_m<T, 4>(x, p, first, count, v, b, e);
  else winograd_input_m<T, 2>(x, p, first, count, v, b, e);
}
template <class T>
bool winograd_output(const T* mm, const ConvParams& p, int m, int64_t first, int64_t count, const Epilogue<T>& ep,
                     T* y, Strides4 ys, int64_t b, int64_t e) {
  if (m == 4) return winograd_output_m<T, 4>(mm, p, first, count, ep, y, ys, b, e);
  return winograd_output_m<T, 2>(mm, p, first, count, ep, y, ys, b, e);
}

// ---- weight gradient by Winograd F(2x2, 3x3) ------------------------------------------
// The forward tile run backwards: a 4x4 input tile and the 2x2 output-gradient tile it served
// give the 3x3 weight gradient through the same 16 points (Lavin & Gray's F(3x3, 2x2)), 16
// multiplies per tile and channel pair where the direct sum takes 36.

template <class T>
void winograd_wgrad_go(const T* go, Strides4 gs, const ConvParams& p, int64_t first, int64_t count, T* vg,
                       int64_t t_begin, int64_t t_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  using WG = Winograd<2>;
  constexpr int W = Tile<T>::W;
  const int64_t tw_n = winograd_tiles(p.OW, 2), th_n = winograd_tiles(p.OH, 2);
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t g = first + t;
    const int64_t tw = g % tw_n, th = (g / tw_n) % th_n, n = g / (tw_n * th_n);
    const T* base = go + n * gs.n + th * 2 * gs.h + tw * 2 * gs.w;
    const bool down = th * 2 + 1 < p.OH, right = tw * 2 + 1 < p.OW;  // the tile's second row / column exist
    for (int64_t oc0 = 0; oc0 < p.OC; oc0 += W) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, p.OC - oc0));
      V d[2][2], o[4][4];
      d[0][0] = S::load_n(base + oc0, lanes);
      d[0][1] = right ? S::load_n(base + gs.w + oc0, lanes) : S::zero();
      d[1][0] = down ? S::load_n(base + gs.h + oc0, lanes) : S::zero();
      d[1][1] = down && right ? S::load_n(base + gs.h + gs.w + oc0, lanes) : S::zero();
      sandwich<S, 4, 2>(WG::ATT, d, o);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) S::store_n(vg + ((i * 4 + j) * count + t) * p.OC + oc0, o[i][j], lanes);
    }
  }
}

template <class T>
void winograd_wgrad_gemm(const T* vg, const T* v, const ConvParams& p, int64_t count, bool first_chunk, T* mw,
                         int64_t task_begin, int64_t task_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, NV = Tile<T>::NV, W = Tile<T>::W;
  const int64_t C = p.C, OC = p.OC, cblocks = (C + NR - 1) / NR, cp = cblocks * NR, oblocks = (OC + MR - 1) / MR;
  const Seg seg{0, 0, count};
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t ob = task % oblocks, cb = task / oblocks % cblocks, xi = task / oblocks / cblocks;
    const int64_t oc0 = ob * MR;
    // A[r][k] = vg[xi][k][oc0 + r] (rows adjacent), B[k][lane] = v[xi][k][cb * NR + lane]; the
    // lanes past C read the next tile's channels (or the buffer's tail) and land in mw's
    // padding columns, which nothing reads.
    const T* a = vg + xi * count * OC + oc0;
    const T* b = v + xi * count * C + cb * NR;
    T* out = mw + (xi * OC + oc0) * cp + cb * NR;
    with_rows<1, MR>(static_cast<int>(std::min<int64_t>(MR, OC - oc0)), [&](auto mc) {
      constexpr int R = decltype(mc)::value;
      V acc[R][NV];
      for (int r = 0; r < R; ++r)
        for (int vv = 0; vv < NV; ++vv) acc[r][vv] = first_chunk ? S::zero() : S::load(out + r * cp + vv * W);
      ukernel<T, R, false, true>(a, 1, OC, b, C, &seg, 1, acc, NR);
      for (int r = 0; r < R; ++r)
        for (int vv = 0; vv < NV; ++vv) S::store(out + r * cp + vv * W, acc[r][vv]);
    });
  }
}

template <class T>
void winograd_wgrad_output(const T* mw, const ConvParams& p, T* gw, int64_t oc_begin, int64_t oc_end) {
  using S = typename Tile<T>::S;
  using V = typename Tile<T>::V;
  using WG = Winograd<2>;
  constexpr int W = Tile<T>::W, NR = Tile<T>::NR;
  const int64_t C = p.C, cp = (C + NR - 1) / NR * NR;
  for (int64_t oc = oc_begin; oc < oc_end; ++oc)
    for (int64_t c0 = 0; c0 < C; c0 += W) {
      const int lanes = static_cast<int>(std::min<int64_t>(W, C - c0));
      V m[4][4], o[3][3];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) m[i][j] = S::load(mw + ((i * 4 + j) * p.OC + oc) * cp + c0);
      sandwich<S, 3, 4>(WG::GT, m, o);
#pragma GCC unroll 3
      for (int kh = 0; kh < 3; ++kh)
#pragma GCC unroll 3
        for (int kw = 0; kw < 3; ++kw) S::store_n(gw + ((oc * 3 + kh) * 3 + kw) * C + c0, o[kh][kw], lanes);
    }
}

template <class T>
const ConvKernels<T>* make_table() {
  static const ConvKernels<T> table = {
      Tile<T>::MR,
      Tile<T>::NR,
      Tile<T>::MR,
#if defined(__AVX2__)
      std::is_same_v<T, float>,
#else
      false,
#endif
      &pack_nhwc<T>,
      &unpack_nhwc<T>,
      &pack_weight<T>,
      &transpose_2d<T>,
      &forward_nhwc<T>,
      &forward_1x1_nchw<T>,
      kHasNarrow<T> ? kNarrowMR : 0,
      kNarrowNV * Tile<T>::W,
      kHasNarrow<T> ? &forward_1x1_nchw_narrow<T> : nullptr,
      &forward_1x1_nhwc<T>,
      &forward_nchw_direct<T>,
      &weight_grad<T>,
      &weight_grad_tiles<T>,
      &weight_grad_1x1<T>,
      &weight_grad_rows<T>,
      &weight_grad_rows_block<T>,
      &input_grad_scatter<T>,
      &bias_grad<T>,
      &winograd_weight<T>,
      &winograd_input<T>,
      &winograd_gemm<T>,
      &winograd_gemm5<T>,
      &winograd_output<T>,
      &winograd_wgrad_go<T>,
      &winograd_wgrad_gemm<T>,
      &winograd_wgrad_output<T>,
  };
  return &table;
}

}  // namespace FASTCONV_CPU_NS

}  // namespace conv
}  // namespace fastconv

#define FASTCONV_CONV_CAT_(a, b, c) a##b##c
#define FASTCONV_CONV_CAT(a, b, c) FASTCONV_CONV_CAT_(a, b, c)

namespace fastconv {
namespace conv {
const ConvKernels<float>* FASTCONV_CONV_CAT(conv_kernels_, FASTCONV_ISA_NAME, _float)() {
  return FASTCONV_CPU_NS::make_table<float>();
}
const ConvKernels<double>* FASTCONV_CONV_CAT(conv_kernels_, FASTCONV_ISA_NAME, _double)() {
  return FASTCONV_CPU_NS::make_table<double>();
}
}  // namespace conv
}  // namespace fastconv
