// ATen glue for the CPU conv2d kernels: argument checks, algorithm choice, layout buffers,
// work split and the CPU registrations.
//
// Algorithm heuristic (forced with FASTCONV_CONV_ALGO / fastconv.set_conv_algo):
//   gemm1x1  1x1, stride 1, no padding, input and output both NCHW or both channels_last
//            (contiguous): one GEMM over the pixels of all images, reading the caller's
//            tensor as it is (no conversion); pixels in the SIMD lanes for NCHW, output
//            channels for channels_last. A strided 1x1 layer without padding runs it on the
//            pixels it reads, gathered into a dense input first (NCHW always; channels_last
//            from 14x14 output pixels an image, below which direct was the faster).
//   winograd F(2x2, 3x3) for 3x3 stride-1 single-group layers with at least 16 input and
//            output channels and at least 32 2x2 output tiles over the batch (2.25x fewer
//            multiplies; error at the direct path's level); 5x5 layers likewise, as four
//            3x3 pieces through the same transforms (1.56x fewer multiplies). The forward
//            keeps direct for a few shapes where it measured faster (winograd_forward_m).
//            winograd4 = F(4x4, 3x3) only when forced (larger float32 error), 3x3 only.
//            Their weight gradient runs F(2x2, 3x3)'s dual tile, under auto where the
//            batch has enough tiles for its sum buffer (use_wgrad_winograd).
//   nchw     few input channels (<= 4 per group), stride 1 along W, NCHW in and out: direct
//            convolution with output pixels in the lanes (LeNet's first layer).
//   direct   everything else: NHWC-orientation direct convolution reading the input as
//            zero-padded NHWC rows, packed a band at a time (read in place when the input is
//            channels_last and unpadded).
// A forced algorithm that cannot run a shape (gemm1x1 on a 3x3, winograd on a 7x7) falls
// back to direct, and so does Winograd for an input holding Inf or NaN (torch's propagation).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "../../common/dispatch.h"
#include "../../common/streaming.h"
#include "conv_algo.h"
#include "conv_checks.h"
#include "conv_kernels.h"
#include "conv_winograd.h"

namespace fastconv {
namespace conv {

namespace {

std::atomic<int> g_algo{-1};

bool parse_algo(const std::string& s, ConvAlgo* out) {
  if (s == "auto") *out = ConvAlgo::Auto;
  else if (s == "direct") *out = ConvAlgo::Direct;
  else if (s == "gemm1x1") *out = ConvAlgo::Gemm1x1;
  else if (s == "winograd") *out = ConvAlgo::Winograd;
  else if (s == "winograd4") *out = ConvAlgo::Winograd4;
  else if (s == "nchw") *out = ConvAlgo::NchwDirect;
  else return false;
  return true;
}

}  // namespace

ConvAlgo forced_conv_algo() {
  int v = g_algo.load(std::memory_order_relaxed);
  if (v < 0) {
    ConvAlgo a = ConvAlgo::Auto;
    const char* env = std::getenv("FASTCONV_CONV_ALGO");
    if (env && *env) parse_algo(env, &a);  // validated loudly on import (fastconv/__init__.py)
    v = static_cast<int>(a);
    g_algo.store(v, std::memory_order_relaxed);
  }
  return static_cast<ConvAlgo>(v);
}

void set_conv_algo(const std::string& name) {
  ConvAlgo a;
  if (!parse_algo(name, &a))
    throw std::invalid_argument("conv algorithm must be one of 'auto', 'direct', 'gemm1x1', 'winograd', 'winograd4', 'nchw'; got '" +
                                name + "'");
  g_algo.store(static_cast<int>(a), std::memory_order_relaxed);
}

std::string conv_algo_name() {
  switch (forced_conv_algo()) {
    case ConvAlgo::Direct: return "direct";
    case ConvAlgo::Gemm1x1: return "gemm1x1";
    case ConvAlgo::Winograd: return "winograd";
    case ConvAlgo::Winograd4: return "winograd4";
    case ConvAlgo::NchwDirect: return "nchw";
    default: return "auto";
  }
}

namespace {
std::atomic<int64_t> g_band_bytes{int64_t(512) << 10};
}  // namespace

int64_t set_conv_band_bytes(int64_t bytes) {
  if (bytes < 1) throw std::invalid_argument("conv band size must be at least 1 byte; got " + std::to_string(bytes));
  return g_band_bytes.exchange(bytes, std::memory_order_relaxed);
}

namespace {

template <class T>
const ConvKernels<T>* select_kernels();
template <>
const ConvKernels<float>* select_kernels<float>() {
  return pick_kernels(conv_kernels_avx512_float(), conv_kernels_avx2_float(), conv_kernels_default_float());
}
template <>
const ConvKernels<double>* select_kernels<double>() {
  return pick_kernels(conv_kernels_avx512_double(), conv_kernels_avx2_double(), conv_kernels_default_double());
}

Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A 1x1 kernel over an unpadded input (any stride).
bool unpadded_1x1(const ConvParams& p) {
  return p.KH == 1 && p.KW == 1 && p.pt == 0 && p.pb == 0 && p.pl == 0 && p.pr == 0;
}

bool is_plain_1x1(const ConvParams& p) { return unpadded_1x1(p) && p.sh == 1 && p.sw == 1; }

bool use_gemm1x1(const ConvParams& p) {
  const ConvAlgo a = forced_conv_algo();
  return is_plain_1x1(p) && (a == ConvAlgo::Auto || a == ConvAlgo::Gemm1x1);
}

// Tasks of the NHWC forward: aim for ~256 output pixels per task.
template <class T>
FwdPlan nhwc_plan(const ConvKernels<T>* kt, const ConvParams& p) {
  FwdPlan plan;
  plan.blocks = ceil_div(p.ocg(), kt->nr);
  plan.rows_per_task = std::clamp<int64_t>(ceil_div(256, p.OW), 1, std::max<int64_t>(p.OH, 1));
  plan.row_chunks = ceil_div(p.OH, plan.rows_per_task);
  plan.blocks_inner = p.OC * p.icg() * p.KH * p.KW * int64_t(sizeof(T)) <= (256 << 10);
  return plan;
}

// Input channels per reduction block of the 1x1 GEMMs: the whole reduction up to 512; beyond,
// blocks of 256, so that a chunk's packed input keeps enough pixels to reuse each block of
// weights (at 2048 -> 512, whole-reduction chunks held 12 pixels and streamed all 4 MB of
// weights from L3 for every 12).
int64_t gemm1x1_kc(const ConvParams& p) { return p.icg() <= 512 ? std::max<int64_t>(p.icg(), 1) : 256; }

// The packed input of a 1x1 GEMM chunk (kc x chunk pixels) is kept to ~128 KB next to a block
// of weights (512 KB and 64 KB chunks were slower: 256 -> 64 at 56x56 NCHW, 2 threads, 1.48x
// torch -> 1.22x at 512 KB). Every chunk reads the whole weight again, though, and a weight of
// 1 MB or more comes from L3 each time: those layers (ResNet-50's layer3 and layer4 1x1s) take
// 512 KB chunks, four times the pixels per pass over the weight (batch 8, torch / ours, NCHW
// 1 / 2 threads: 2048 -> 512 at 7x7 1.09x / 0.90x -> 1.19x / 0.94x, 1024 -> 256 at 14x14
// 0.97x / 1.01x -> 1.01x / 1.05x; channels_last 2048 -> 512, 2 threads, 0.93x -> 1.10x). With
// 256 KB weights (512 -> 128 at 28x28) 512 KB chunks were the same or up to 5% slower.
// Returns the most tiles of `tile` pixels such a chunk holds (at least 1, at most all).
int64_t gemm1x1_chunk_tiles(const ConvParams& p, int64_t elem_bytes, int64_t tile) {
  const int64_t bytes =
      p.OC * p.icg() * elem_bytes >= (int64_t(1) << 20) ? int64_t(512) << 10 : int64_t(128) << 10;
  const int64_t tiles = ceil_div(std::max<int64_t>(1, p.N * p.H * p.W), tile);
  return std::clamp<int64_t>(bytes / (elem_bytes * gemm1x1_kc(p) * tile), 1, tiles);
}

// Pixels per task of the 1x1 GEMMs, a multiple of `tile`: at most what keeps the chunk's
// packed input within the size above (gemm1x1_chunk_tiles); below that, the
// size whose tasks split most evenly over the threads (at::parallel_for hands each thread a
// run of ceil(tasks / threads) tasks): ResNet-50's layer4 at batch 8 has 25 tiles, and
// 8-tile chunks gave one thread 16 of them, 7-tile chunks give it 14. Every output's sum runs
// over the input channels in the same order whatever the chunk, so the results depend on
// neither the chunk nor the thread count.
int64_t gemm1x1_chunk(const ConvParams& p, int64_t elem_bytes, int64_t tile) {
  const int64_t tiles = ceil_div(std::max<int64_t>(1, p.N * p.H * p.W), tile);
  const int64_t most = gemm1x1_chunk_tiles(p, elem_bytes, tile);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t best = most, best_load = -1;
  for (int64_t c = most; c >= 1; --c) {
    const int64_t load = ceil_div(p.groups * ceil_div(tiles, c), threads) * c;
    if (best_load < 0 || load < best_load) {
      best = c;
      best_load = load;
    }
  }
  return best * tile;
}

// Output-channel parts of the 1x1 GEMMs: where the pixel chunks cannot be split evenly over
// the threads (the busiest thread more than 5% above an even share of the pixels; ResNet-50's
// layer4 at batch 8 is 13 tiles of 32 pixels, 7 + 6 on two threads, and at batch 1 two tiles
// of 32 and 17 pixels), each thread takes a share of the output-channel blocks for all the
// pixels instead, in the largest chunks (chunk is updated).
int64_t gemm1x1_parts(const ConvParams& p, int64_t elem_bytes, int64_t tile, int64_t blocks, int64_t& chunk) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t total = std::max<int64_t>(1, p.N * p.H * p.W);
  const int64_t busiest = std::min(ceil_div(p.groups * ceil_div(total, chunk), threads) * chunk, p.groups * total);
  if (threads == 1 || blocks < 2 * threads || busiest * threads * 100 <= p.groups * total * 105) return 1;
  chunk = gemm1x1_chunk_tiles(p, elem_bytes, tile) * tile;
  return threads;
}

// Whether the NCHW 1x1 GEMM takes the table's narrow tile (AVX-512 float: 8 output channels x
// 48 pixels) instead of 14 x 32: where 14-row blocks leave a tail of 6 rows or fewer that 8-row
// blocks do not (128 = 9 x 14 + 2 ran its last block at a fraction of the speed), on planes of
// at least 28 x 28 (a 48-pixel tile wastes more of a small plane). 1 thread, old / new time
// (alternated processes): 256 -> 128 at 56x56, batch 8 1.18x, batch 1 1.09x; 512 -> 128 at
// 28x28 1.13x / 1.07x; 64 -> 256 at 56x56 1.09x (2 threads 1.04-1.10x). Left with 14 x 32:
// 32 output channels (0.97x), 1024 -> 128 at 14x14 (0.96x) and 64 output channels (4 x 14 +
// 8; 192 -> 64 at 28x28 0.92x, 64 -> 64 at 56x56 0.96x, 256 -> 64 at 56x56 batch 1 1.02x)
// unless the input is past the caches (16 MB or more), where each tile's first block packs
// its pixels from DRAM in runs of 48 instead of 32 (256 -> 64 at 56x56, batch 8, 9 runs:
// 1 thread 1.13x, 2 threads 1.01x). The sums run over the input channels in the same order
// either way.
template <class T>
bool use_narrow_1x1(const ConvKernels<T>* kt, const ConvParams& p) {
  const int64_t ocg = p.ocg(), tail = ocg % kt->mr_nchw;
  const bool far = streams_past_caches(p.N * p.C * p.H * p.W * int64_t(sizeof(T)));
  return kt->forward_1x1_nchw_narrow && ocg >= 64 && ocg % kt->mr_narrow == 0 && p.H * p.W >= 784 &&
         ((tail > 0 && tail <= 6) || (far && ocg == 64));
}

// Whether a (N, C, H, W) tensor with strides s holds pixel q = (n * H + h) * W + w at q * C
// (channels_last without gaps; strides of size-1 dimensions do not matter).
bool flat_channels_last(Strides4 s, int64_t N, int64_t C, int64_t H, int64_t W) {
  return (C == 1 || s.c == 1) && (W == 1 || s.w == C) && (H == 1 || s.h == W * C) && (N == 1 || s.n == H * W * C);
}

// Peak memory: a convolution used to read a zero-padded NHWC copy of its whole input and (NCHW
// output) write a channels-last copy of its whole output, each as large as the tensor itself,
// where torch's oneDNN kernels pad implicitly and keep a few MB of scratchpad. Both copies now
// exist one band of rows at a time, about band_bytes() each (512 KB; set_conv_band_bytes lets
// the tests cut every layer into many bands); neighbouring input bands re-pack the few halo
// rows they share. On the benchmark suite 512 KB bands ran as fast as 2 MB ones or faster
// (up to 1.2x on 3x3 layers: a band is still in L2 when the kernel reads it).
int64_t band_bytes() { return g_band_bytes.load(std::memory_order_relaxed); }

// The zero-padded NHWC input, materialised a band of rows at a time; row r = n * hp + h.
// An unpadded channels_last input is read in place.
template <class T>
class PaddedBands {
 public:
  PaddedBands(const ConvKernels<T>* kt, const at::Tensor& x, int64_t pt, int64_t pb, int64_t pl, int64_t pr)
      : kt_(kt), x_(x), pt_(pt), pl_(pl) {
    view_.c = x.size(1);
    view_.hp = x.size(2) + pt + pb;
    view_.wp = x.size(3) + pl + pr;
    total_ = x.size(0) * view_.hp;
    band_rows_ = std::max<int64_t>(1, band_bytes() / std::max<int64_t>(1, view_.wp * view_.c * int64_t(sizeof(T))));
    if (pt == 0 && pb == 0 && pl == 0 && pr == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      view_.data = x.const_data_ptr<T>();
      hi_ = total_;
      in_place_ = true;
    }
  }
  bool in_place() const { return in_place_; }
  int64_t hp() const { return view_.hp; }

  // The input with the padded rows that output rows [o_begin, o_end) (r = n * OH + oh) of
  // the convolution p read.
  const PaddedNhwc<T>& output_rows(const ConvParams& p, int64_t o_begin, int64_t o_end) {
    const int64_t n0 = o_begin / p.OH, oh0 = o_begin % p.OH, n1 = (o_end - 1) / p.OH, oh1 = (o_end - 1) % p.OH;
    return rows(n0 * view_.hp + oh0 * p.sh, n1 * view_.hp + oh1 * p.sh + (p.KH - 1) * p.dh + 1);
  }
  int64_t band_rows() const { return band_rows_; }

  // The input with at least the padded rows [lo, hi) readable (indexed from row 0).
  const PaddedNhwc<T>& rows(int64_t lo, int64_t hi) {
    if (lo >= lo_ && hi <= hi_) return view_;
    const int64_t end = std::min(total_, lo + std::max(hi - lo, band_rows_));
    const int64_t row = view_.wp * view_.c;
    if (storage_.numel() < (end - lo) * row) storage_ = at::empty({(end - lo) * row}, x_.options());
    T* dst = storage_.mutable_data_ptr<T>();
    const T* src = x_.const_data_ptr<T>();
    const Strides4 s = strides_of(x_);
    const int64_t C = view_.c, H = x_.size(2), W = x_.size(3), hp = view_.hp, wp = view_.wp;
    at::parallel_for(lo, end, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, row)), [&](int64_t b, int64_t e) {
      kt_->pack_nhwc(src, s, C, H, W, pt_, pl_, hp, wp, dst + (b - lo) * row, b, e);
    });
    view_.data = rebased<const T>(dst, lo * row);
    lo_ = lo;
    hi_ = end;
    return view_;
  }

 private:
  const ConvKernels<T>* kt_;
  const at::Tensor& x_;
  int64_t pt_, pl_;
  PaddedNhwc<T> view_;
  int64_t total_ = 0, band_rows_ = 1, lo_ = 0, hi_ = 0;
  bool in_place_ = false;
  at::Tensor storage_;
};

// Where a forward kernel writes: y itself, or, for a channel-major (NCHW) y, a channels-last
// band of output rows (r = n * OH + oh) transposed into y once the band is done. Scattering
// single floats from the output tiles into NCHW cost up to 25% (AlexNet conv2, K = 1600: 0.88x
// torch against 1.13x channels_last); the transpose moves 8 x 8 blocks and applies the
// residual and ReLU there.
template <class T>
class OutputBands {
 public:
  // tile_store: the kernel can store its NHWC tiles into a channel-major y itself
  // (ConvKernels::nchw_tile_store), given unit pixel strides.
  OutputBands(const ConvKernels<T>* kt, const ConvParams& p, at::Tensor& y, const Epilogue<T>& ep,
              bool tile_store = false)
      : kt_(kt), p_(p), y_(y), ep_(ep), inner_(ep) {
    banded_ = y.stride(1) != 1 && p.OC > 1 &&
              !(tile_store && y.stride(3) == 1 && (!ep.residual || ep.rs.w == 1));
    if (banded_) {
      inner_.residual = nullptr;
      inner_.relu = false;
      strides_ = {p.OH * p.OW * p.OC, 1, p.OW * p.OC, p.OC};
    } else {
      strides_ = strides_of(y);
    }
  }
  bool banded() const { return banded_; }
  int64_t row_bytes() const { return p_.OW * p_.OC * int64_t(sizeof(T)); }
  const Epilogue<T>& epilogue() const { return inner_; }
  Strides4 strides() const { return strides_; }

  // The base pointer for output rows [lo, hi).
  T* begin(int64_t lo, int64_t hi) {
    if (!banded_) return y_.mutable_data_ptr<T>();
    const int64_t row = p_.OW * p_.OC;
    if (storage_.numel() < (hi - lo) * row) storage_ = at::empty({(hi - lo) * row}, y_.options());
    base_ = rebased(storage_.mutable_data_ptr<T>(), lo * row);
    return base_;
  }
  void finish(int64_t lo, int64_t hi) {
    if (!banded_) return;
    T* ys = y_.mutable_data_ptr<T>();
    const Strides4 yst = strides_of(y_);
    const T* src = base_;
    // An even share of the rows per thread: the NCHW unpacking writes each channel plane's
    // run of rows in one go.
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    at::parallel_for(lo, hi, std::max<int64_t>(ceil_div(hi - lo, threads), 4096 / std::max<int64_t>(1, p_.OW * p_.OC)),
                     [&](int64_t b, int64_t e) {
                       kt_->unpack_nhwc(src, p_.OH, p_.OW, p_.OC, 0, 0, p_.OH, p_.OW, ys, yst, ep_.residual,
                                        ep_.rs, ep_.relu, b, e);
                     });
  }

 private:
  const ConvKernels<T>* kt_;
  const ConvParams& p_;
  at::Tensor& y_;
  const Epilogue<T>& ep_;
  Epilogue<T> inner_;
  bool banded_ = false;
  Strides4 strides_;
  at::Tensor storage_;
  T* base_ = nullptr;
};

// dst[n] = the transpose of src[n], a (rows x cols) matrix, for n < N (dst[n] is cols x rows),
// a few matrices per task.
template <class T>
void transpose_each(const T* src, T* dst, int64_t N, int64_t rows, int64_t cols) {
  const auto* kt = select_kernels<T>();
  const int64_t size = rows * cols, grain = std::max<int64_t>(1, (64 << 10) / std::max<int64_t>(1, size));
  at::parallel_for(0, N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) kt->transpose(src + n * size, cols, dst + n * size, rows, rows, cols);
  });
}

// A 4-D tensor as a contiguous NCHW one (the NCHW-direct paths' input and output gradient).
// A channels_last one is converted an image at a time, its (pixel, channel) matrix transposed
// in registers: torch's generic copy took 5.8 ms for a 512 x 512 x 3 x 3 tensor. (Weights are
// no longer converted: pack_weight and the Winograd transform read channels_last in place.)
at::Tensor nchw_contiguous(const at::Tensor& t) {
  if (t.is_contiguous() || t.dim() != 4 || !t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t.contiguous();
  at::Tensor out = at::empty(t.sizes(), t.options());
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "nchw_contiguous", [&] {
    transpose_each<scalar_t>(t.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), t.size(0),
                             t.size(2) * t.size(3), t.size(1));
  });
  return out;
}

// nchw_contiguous(x) zero-padded by (pt, pb, pl, pr), contiguous; a negative pad crops (an
// input gradient's transposed padding is negative where the padding exceeds the kernel's
// reach). Written plane by plane in one pass: at::constant_pad_nd (empty + fill + narrow +
// copy) cost 17 us on LeNet's 28x28 single-channel input, a third of that layer's batch-1 time.
at::Tensor padded_nchw(const at::Tensor& x, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const at::Tensor xc = nchw_contiguous(x);
  const int64_t H = xc.size(2), W = xc.size(3), hp = H + pt + pb, wp = W + pl + pr;
  TORCH_INTERNAL_ASSERT(hp >= 0 && wp >= 0);
  at::Tensor out = at::empty({xc.size(0), xc.size(1), hp, wp}, xc.options());
  const int64_t planes = xc.size(0) * xc.size(1);
  // Output columns [c0, c1) come from input columns from c0 - pl; the rest are zeros.
  const int64_t c0 = std::clamp<int64_t>(pl, 0, wp), c1 = std::clamp<int64_t>(pl + W, c0, wp);
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "padded_nchw", [&] {
    const scalar_t* src = xc.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (32 << 10) / std::max<int64_t>(1, hp * wp));
    at::parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        for (int64_t r = 0; r < hp; ++r) {
          scalar_t* row = dst + (q * hp + r) * wp;
          const int64_t h = r - pt;
          if (h < 0 || h >= H) {
            std::fill(row, row + wp, scalar_t(0));
            continue;
          }
          const scalar_t* s = src + (q * H + h) * W + (c0 - pl);
          std::fill(row, row + c0, scalar_t(0));
          std::copy(s, s + (c1 - c0), row + c0);
          std::fill(row + c1, row + wp, scalar_t(0));
        }
      }
    });
  });
  return out;
}

// A conv weight as the kernels read it: OIHW contiguous, or a channels_last (O, KH, KW, I)
// one as it is (packed_weight reads both; the Winograd transform converts it).
at::Tensor oihw_or_hwi(const at::Tensor& w) {
  return w.is_contiguous() || w.is_contiguous(at::MemoryFormat::ChannelsLast) ? w : w.contiguous();
}

// dst (channels_last) = src (contiguous NCHW, same sizes).
template <class T>
void copy_nchw_to_channels_last(const at::Tensor& src, at::Tensor& dst) {
  transpose_each<T>(src.const_data_ptr<T>(), dst.mutable_data_ptr<T>(), src.size(0), src.size(1),
                    src.size(2) * src.size(3));
}

// The input pixels a strided 1x1 layer without padding reads, (N, C, OH, OW), dense: in
// channels_last when `channels_last`, else NCHW.
template <class T>
at::Tensor strided_1x1_input(const at::Tensor& x, const ConvParams& p, bool channels_last) {
  at::Tensor out = at::empty({p.N, p.C, p.OH, p.OW}, x.options().memory_format(
                                                         channels_last ? at::MemoryFormat::ChannelsLast
                                                                       : at::MemoryFormat::Contiguous));
  const Strides4 s = strides_of(x), d = strides_of(out);
  const T* src = x.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  at::parallel_for(0, p.N * p.OH, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / p.OH, oh = r % p.OH;
      const T* sr = src + n * s.n + oh * p.sh * s.h;
      T* dr = dst + n * d.n + oh * d.h;
      if (channels_last && s.c == 1) {
        for (int64_t ow = 0; ow < p.OW; ++ow) std::memcpy(dr + ow * p.C, sr + ow * p.sw * s.w, sizeof(T) * p.C);
      } else {
        for (int64_t c = 0; c < p.C; ++c)
          for (int64_t ow = 0; ow < p.OW; ++ow) dr[c * d.c + ow * d.w] = sr[c * s.c + ow * p.sw * s.w];
      }
    }
  });
  return out;
}

template <class T>
at::Tensor packed_weight(const ConvKernels<T>* kt, const at::Tensor& w, const ConvParams& p, bool swap,
                         bool transposed, int block) {
  const int64_t blocked = swap ? p.icg() : p.ocg(), kdim = swap ? p.ocg() : p.icg();
  at::Tensor out = at::empty({p.groups * ceil_div(blocked, block) * block * p.KH * p.KW * kdim}, w.options());
  // A channels_last weight is packed from where it lies (its conversion to OIHW took 11% of
  // ResNet-18's batch-1 channels_last inference).
  const bool hwi = !w.is_contiguous();
  TORCH_INTERNAL_ASSERT(!hwi || w.is_contiguous(at::MemoryFormat::ChannelsLast));
  const T* ws = w.const_data_ptr<T>();
  T* os = out.mutable_data_ptr<T>();
  // Items of a few KB each: enough work per thread to pay for the fork (a 4 MB weight took
  // 0.7 ms on one thread, ~10% of ResNet-50's layer4 1x1 at two threads).
  const int64_t items = p.groups * ceil_div(blocked, block);
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / std::max<int64_t>(1, block * p.KH * p.KW * kdim));
  at::parallel_for(0, items, grain, [&](int64_t b, int64_t e) { kt->pack_weight(ws, p, swap, transposed, hwi, block, os, b, e); });
  return out;
}

// Whether every element of x is finite (the Winograd weight gradient's check, below). x * 0 is
// 0 for a finite x and NaN otherwise; sixteen independent accumulators let the compiler
// vectorise the scan, which runs at memory speed.
template <class T>
bool all_finite(const at::Tensor& x) {
  if (!x.is_non_overlapping_and_dense()) return at::isfinite(x).all().item<bool>();
  const T* data = x.const_data_ptr<T>();
  return at::parallel_reduce(
      int64_t(0), x.numel(), int64_t(1) << 16, true,
      [&](int64_t b, int64_t e, bool ok) {
        T acc[16] = {};
        int64_t i = b;
        for (; i + 16 <= e; i += 16)
          for (int j = 0; j < 16; ++j) acc[j] += data[i + j] * T(0);
        for (; i < e; ++i) acc[0] += data[i] * T(0);
        for (int j = 0; j < 16; ++j) ok = ok && acc[j] == T(0);
        return ok;
      },
      [](bool a, bool b) { return a && b; });
}

// The F(2x2, 3x3) output tiles of the whole batch.
int64_t winograd_2x2_tiles(const ConvParams& p) { return p.N * winograd_tiles(p.OH, 2) * winograd_tiles(p.OW, 2); }

// 0: no Winograd for this layer; else the tile size m of F(m x m, 3 x 3) (a 5x5 layer runs
// as four 3x3 pieces, m = 2 only).
int winograd_m(const ConvParams& p) {
  if (!winograd_applies(p.KH, p.KW, p.sh, p.sw, p.dh, p.dw, p.groups)) return 0;
  switch (forced_conv_algo()) {
    case ConvAlgo::Winograd: return 2;
    case ConvAlgo::Winograd4: return p.KH == 3 ? 4 : 0;
    case ConvAlgo::Auto:
      // The weight transform (16 values per filter tap pair) is paid once per call, so a
      // layer needs enough tiles to spread it over. Since that transform runs as vectors over
      // the output channels, Winograd beat direct from 32 tiles on up (batch 1 at 14x14:
      // 1.3-1.4x on one thread, both SIMD paths); at 16 (batch 1 at 7x7, ResNet's layer4)
      // the two were within 10% either way, so direct keeps those.
      return p.C >= 16 && p.OC >= 16 && winograd_2x2_tiles(p) >= 32 ? 2 : 0;
    default: return 0;
  }
}

// The forward's (and a stride-1 input gradient's) choice: winograd_m, except under auto where
// the direct kernel measured faster. Rows of mr / 2 pixels (7x7 outputs on AVX-512) fill its
// two-row tiles exactly, while 2x2 tiles cover 64 outputs for 49; batch 8, torch / ours,
// NCHW 1 / 2 threads, Winograd -> direct: 512 -> 512 3x3 0.97 / 0.79 -> 0.93 / 0.94, 192 -> 384
// 3x3 0.95 / 0.93 -> 0.98 / 0.99, 128 -> 32 3x3 0.80 / 0.80 -> 1.09 / 1.12, 48 -> 128 5x5
// 0.61 / 0.61 -> 0.97 / 0.96 (channels_last alike). And a 5x5 layer with fewer than 64 input
// channels: its four 3x3 pieces each transform the input for few multiply-adds per value
// (16 -> 32 at 28x28 1.05 / 0.92 -> 1.09 / 1.13, 24 -> 64 at 14x14 1.23 / 1.09 -> 1.33 / 1.31;
// AlexNet's 64 -> 192 at batch 8 keeps Winograd, 1.06 / 1.07 against 1.02 / 0.99 direct).
// And, with AVX-512's direct tile (14 pixels x 32 channels), a 3x3 layer of fewer than 64
// tiles (batch 1 at 13x13 or 14x14: 49) or a 5x5 one of fewer than 256 (AlexNet's 64 -> 192
// at 27x27 has 196 an image; batch 1 0.92 / 0.95 -> 1.06 / 1.08, batch 2 even, batch 4
// Winograd 3-10% faster). Batch 1, torch / ours, 1 / 2 threads, Winograd -> direct: AlexNet's
// 384 -> 256 at 13x13 0.91 / 0.93 -> 1.04 / 1.17, 192 -> 384 0.98 / 0.89 -> 1.06 / 1.07;
// GoogLeNet's 96 -> 208 at 14x14 1.02 / 1.05 -> 1.15 / 1.11; ResNet's 256 -> 256 1.11 / 0.99
// -> 1.06 / 1.05, VGG's 512 -> 512 1.11 / 0.95 -> 1.08 / 1.07 (one 49-tile chunk leaves the
// second thread little to share). At 98 3x3 tiles (batch 2) Winograd was 5-27% faster on both,
// and AVX2's 6 x 16 direct tile lost at 49 tiles too (256 -> 256 at 14x14, 1 thread: 2.76
// against 1.95 ms), so it keeps the 32-tile rule of winograd_m.
int winograd_forward_m(const ConvParams& p, int mr) {
  const int m = winograd_m(p);
  if (m == 0 || forced_conv_algo() != ConvAlgo::Auto) return m;
  if (mr % 2 == 0 && p.OW == mr / 2) return 0;
  if (p.KH == 5 && p.icg() < 64) return 0;
  if (mr >= 14 && winograd_2x2_tiles(p) < (p.KH == 5 ? 256 : 64)) return 0;
  return m;
}

// Output channels [oc0, oc0 + p.OC) of a Winograd layer with oc_total of them (ep and y
// already offset to the slice; w is the whole weight, transposed as in pack_weight). False,
// with y partly written, when an output came out Inf or NaN (see winograd_forward).
template <class T>
bool winograd_slice(const ConvParams& p, int m, PaddedBands<T>& xb, const T* ws, bool transposed, bool hwi, int64_t oc0,
                    int64_t oc_total, const Epilogue<T>& ep, at::Tensor& y) {
  const auto* kt = select_kernels<T>();
  const int64_t alpha = m + 2, a2 = alpha * alpha;
  const int64_t th = winograd_tiles(p.OH, m), tw = winograd_tiles(p.OW, m);
  const int64_t total = p.N * th * tw;
  const int64_t ocblocks = ceil_div(p.OC, kt->nr), ocp = ocblocks * kt->nr;
  const int64_t pieces = winograd_pieces(p.KH);
  const bool five = pieces > 1;
  OutputBands<T> out(kt, p, y, ep);
  at::Tensor u = at::empty({pieces * a2 * ocblocks * p.C * kt->nr}, y.options());
  T* us = u.mutable_data_ptr<T>();
  at::parallel_for(0, ocblocks, 1, [&](int64_t b, int64_t e) {
    kt->winograd_weight(ws, p, m, transposed, hwi, oc0, oc_total, us, b, e);
  });
  // Chunks of tiles whose transformed inputs (a2 x count x C) and products (a2 x count x OCp)
  // take about a band each: they stay in cache from the input transform through the GEMMs
  // to the output transform. At least 64 tiles: every chunk streams all of u through the
  // GEMMs (at 512 channels, 16-tile chunks ran VGG conv5 1.4x slower). A banded output takes
  // whole rows of tiles, so every band it hands on holds finished output rows.
  // Several threads: each chunk is split among them (three fork / joins), with 2x threads as
  // many tiles per chunk (same process, 2 threads: 512 -> 512 at 14x14 1.17 -> 1.25
  // torch/ours; on one thread the larger chunks were up to 15% slower for the few-channel
  // layers, so one thread keeps one band). But where that takes more than one chunk and u is
  // small enough to stay in every core's L2 next to a chunk (own_chunks), each thread takes
  // whole one-band chunks of its own instead, input transform to output: a step of 4 chunks
  // per thread costs one fork / join (plus the band's pack and unpack). 2 threads, torch/ours
  // NCHW / channels_last: ResNet layer1 3x3 0.95 / 0.94 -> 1.22 / 1.30. With all the tiles in
  // one shared chunk, u is read once; own chunks read it once per chunk and ran batch-1
  // 128 -> 128 at 28x28 (1 MB of u) 1.2x slower.
  const int64_t threads = at::get_num_threads();
  const auto chunk_of = [&](int64_t mult) {
    int64_t c = mult * band_bytes() / (a2 * std::max<int64_t>({p.C, ocp, 1}) * int64_t(sizeof(T)));
    c = std::clamp<int64_t>(std::max<int64_t>(c, 64) / kt->mr * kt->mr, kt->mr, std::max<int64_t>(total, 1));
    return out.banded() || five ? std::min(total, std::max<int64_t>(1, c / tw) * tw) : c;
  };
  int64_t chunk = chunk_of(threads > 1 ? std::min<int64_t>(2 * threads, 8) : 1);
  const bool own_chunks =
      threads > 1 && chunk < total && pieces * a2 * ocp * p.C * int64_t(sizeof(T)) <= (int64_t(1) << 20);
  const int64_t slots = own_chunks ? threads : 1;
  int64_t step = chunk;
  if (own_chunks) {
    chunk = chunk_of(1);
    step = 4 * threads * chunk;
  }
  // A 5x5 layer's input tiles lie on the extended grid (ext: a tile row and column more per
  // image). A chunk of whole tile rows reads its own rows' tiles and the row after the last
  // row of each image it touches.
  ConvParams ext = p;
  ext.OH = (th + 1) * m;
  ext.OW = (tw + 1) * m;
  const int64_t vchunk = five ? (ceil_div(chunk, tw) + ceil_div(ceil_div(chunk, tw), th) + 1) * (tw + 1) : chunk;
  at::Tensor v = at::empty({slots * a2 * vchunk * p.C}, y.options());
  at::Tensor mm = at::empty({slots * a2 * chunk * ocp}, y.options());
  T* vs = v.mutable_data_ptr<T>();
  T* ms = mm.mutable_data_ptr<T>();
  const Strides4 yst = out.strides();
  std::atomic<bool> finite{true};
  // Output tiles [f, f + n) from input transform to output transform, into scratch vb and mb:
  // across the threads (three fork / joins) or on the calling one.
  const auto run = [&](const PaddedNhwc<T>& xp, T* ys, int64_t f, int64_t n, T* vb, T* mb, bool parallel) {
    const auto stage = [&](int64_t items, int64_t grain, const auto& fn) {
      if (parallel) at::parallel_for(0, items, grain, fn);
      else fn(0, items);
    };
    int64_t vfirst = f, vcount = n;
    if (five) {
      const int64_t e_lo = winograd_ext_row(f / tw, th), e_hi = winograd_ext_row((f + n) / tw - 1, th) + 2;
      vfirst = e_lo * (tw + 1);
      vcount = (e_hi - e_lo) * (tw + 1);
    }
    stage(vcount, 8, [&](int64_t b, int64_t e) { kt->winograd_input(xp, five ? ext : p, m, vfirst, vcount, vb, b, e); });
    stage(a2 * ocblocks, 1, [&](int64_t b, int64_t e) {
      if (five) kt->winograd_gemm5(vb, vcount, us, p, f, n, mb, b, e);
      else kt->winograd_gemm(vb, us, p, m, n, mb, b, e);
    });
    stage(n, 8, [&](int64_t b, int64_t e) {
      if (!kt->winograd_output(mb, p, m, f, n, out.epilogue(), ys, yst, b, e))
        finite.store(false, std::memory_order_relaxed);
    });
  };
  for (int64_t first = 0; first < total && finite.load(std::memory_order_relaxed); first += step) {
    const int64_t count = std::min(step, total - first);
    const int64_t last = first + count - 1;
    const int64_t n0 = first / (th * tw), t0 = first / tw % th, n1 = last / (th * tw), t1 = last / tw % th;
    const PaddedNhwc<T>& xp =
        xb.rows(n0 * xb.hp() + t0 * m, n1 * xb.hp() + (t1 + (five ? 1 : 0)) * m + alpha);
    const int64_t o_lo = n0 * p.OH + t0 * m, o_hi = n1 * p.OH + std::min(p.OH, t1 * m + m);
    T* ys = out.begin(o_lo, o_hi);
    if (own_chunks) {
      // One task per thread slot (its scratch), each an equal share of the step's tiles (whole
      // tile rows for a banded output or a 5x5 layer) in chunks.
      const int64_t unit = out.banded() || five ? tw : 1, units = ceil_div(count, unit);
      at::parallel_for(0, slots, 1, [&](int64_t b, int64_t e) {
        for (int64_t slot = b; slot < e; ++slot) {
          const int64_t lo = first + slot * units / slots * unit;
          const int64_t hi = std::min(first + count, first + (slot + 1) * units / slots * unit);
          for (int64_t f = lo; f < hi; f += chunk)
            run(xp, ys, f, std::min(chunk, hi - f), vs + slot * a2 * vchunk * p.C, ms + slot * a2 * chunk * ocp, false);
        }
      });
    } else {
      run(xp, ys, first, count, vs, ms, true);
    }
    out.finish(o_lo, o_hi);
  }
  return finite.load(std::memory_order_relaxed);
}

// Winograd F(m x m, 3 x 3) (a 5x5 layer: four 3x3 pieces). The transformed weights (a2 x C x OC: 16/9 of the layer's own for
// m = 2, 16.8 MB at 512 -> 512) are made a slice of output channels at a time, each slice
// at most ~4 MB (eight bands); every slice transforms the input again, which costs adds only
// (about 2 a2 C per tile, against a2 C OC multiply-adds in the products).
// Winograd's transforms mix a whole tile, so an Inf or NaN in the input (or one that overflows
// in a transform) would turn its tile's neighbouring outputs NaN (Inf - Inf), where a direct
// convolution (torch's) gives Inf / NaN only in the outputs whose window holds it. Such a
// value always reaches a kept output of its tile as Inf or NaN, so the output transform
// checks those (in registers) and a false return asks the caller for the direct path. The
// input scan this replaces cost 6% of ResNet layer1's 3x3 on one thread.
template <class T>
bool winograd_forward(const ConvParams& p, int m, const at::Tensor& x, const at::Tensor& w, bool transposed,
                      const Epilogue<T>& ep, at::Tensor& y) {
  const auto* kt = select_kernels<T>();
  const int64_t a2 = (m + 2) * (m + 2);
  const int64_t th = winograd_tiles(p.OH, m), tw = winograd_tiles(p.OW, m);
  // Every tile reads a full (m + 2)^2 patch: pad the bottom / right out to whole tiles.
  PaddedBands<T> xb(kt, x, p.pt, th * m + p.KH - 1 - p.H - p.pt, p.pl, tw * m + p.KW - 1 - p.W - p.pl);
  const int64_t ocblocks = ceil_div(p.OC, kt->nr);
  const int64_t block_bytes = winograd_pieces(p.KH) * a2 * p.C * kt->nr * int64_t(sizeof(T));
  const int64_t slices = ceil_div(ocblocks * block_bytes, 8 * band_bytes());
  const int64_t slice_blocks = ceil_div(ocblocks, std::max<int64_t>(slices, 1));
  const bool hwi = !w.is_contiguous();
  TORCH_INTERNAL_ASSERT(!hwi || w.is_contiguous(at::MemoryFormat::ChannelsLast));
  const T* ws = w.const_data_ptr<T>();
  for (int64_t b0 = 0; b0 < ocblocks; b0 += slice_blocks) {
    const int64_t oc0 = b0 * kt->nr;
    ConvParams q = p;
    q.OC = std::min(p.OC, (b0 + slice_blocks) * kt->nr) - oc0;
    Epilogue<T> e = ep;
    if (e.scale) e.scale += oc0;
    if (e.shift) e.shift += oc0;
    if (e.residual) e.residual += oc0 * e.rs.c;
    at::Tensor ys = oc0 == 0 && q.OC == p.OC ? y : y.narrow(1, oc0, q.OC);
    if (!winograd_slice<T>(q, m, xb, ws, transposed, hwi, oc0, p.OC, e, ys)) return false;
  }
  return true;
}

template <class T>
void direct_forward(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, bool transposed,
                    const Epilogue<T>& ep, at::Tensor& y);

// y = epilogue(conv(x, w)); w is (OC, C / groups, KH, KW) contiguous, or, transposed, the
// weight of the layer whose input gradient this is (see ConvKernels::pack_weight). Padding may
// be negative (a crop) for the input-gradient convolutions.
template <class T>
void forward_into(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, bool transposed,
                  const Epilogue<T>& ep, at::Tensor& y, bool channels_last) {
  const auto* kt = select_kernels<T>();
  // A strided 1x1 layer without padding (ResNet's downsampling shortcuts) reads every sh-th
  // row and sw-th column: gathered into a dense input (a quarter of it at stride 2), it is a
  // plain 1x1 GEMM with packed panels, where the direct kernel read rows of A sw pixels apart
  // (batch 8, 1 thread, torch / ours: channels_last 256 -> 512 at 56x56 stride 2 0.68x ->
  // 0.86x, NCHW 0.98x -> 1.11x; 512 -> 1024 at 28x28 0.85x -> 0.98x, 0.89x -> 1.02x). Under
  // auto, not for a channels_last output under 14x14 pixels an image, where the direct kernel
  // was the faster (1024 -> 2048 at 14x14 stride 2: 11.1 against 12.8 ms).
  if (unpadded_1x1(p) && (p.sh > 1 || p.sw > 1)) {
    const ConvAlgo a = forced_conv_algo();
    if (a == ConvAlgo::Gemm1x1 || (a == ConvAlgo::Auto && (!channels_last || p.OH * p.OW >= 196))) {
      ConvParams q = p;
      q.H = p.OH;
      q.W = p.OW;
      q.sh = q.sw = 1;
      forward_into<T>(q, strided_1x1_input<T>(x, p, channels_last), w, transposed, ep, y, channels_last);
      return;
    }
  }
  if (use_gemm1x1(p)) {
    const Strides4 nchw_rs{p.OC * p.OH * p.OW, p.OH * p.OW, p.OW, 1};
    const bool nchw = !channels_last && x.is_contiguous() && y.is_contiguous() &&
                      (!ep.residual || (ep.rs.n == nchw_rs.n && ep.rs.c == nchw_rs.c && ep.rs.h == nchw_rs.h &&
                                        ep.rs.w == nchw_rs.w));
    const bool nhwc = channels_last && flat_channels_last(strides_of(x), p.N, p.C, p.H, p.W) &&
                      flat_channels_last(strides_of(y), p.N, p.OC, p.OH, p.OW) &&
                      (!ep.residual || flat_channels_last(ep.rs, p.N, p.OC, p.OH, p.OW));
    if (nchw || nhwc) {
      const bool narrow = nchw && use_narrow_1x1(kt, p);
      const int block = nchw ? (narrow ? kt->mr_narrow : kt->mr_nchw) : kt->nr;
      const int64_t tile = nchw ? (narrow ? kt->nr_narrow : kt->nr) : kt->mr;
      int64_t chunk = gemm1x1_chunk(p, sizeof(T), tile);
      const int64_t parts = gemm1x1_parts(p, sizeof(T), tile, ceil_div(p.ocg(), block), chunk);
      const int64_t chunks = ceil_div(p.N * p.H * p.W, chunk);
      const int64_t tasks = parts * p.groups * chunks;
      // Pixels in one or two chunks: every weight panel serves one or two tasks, which pack
      // it where they use it (own_panel) instead of the whole weight being packed up front.
      // (A 1x1 weight is (OC, C / groups) whether OIHW or channels_last.)
      const bool own_panels = !transposed && chunks <= 2;
      const at::Tensor wp = own_panels ? at::Tensor() : packed_weight(kt, w, p, false, transposed, block);
      const auto fn = nchw ? (narrow ? kt->forward_1x1_nchw_narrow : kt->forward_1x1_nchw) : kt->forward_1x1_nhwc;
      Epilogue<T> e = ep;
      if (nhwc) e.rs = {p.OH * p.OW * p.OC, 1, p.OW * p.OC, p.OC};
      const T* xs = x.const_data_ptr<T>();
      const T* ws = own_panels ? nullptr : wp.const_data_ptr<T>();
      const T* raw = own_panels ? w.const_data_ptr<T>() : nullptr;
      T* ys = y.mutable_data_ptr<T>();
      const int64_t kc = gemm1x1_kc(p);
      at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t end) { fn(xs, ws, raw, p, chunk, kc, parts, e, ys, b, end); });
      return;
    }
  }
  // Stride 1 along W, pixels in the lanes, read from a padded NCHW copy, NCHW out: for few
  // input channels (LeNet's first layer; tiny copy, and the NHWC reduction would be a few
  // steps long), or where the NHWC tile's channel lanes would mostly idle and a row's pixels
  // fill the lanes better (GoogLeNet's 16-channel 5x5 input gradient: 16 of 32 lanes
  // against 28 of 32; there also for channels_last, through an NCHW result and a copy).
  // A single input channel also goes that way for channels_last: the NHWC reduction is then
  // KW steps per kernel row (LeNet-5's first layer in a channels_last model, batch 8: 71 us
  // against 41 us through the NCHW result; a 3-channel layer's NHWC rows are long enough:
  // 3 -> 32 at 32x32, 137 us against 300 us).
  const ConvAlgo forced = forced_conv_algo();
  const bool few_in = p.icg() <= 4 && p.OW >= 8;
  const bool few_out = lane_share(p.OW, kt->nr) > 1.25 * lane_share(p.ocg(), kt->nr) * lane_share(p.OW, kt->mr);
  const bool nchw_direct = forced == ConvAlgo::NchwDirect || (forced == ConvAlgo::Auto && (few_in || few_out));
  if (p.sw == 1 && nchw_direct &&
      (y.is_contiguous() ||
       ((few_out || p.icg() == 1) && !ep.residual && y.is_contiguous(at::MemoryFormat::ChannelsLast)))) {
    at::Tensor yn = y.is_contiguous() ? y : at::empty(y.sizes(), y.options());
    // Zero columns on the right up to whole vectors of output pixels: every tile then loads
    // full vectors (the masked tail loads cost a branch per step; 1.3x on a 28-pixel row).
    const int64_t wide = ceil_div(p.OW, kt->nr) * kt->nr + (p.KW - 1) * p.dw;
    const int64_t extra = std::max<int64_t>(0, wide - (p.W + p.pl + p.pr));
    const at::Tensor xp = padded_nchw(x, p.pt, p.pb, p.pl, p.pr + extra);
    const int64_t hp = xp.size(2), wpd = xp.size(3);
    FwdPlan plan;
    // Output channels split evenly over the tiles: 16 as 8 + 8, not 14 + 2 (a 2-row tile
    // does 4 FMAs per 4 loads).
    const int64_t ocg = std::max<int64_t>(p.ocg(), 1);
    plan.block = static_cast<int>(ceil_div(ocg, ceil_div(ocg, kt->mr_nchw)));
    const at::Tensor wp = packed_weight(kt, w, p, false, transposed, plan.block);
    plan.rows_per_task = std::clamp<int64_t>(ceil_div(1024, p.OW), 1, p.OH);
    plan.row_chunks = ceil_div(p.OH, plan.rows_per_task);
    const T* xs = xp.const_data_ptr<T>();
    const T* ws = wp.const_data_ptr<T>();
    T* ys = yn.mutable_data_ptr<T>();
    at::parallel_for(0, p.N * p.groups * plan.row_chunks, 1, [&](int64_t b, int64_t e) {
      kt->forward_nchw_direct(xs, hp, wpd, ws, p, plan, ep, ys, b, e);
    });
    if (!yn.is_same(y)) copy_nchw_to_channels_last<T>(yn, y);
    return;
  }
  const int m = winograd_forward_m(p, kt->mr);
  if (m && winograd_forward<T>(p, m, x, w, transposed, ep, y)) return;
  direct_forward<T>(p, x, w, transposed, ep, y);
}

template <class T>
void direct_forward(const ConvParams& p, const at::Tensor& x, const at::Tensor& w, bool transposed,
                    const Epilogue<T>& ep, at::Tensor& y) {
  const auto* kt = select_kernels<T>();
  PaddedBands<T> xb(kt, x, p.pt, p.pb, p.pl, p.pr);
  OutputBands<T> out(kt, p, y, ep, kt->nchw_tile_store);
  const FwdPlan plan = nhwc_plan(kt, p);
  const Strides4 yst = out.strides();
  // Bands of (image, row chunk) pairs k = n * rc + chunk, within both band budgets.
  const int64_t rc = plan.row_chunks, rpt = plan.rows_per_task;
  const int64_t gb = p.groups * (plan.blocks_inner ? 1 : plan.blocks);
  const int64_t chunks = p.N * rc;
  int64_t per_band = xb.in_place() ? chunks : std::max<int64_t>(1, xb.band_rows() / (rpt * p.sh));
  if (out.banded()) per_band = std::min(per_band, std::max<int64_t>(1, band_bytes() / (rpt * out.row_bytes())));
  // A whole number of items per thread in every band: AlexNet conv1's bands held 9 row chunks
  // (one channel block), 5 + 4 on two threads (forward NCHW, 2 threads: 0.79x -> 0.86x).
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  if (per_band < chunks && (gb * per_band) % threads != 0)
    per_band = std::max(per_band / threads, int64_t(1)) * threads;
  // One band and a task per weight block (blocks_inner off: weights over 256 KB): each thread
  // packs the blocks of its own tasks as it comes to them, into a slot that stays in its L2.
  // Packed whole up front, the blocks went out to DRAM and came back: at batch 1 with 512
  // channels at 7x7 (9.4 MB of weights, 100 KB of input) pack_rows_to_panel took 28% of the
  // layer at memory speed. With several bands, every band would pack them again.
  const bool own_blocks = !plan.blocks_inner && per_band >= chunks;
  const int64_t wblock = p.KH * p.KW * p.icg() * kt->nr;
  const at::Tensor wp = own_blocks ? at::empty({threads * wblock}, w.options())
                                   : packed_weight(kt, w, p, false, transposed, kt->nr);
  const T* ws = wp.const_data_ptr<T>();
  const bool hwi = !w.is_contiguous();
  TORCH_INTERNAL_ASSERT(!hwi || w.is_contiguous(at::MemoryFormat::ChannelsLast));
  std::vector<int64_t> slot_block(static_cast<size_t>(threads), -1);
  for (int64_t k0 = 0; k0 < chunks; k0 += per_band) {
    const int64_t k1 = std::min(chunks, k0 + per_band), cnt = k1 - k0;
    const int64_t n0 = k0 / rc, c0 = k0 % rc, n1 = (k1 - 1) / rc, c1 = (k1 - 1) % rc;
    const int64_t oh_last = std::min(p.OH, (c1 + 1) * rpt) - 1;
    const int64_t o_lo = n0 * p.OH + c0 * rpt, o_hi = n1 * p.OH + oh_last + 1;
    const PaddedNhwc<T>& xp = xb.output_rows(p, o_lo, o_hi);
    T* ys = out.begin(o_lo, o_hi);
    // Item i = (group / channel block j, band chunk) with the chunk fastest, as the kernel's
    // task order has it: a thread's consecutive rows share a weight block.
    at::parallel_for(0, gb * cnt, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e;) {
        const int64_t j = i / cnt, k = k0 + i % cnt;
        const int64_t n = k / rc, c = k % rc;
        // The run of items that stays inside one (image, j): consecutive kernel tasks.
        const int64_t len = std::min({e - i, cnt - i % cnt, rc - c});
        const int64_t t = (n * gb + j) * rc + c;
        const T* wj = ws;
        if (own_blocks) {
          // forward_nhwc reads block j at wpack + j * wblock.
          const int64_t slot = at::get_thread_num();
          T* mine = const_cast<T*>(ws) + slot * wblock;
          if (slot_block[static_cast<size_t>(slot)] != j) {
            kt->pack_weight(w.const_data_ptr<T>(), p, false, transposed, hwi, kt->nr, rebased(mine, j * wblock), j,
                            j + 1);
            slot_block[static_cast<size_t>(slot)] = j;
          }
          wj = rebased(mine, j * wblock);
        }
        kt->forward_nhwc(xp, wj, p, plan, out.epilogue(), ys, yst, t, t + len);
        i += len;
      }
    });
    out.finish(o_lo, o_hi);
  }
}

at::Tensor conv2d_fused_cpu(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift, const std::optional<at::Tensor>& residual,
                            bool relu, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_epilogue(op, p, input, bias, scale, shift, residual);
  if (is_reduced_precision(input)) {
    auto f = [](const std::optional<at::Tensor>& t) {
      return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
    };
    return conv2d_fused_cpu(input.to(at::kFloat), weight.to(at::kFloat), f(bias), f(scale), f(shift),
                            f(residual), relu, stride, padding, dilation, groups)
        .to(input.scalar_type());
  }
  const bool cl = wants_channels_last(input, weight);
  at::Tensor y = at::empty({p.N, p.OC, p.OH, p.OW},
                           input.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                            : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  const at::Tensor w = oihw_or_hwi(weight);
  // One per-channel shift: bias * scale + shift (either part optional).
  at::Tensor shift_eff;
  if (bias.has_value()) shift_eff = scale.has_value() ? bias->mul(*scale) : *bias;
  if (shift.has_value()) shift_eff = shift_eff.defined() ? shift_eff.add(*shift) : *shift;
  if (shift_eff.defined()) shift_eff = shift_eff.contiguous();
  at::Tensor scale_c = scale.has_value() ? scale->contiguous() : at::Tensor();
  at::Tensor res = residual.has_value() ? residual->contiguous(y.suggest_memory_format()) : at::Tensor();
  const at::Tensor x = input;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_cpu", [&] {
    Epilogue<scalar_t> ep;
    ep.scale = scale_c.defined() ? scale_c.const_data_ptr<scalar_t>() : nullptr;
    ep.shift = shift_eff.defined() ? shift_eff.const_data_ptr<scalar_t>() : nullptr;
    if (res.defined()) {
      ep.residual = res.const_data_ptr<scalar_t>();
      ep.rs = strides_of(res);
    }
    ep.relu = relu;
    forward_into<scalar_t>(p, x, w, false, ep, y, cl);
  });
  return y;
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_cpu(input, weight, bias, std::nullopt, std::nullopt, std::nullopt, false, stride, padding,
                          dilation, groups);
}

template <class T>
void input_grad(const ConvParams& p, const at::Tensor& go, const at::Tensor& w, at::Tensor& gx) {
  const auto* kt = select_kernels<T>();
  // Roles swapped: the output gradient is the input of a convolution producing gx.
  ConvParams q = p;
  q.C = p.OC;
  q.H = p.OH;
  q.W = p.OW;
  q.OC = p.C;
  q.OH = p.H;
  q.OW = p.W;
  if (p.sh == 1 && p.sw == 1) {
    // A forward convolution of the output gradient with the flipped, transposed weight
    // (per group), so every forward algorithm (1x1 GEMM, Winograd, direct) serves it. The
    // weight packers read w that way: no transposed copy (a weight-sized buffer).
    q.pt = transposed_pad(p.pt, p.KH, p.dh);
    q.pb = transposed_pad(p.pb, p.KH, p.dh);
    q.pl = transposed_pad(p.pl, p.KW, p.dw);
    q.pr = transposed_pad(p.pr, p.KW, p.dw);
    const Epilogue<T> ep;
    forward_into<T>(q, go, w, true, ep, gx, !gx.is_contiguous());
    return;
  }
  // Strided: scatter into a padded NHWC buffer, then crop into gx; a band of images at a time
  // (a multiple of the thread count: a task is one image's channel block).
  const int64_t hp = p.H + p.pt + p.pb, wpd = p.W + p.pl + p.pr;
  const int64_t image = hp * wpd * p.C;
  const int64_t threads = at::get_num_threads();
  const int64_t per_band = std::min(
      p.N, ceil_div(std::max<int64_t>(1, band_bytes() / (image * int64_t(sizeof(T)))), threads) * threads);
  at::Tensor buf = at::empty({per_band * image}, go.options());
  const at::Tensor wp = packed_weight(kt, w, p, true, false, kt->nr);
  const Strides4 gst = strides_of(go);
  const Strides4 xst = strides_of(gx);
  const T* ws = wp.const_data_ptr<T>();
  T* bs = buf.mutable_data_ptr<T>();
  const int64_t iblocks = ceil_div(p.icg(), kt->nr);
  for (int64_t n0 = 0; n0 < p.N; n0 += per_band) {
    const int64_t nb = std::min(per_band, p.N - n0);
    const T* gs = go.const_data_ptr<T>() + n0 * gst.n;
    T* xs = gx.mutable_data_ptr<T>() + n0 * xst.n;
    at::parallel_for(0, nb * p.groups * iblocks, 1, [&](int64_t b, int64_t e) {
      kt->input_grad_scatter(gs, gst, ws, p, bs, hp, wpd, b, e);
    });
    at::parallel_for(0, nb * p.H, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.W * p.C)),
                     [&](int64_t b, int64_t e) {
                       kt->unpack_nhwc(bs, hp, wpd, p.C, p.pt, p.pl, p.H, p.W, xs, xst, nullptr, {}, false, b, e);
                     });
  }
}

// The 1x1 weight gradient's GEMM (any stride and groups; padding would add zero pixels the
// GEMM does not skip). Forced "direct" keeps the general kernel, which the tests compare.
bool use_wgrad_1x1(const ConvParams& p) {
  const ConvAlgo a = forced_conv_algo();
  return p.KH == 1 && p.KW == 1 && p.pt == 0 && p.pb == 0 && p.pl == 0 && p.pr == 0 &&
         (a == ConvAlgo::Auto || a == ConvAlgo::Gemm1x1);
}

// Runs of pixels first, by shape alone: 2 from 4096 pixels, 4 from 8192, at most 8 MB of
// partial sums. Each thread then reads its own pixels of both operands; split by channels, every
// thread read all of one operand (channels_last 256 -> 64 at 56x56, 2 threads: each read
// the whole output gradient; torch / ours 0.73).
// Then input-channel slivers in one block per thread where the runs and groups do not
// already give every thread work: each block is packed once per chunk of pixels and its
// output gradient read once. Output-channel splits only when there are fewer slivers than
// threads.
Wgrad1x1Plan wgrad_1x1_plan(const ConvParams& p, int64_t nr, int64_t elem_bytes) {
  Wgrad1x1Plan plan;
  const int64_t threads = at::get_num_threads();
  const int64_t slivers = ceil_div(p.icg(), nr);
  const int64_t pixels = p.N * p.OH * p.OW, gw_bytes = std::max<int64_t>(1, p.OC * p.icg() * elem_bytes);
  plan.runs = pixels >= 8192 ? 4 : pixels >= 4096 ? 2 : 1;  // powers of two: even on 2 and 4 threads
  while (plan.runs > 1 && (plan.runs - 1) * gw_bytes > (int64_t(8) << 20)) plan.runs /= 2;
  const int64_t per_group = std::max<int64_t>(1, ceil_div(threads, p.groups * plan.runs));
  plan.sliver_blocks = std::min(slivers, std::max(per_group, ceil_div(slivers, 16)));
  plan.slivers_per_task = ceil_div(slivers, plan.sliver_blocks);
  plan.sliver_blocks = ceil_div(slivers, plan.slivers_per_task);
  const int64_t have = plan.runs * p.groups * plan.sliver_blocks;
  plan.row_splits = have >= threads ? 1 : std::min(ceil_div(p.ocg(), 8), ceil_div(threads, have));
  plan.rows_per_split = ceil_div(p.ocg(), plan.row_splits);
  return plan;
}

// The pixels-in-lanes weight gradient (weight_grad_rows), as the NCHW direct forward: stride
// 1 along W, and under auto for a few input channels, a row of at least 8 output pixels and
// at most two blocks of output channels (every task then re-reads its input rows).
template <class T>
bool use_wgrad_rows(const ConvParams& p, const ConvKernels<T>* kt) {
  const ConvAlgo a = forced_conv_algo();
  if (p.sw != 1 || p.KW > kMaxRowsKW || !(a == ConvAlgo::Auto || a == ConvAlgo::NchwDirect)) return false;
  return a == ConvAlgo::NchwDirect ||
         (p.icg() <= 4 && p.OW >= 8 && p.ocg() <= 2 * kt->weight_grad_rows_block(p.KW));
}

// The weight gradient by F(2x2, 3x3)'s dual tile where winograd_m picks F(2x2, 3x3) (auto,
// or winograd forced; 7-wide outputs too, whose forward runs direct: 512 channels at 7x7,
// batch 8, 1 thread, 16.9 ms against the direct kernel's 21.6). Under auto, with at least
// one tile per 128 KB of the sum buffer (16 x OC x C values), which every chunk of tiles
// reads and writes: batch 1 at 14x14 with 512 channels (49 tiles, 16 MB) ran 0.76x torch
// against the direct kernel's 0.87x, batch 4 (196 tiles) 1.09x against 0.95x; 256 channels
// at batch 1 (49 tiles, 4 MB) 1.0x against 0.85x. One thread, same process, NCHW.
bool use_wgrad_winograd(const ConvParams& p, int64_t elem_bytes) {
  if (p.KH != 3 || winograd_m(p) != 2) return false;
  if (forced_conv_algo() != ConvAlgo::Auto) return true;
  const int64_t tiles = winograd_2x2_tiles(p);
  return tiles * (int64_t(128) << 10) >= 16 * p.OC * p.C * elem_bytes;
}

// gw (OC, 3, 3, C) = G^T [ sum over the 2x2 output tiles of (A dY A^T) .* (B^T d B) ] G, the
// products summed a chunk of tiles at a time into mw (16 x OC x C), which stays put while the
// chunks stream past: each of its values gets ~count multiply-adds per chunk.
template <class T>
void winograd_weight_grad(const ConvParams& p, const at::Tensor& go, const at::Tensor& x, at::Tensor& gw) {
  const auto* kt = select_kernels<T>();
  constexpr int m = 2;
  const int64_t a2 = 16;
  const int64_t th = winograd_tiles(p.OH, m), tw = winograd_tiles(p.OW, m), total = p.N * th * tw;
  PaddedBands<T> xb(kt, x, p.pt, th * m + 2 - p.H - p.pt, p.pl, tw * m + 2 - p.W - p.pl);
  // Slices of output channels whose sum buffer mw (16 x slice x C) stays within 4 MB, each
  // slice transforming the input again (adds only, against the GEMM's 16 x slice
  // multiply-adds per tile and input channel). VGG conv5 (512 -> 512) kept a 16.8 MB mw and
  // peaked at 52 MB where torch takes 27; with 4 MB slices it is as fast as unsliced or
  // faster (1, 2 MB slices: 20-30% slower at 256-512 channels).
  const int64_t cp = ceil_div(p.C, kt->nr) * kt->nr;
  const int64_t budget = int64_t(4) << 20;
  const int64_t per_oc = a2 * cp * int64_t(sizeof(T));
  const int64_t slices = ceil_div(p.OC * per_oc, budget);
  const int64_t slice = std::min(p.OC, ceil_div(ceil_div(p.OC, slices), kt->mr) * kt->mr);
  // Chunks of whole rows of tiles. Each chunk reads and writes all of mw: where mw fits in
  // L2 next to them, the chunk's transformed tiles (v, vg) are sized to stay there as well
  // (1 MB; 0.5 and 1.5 MB were slower for DenseNet and Inception's 3x3); a larger mw takes
  // 4 MB of them (8 MB ran no faster at 256-512 channels, 2 MB up to 15% slower).
  const int64_t tile_bytes = a2 * std::max<int64_t>(1, p.C + slice) * int64_t(sizeof(T));
  const int64_t l2 = int64_t(1) << 20;
  int64_t chunk = std::max<int64_t>(kt->mr, (slice * per_oc <= l2 ? l2 : 4 * l2) / tile_bytes);
  chunk = std::min(total, std::max<int64_t>(1, chunk / tw) * tw);
  // Several threads work through `group` chunks per step: one fork / join for both transforms
  // and one for the GEMMs, which add the step's chunks into mw one after another, so every
  // sum keeps the one-thread order and its bits (chunks per thread, not bigger chunks).
  const int64_t group = std::min<int64_t>({at::get_num_threads(), 4, ceil_div(total, chunk)});
  const int64_t v_chunk = a2 * chunk * p.C, vg_chunk = a2 * chunk * slice;
  at::Tensor v = at::empty({group * v_chunk + kt->nr}, x.options());
  at::Tensor vg = at::empty({group * vg_chunk}, x.options());
  at::Tensor mw = at::empty({a2 * slice * cp}, x.options());
  T* vs = v.mutable_data_ptr<T>();
  // The GEMM's last lanes read past the input channels (into mw's padding); past the buffer
  // they find zeros rather than whatever the allocator left.
  std::fill(vs + group * v_chunk, vs + group * v_chunk + kt->nr, T(0));
  T* vgs = vg.mutable_data_ptr<T>();
  T* ms = mw.mutable_data_ptr<T>();
  // An NCHW output gradient goes to channels_last a step's rows (and a slice's channels) at a
  // time (a step is whole rows of tiles: at most step / tw + 1 of them, m output rows each).
  const int64_t step = group * chunk;
  const bool go_cl = go.size(1) == 1 || go.stride(1) == 1;
  const int64_t ohw = p.OH * p.OW;
  at::Tensor gbuf = go_cl ? at::Tensor() : at::empty({(step / tw + 1) * m * p.OW * slice}, go.options());
  for (int64_t oc0 = 0; oc0 < p.OC; oc0 += slice) {
    ConvParams q = p;
    q.OC = std::min(slice, p.OC - oc0);
    const Strides4 gst = go_cl ? strides_of(go) : Strides4{ohw * q.OC, 1, p.OW * q.OC, q.OC};
    const int64_t gemm_tasks = a2 * ceil_div(p.C, kt->nr) * ceil_div(q.OC, kt->mr);
    for (int64_t first = 0; first < total; first += step) {
      const int64_t count = std::min(step, total - first);
      const int64_t last = first + count - 1;
      const int64_t n0 = first / (th * tw), t0 = first / tw % th, n1 = last / (th * tw), t1 = last / tw % th;
      const PaddedNhwc<T>& xp = xb.rows(n0 * xb.hp() + t0 * m, n1 * xb.hp() + t1 * m + m + 2);
      const T* gs = go.const_data_ptr<T>() + oc0 * (go_cl ? 1 : ohw);
      if (!go_cl) {
        // Output rows r = n * OH + oh from r0 = n0 * OH + t0 * m to r1, indexed as the whole
        // tensor; the pixels of rows [r0, r1) as one range, each image's a contiguous run.
        const int64_t r0 = n0 * p.OH + t0 * m, r1 = n1 * p.OH + std::min(p.OH, t1 * m + m);
        T* rows = rebased(gbuf.mutable_data_ptr<T>(), r0 * p.OW * q.OC);
        at::parallel_for(r0 * p.OW, r1 * p.OW, 256, [&](int64_t b, int64_t e) {
          while (b < e) {
            const int64_t n = b / ohw, hi = std::min(e, (n + 1) * ohw);
            kt->transpose(gs + n * p.OC * ohw + (b - n * ohw), ohw, rows + b * q.OC, q.OC, q.OC, hi - b);
            b = hi;
          }
        });
        gs = rows;
      }
      const int64_t chunks = ceil_div(count, chunk);
      at::parallel_for(0, count, 8, [&](int64_t b, int64_t e) {
        for (int64_t j = b / chunk; j < chunks && j * chunk < e; ++j) {
          const int64_t fj = first + j * chunk, cj = std::min(chunk, total - fj);
          const int64_t lo = std::max(b, j * chunk) - j * chunk, hi = std::min(e, j * chunk + cj) - j * chunk;
          kt->winograd_input(xp, q, m, fj, cj, vs + j * v_chunk, lo, hi);
          kt->winograd_wgrad_go(gs, gst, q, fj, cj, vgs + j * vg_chunk, lo, hi);
        }
      });
      at::parallel_for(0, gemm_tasks, 1, [&](int64_t b, int64_t e) {
        for (int64_t j = 0; j < chunks; ++j) {
          const int64_t fj = first + j * chunk;
          kt->winograd_wgrad_gemm(vgs + j * vg_chunk, vs + j * v_chunk, q, std::min(chunk, total - fj), fj == 0, ms,
                                  b, e);
        }
      });
    }
    T* out = gw.mutable_data_ptr<T>() + oc0 * 9 * p.C;
    at::parallel_for(0, q.OC, 1, [&](int64_t b, int64_t e) { kt->winograd_wgrad_output(ms, q, out, b, e); });
  }
}

// Sums split into runs by shape alone: run 0 sums into the result, runs 1.. into buffers of
// their own, added to the result in run order at the end, so the bits depend on the run count
// and never on the thread count.
template <class T>
struct RunPartials {
  at::Tensor buf;
  T* data = nullptr;
  int64_t count, numel;
  // `zeroed`: the kernel adds into a run's buffer rather than writing its first sums.
  RunPartials(int64_t runs, int64_t numel_, const at::TensorOptions& options, bool zeroed)
      : count(runs - 1), numel(numel_) {
    if (count <= 0) return;
    buf = zeroed ? at::zeros({count * numel}, options) : at::empty({count * numel}, options);
    data = buf.mutable_data_ptr<T>();
  }
  T* run(T* out, int64_t r) const { return r == 0 ? out : data + (r - 1) * numel; }
  void add_to(T* out) const {
    if (count <= 0) return;
    at::parallel_for(0, numel, 4096, [&](int64_t b, int64_t e) {
      for (int64_t r = 0; r < count; ++r)
        for (int64_t i = b; i < e; ++i) out[i] += data[r * numel + i];
    });
  }
};

template <class T>
void weight_and_bias_grad(const ConvParams& p, const at::Tensor& go, const at::Tensor& x, at::Tensor* gw,
                          at::Tensor* gb) {
  const auto* kt = select_kernels<T>();
  const Strides4 gst = strides_of(go);
  const T* gs = go.const_data_ptr<T>();
  if (gw && use_wgrad_1x1(p)) {
    const Wgrad1x1Plan plan = wgrad_1x1_plan(p, kt->nr, sizeof(T));
    T* out = gw->mutable_data_ptr<T>();
    const T* xs = x.const_data_ptr<T>();
    const Strides4 xst = strides_of(x);
    const RunPartials<T> parts(plan.runs, gw->numel(), gw->options(), false);
    at::parallel_for(0, plan.tasks(p), 1, [&](int64_t b, int64_t e) {
      kt->weight_grad_1x1(gs, gst, xs, xst, p, plan, out, parts.data, b, e);
    });
    parts.add_to(out);
  } else if (gw && use_wgrad_rows(p, kt)) {
    // Pixels in the lanes: LeNet's first layer (1 -> 6, 5x5 at 28x28) has 5 weight tiles of
    // 1 x 32 output channels x 5 taps for the oc-lanes kernel, 6 of 32 lanes busy.
    WgradRowsPlan plan;
    plan.ob = kt->weight_grad_rows_block(p.KW);
    plan.runs = std::clamp<int64_t>(p.N * p.OH / 128, 1, 8);
    const at::Tensor xp = padded_nchw(x, p.pt, p.pb, p.pl, p.pr);
    const at::Tensor gc = nchw_contiguous(go);
    const RunPartials<T> parts(plan.runs, gw->numel(), gw->options(), false);
    T* out = gw->mutable_data_ptr<T>();
    const int64_t tasks = plan.runs * p.groups * p.icg() * p.KH * ceil_div(p.ocg(), plan.ob);
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      kt->weight_grad_rows(gc.const_data_ptr<T>(), xp.const_data_ptr<T>(), xp.size(2), xp.size(3), p, plan, out,
                           parts.data, b, e);
    });
    parts.add_to(out);
  } else if (gw) {
    // An Inf or NaN in x or go always reaches the Winograd sums (a product with it is Inf or
    // NaN), and the tile's transforms mix it into NaN where the direct sums keep Inf: such a
    // result is computed again by the direct kernel. Checking the small result instead of
    // both inputs saved two passes over memory (~6% of VGG conv3_2's weight gradient).
    const bool wino = use_wgrad_winograd(p, sizeof(T));
    if (wino) winograd_weight_grad<T>(p, go, x, *gw);
    if (!wino || !all_finite<T>(*gw)) {
      // Bands of output rows (n, oh) starting at multiples of the kernel's reduction chunk, so
      // the sums are those of one pass over all rows, bit for bit.
      PaddedBands<T> xb(kt, x, p.pt, p.pb, p.pl, p.pr);
      const int64_t rows = p.N * p.OH, rpc = wgrad_rows_per_chunk(p);
      const int64_t per_band = xb.in_place() ? rows : std::max<int64_t>(1, xb.band_rows() / (rpc * p.sh)) * rpc;
      // The oc-lanes tile sums into the transpose, (KH * KW * ICg, OC); turned round at the end.
      const bool oc_lanes = wgrad_oc_lanes(p, kt->mr, kt->nr);
      at::Tensor gwt = oc_lanes ? at::empty({gw->numel()}, gw->options()) : at::Tensor();
      T* out = oc_lanes ? gwt.mutable_data_ptr<T>() : gw->mutable_data_ptr<T>();
      // Tasks are the weight's tiles; a small weight has few (LeNet's 1 -> 6 5x5: 5 tiles).
      // Where the input is one band, the rows are then cut into `splits` runs of whole
      // reduction chunks (RunPartials). Not for several bands: a band overlapping two runs
      // unevenly left a thread idle (ResNet stem, 2 threads, 15% slower), and dealing the
      // chunks to the buffers in turn cost more in per-chunk calls than the balance won. With
      // one band the band loop below runs once.
      const int64_t tiles = kt->weight_grad_tiles(p), elems = gw->numel();
      const int64_t all_chunks = ceil_div(rows, rpc);
      const int64_t splits =
          per_band < rows ? 1
                          : std::clamp<int64_t>(std::min({ceil_div(64, tiles), all_chunks / 4,
                                                          (int64_t(1) << 20) / (elems * int64_t(sizeof(T)))}),
                                                1, 16);
      // Runs after the first start past row 0, so the kernel adds into their zeroed buffers.
      const RunPartials<T> parts(splits, elems, gw->options(), true);
      for (int64_t r0 = 0; r0 < rows; r0 += per_band) {
        const int64_t r1 = std::min(rows, r0 + per_band);
        const PaddedNhwc<T>& xp = xb.output_rows(p, r0, r1);
        // A task's run of tiles within one split goes to the kernel as one call (the oc-lanes
        // kernel packs the output gradient once per call). One split: the band's rows.
        at::parallel_for(0, splits * tiles, 1, [&](int64_t b, int64_t e) {
          for (int64_t task = b; task < e;) {
            const int64_t sp = task / tiles, t0 = task % tiles, t1 = std::min(tiles, t0 + e - task);
            const int64_t lo = splits > 1 ? sp * all_chunks / splits * rpc : r0;
            const int64_t hi = splits > 1 ? std::min(rows, (sp + 1) * all_chunks / splits * rpc) : r1;
            kt->weight_grad(gs, gst, xp, p, parts.run(out, sp), lo, hi, t0, t1);
            task += t1 - t0;
          }
        });
      }
      parts.add_to(out);
      if (oc_lanes) {
        const int64_t k = p.KH * p.KW * p.icg();
        kt->transpose(out, p.OC, gw->mutable_data_ptr<T>(), k, k, p.OC);
      }
    }
  }
  if (gb) {
    T* out = gb->mutable_data_ptr<T>();
    at::parallel_for(0, p.OC, 16, [&](int64_t b, int64_t e) { kt->bias_grad(gs, gst, p, out, b, e); });
  }
}

// (OC, KH, KW, ICg) -> (OC, ICg, KH, KW) in place, one output channel's slab at a time: a
// weight-sized second buffer is what pushed the backward's peak above torch's (9.4 MB at
// VGG's 512 -> 512).
template <class T>
void to_oihw_in_place(at::Tensor& g) {
  const int64_t oc = g.size(0), k = g.size(1) * g.size(2), ic = g.size(3);
  T* data = g.mutable_data_ptr<T>();
  at::parallel_for(0, oc, 1, [&](int64_t b, int64_t e) {
    std::vector<T> slab(static_cast<size_t>(k * ic));
    for (int64_t o = b; o < e; ++o) {
      T* d = data + o * k * ic;
      std::copy(d, d + k * ic, slab.begin());
      for (int64_t i = 0; i < ic; ++i)
        for (int64_t j = 0; j < k; ++j) d[i * k + j] = slab[j * ic + i];
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask) {
  const char* op = "conv2d_backward";
  const ConvParams p = check_conv(op, input, weight, stride, padding, dilation, groups);
  check_grad_output(op, p, grad_output, input);
  if (is_reduced_precision(input)) {
    auto r = conv2d_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat),
                                 stride, padding, dilation, groups, mask);
    const auto t = input.scalar_type();
    return {std::get<0>(r).to(t), std::get<1>(r).to(t), std::get<2>(r).to(t)};
  }
  const bool cl = wants_channels_last(input, weight);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor gx = mask[0] ? at::empty(input.sizes(), input.options().memory_format(fmt)) : at::empty({0}, input.options());
  at::Tensor gwb;  // (OC, KH, KW, ICg): the kernel's layout
  at::Tensor gb = mask[2] ? at::empty({p.OC}, input.options()) : at::empty({0}, input.options());
  if (mask[1]) gwb = at::empty({p.OC, p.KH, p.KW, p.icg()}, input.options());
  const bool empty = p.N == 0 || p.OC == 0 || input.numel() == 0;
  if (empty) {
    if (mask[0]) gx.zero_();
    if (mask[1]) gwb.zero_();
    if (mask[2]) gb.zero_();
  } else {
    const at::Tensor w = oihw_or_hwi(weight);
    const at::Tensor g = grad_output.contiguous(fmt);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_backward_cpu", [&] {
      if (mask[0]) input_grad<scalar_t>(p, g, w, gx);
      if (mask[1] || mask[2])
        weight_and_bias_grad<scalar_t>(p, g, input, mask[1] ? &gwb : nullptr, mask[2] ? &gb : nullptr);
    });
  }
  at::Tensor gw;
  if (!mask[1]) {
    gw = at::empty({0}, input.options());
  } else if (weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    gw = gwb.permute({0, 3, 1, 2});  // (OC, KH, KW, ICg) already is channels_last
  } else {
    if (p.KH * p.KW > 1)  // 1x1: the two layouts are one
      AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_wgrad_layout", [&] { to_oihw_in_place<scalar_t>(gwb); });
    gw = gwb.view({p.OC, p.icg(), p.KH, p.KW});
  }
  return {gx, gw, gb};
}

}  // namespace
}  // namespace conv
}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("conv2d", &fastconv::conv::conv2d_cpu);
  m.impl("conv2d_fused", &fastconv::conv::conv2d_fused_cpu);
  m.impl("conv2d_backward", &fastconv::conv::conv2d_backward_cpu);
}
