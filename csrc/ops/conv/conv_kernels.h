// Raw-pointer conv2d kernels, one table per ISA (conv_kernels_{avx512,avx2,default}.cpp); no
// torch headers. Every kernel takes a range of independent tasks so the glue can hand ranges
// to at::parallel_for; a task never writes memory another task writes.
//
// Layouts: "padded NHWC" buffers are [N][Hp][Wp][C] with the zero border already in place,
// so the inner loops never test bounds. Tensors passed with strides (sN, sC, sH, sW) may be
// NCHW, channels_last or any view.
#pragma once

#include <cstdint>

#include "conv_math.h"

namespace fastconv {
namespace conv {

// A pointer the kernels can index with a whole tensor's coordinates when the buffer holds its
// rows (or packed weight items) from `elems` on. Formed through an integer: the intermediate
// lies outside the buffer, every address the kernels form from it lies inside. Always inlined:
// no out-of-line copy of the per-ISA objects for the linker to pick.
template <class T>
FASTCONV_ALWAYS_INLINE T* rebased(T* band, int64_t elems) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(band) - static_cast<uintptr_t>(elems) * sizeof(T));
}

struct Strides4 {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// y = relu?(acc * scale[oc] + shift[oc] + residual)   (scale / shift / residual optional;
// a plain bias is a shift).
template <class T>
struct Epilogue {
  const T* scale = nullptr;
  const T* shift = nullptr;
  const T* residual = nullptr;
  Strides4 rs;  // residual strides (the output's shape)
  bool relu = false;
};

// A padded NHWC image stack: data[((n * hp + h) * wp + w) * c + ch].
template <class T>
struct PaddedNhwc {
  const T* data = nullptr;
  int64_t hp = 0, wp = 0, c = 0;
};

// Work split of the output-stationary kernels: one task is (n, group, channel block, a chunk
// of output rows).
struct FwdPlan {
  int64_t blocks = 1;          // channel blocks per group
  int64_t rows_per_task = 1;
  int64_t row_chunks = 1;
  // Every channel block inside one task (small weights: the input rows are then read once);
  // else one block per task (large weights: a block's weights stay in L2 across rows).
  bool blocks_inner = false;
  // forward_nchw_direct: output channels per tile (at most mr_nchw; weights packed with it).
  int block = 0;
  int64_t tasks(const ConvParams& p) const {
    return p.N * p.groups * (blocks_inner ? 1 : blocks) * row_chunks;
  }
};

// The weight gradient's reduction runs over output rows in chunks of ~256 pixels.
inline int64_t wgrad_rows_per_chunk(const ConvParams& p) {
  return p.OW > 0 && p.OW < 256 ? 256 / p.OW : 1;
}

// The share of a tile axis doing useful work when `len` items are cut into blocks of `block`
// (the kernels' choices between tile orientations).
inline double lane_share(int64_t len, int64_t block) {
  return len > 0 ? double(len) / double((len + block - 1) / block * block) : 0.0;
}

// The weight gradient's tile: (kw, ic) rows x output-channel lanes ("oc lanes", one group,
// dilation 1), unless output channels x (kw, ic) lanes leaves clearly fewer lanes idle
// (LeNet's 1 -> 6 5x5: 5 (kw, ic) pairs, 6 channels). The oc-lanes kernel broadcasts its
// rows from the input in place and packs only the output gradient, once per chunk for all
// tiles; same process, 1 thread, against the other orientation: AlexNet's 3 -> 64 11x11/4
// 0.53x -> 0.97x torch (33 (kw, ic) pairs half-filled two lane blocks), the ResNet stem
// 0.96x -> 1.35x, 64 -> 64 3x3 at 224 1.23x -> 1.40x, 256 -> 256 at 56 0.94x -> 1.01x.
// Not for many channel blocks on short rows: its reduction runs one output row per segment
// (the padded input rows are not adjacent), and with 16+ blocks at 14 pixels per row
// (512 -> 512 at 14x14) it was even on AVX-512 and 25% slower on AVX2.
inline bool wgrad_oc_lanes(const ConvParams& p, int mr, int nr) {
  if (p.groups != 1 || p.dw != 1 || p.OC == 0) return false;
  const int64_t j = p.KW * p.icg(), o = p.ocg();
  if (o > 8 * nr && p.OW < 28) return false;
  return 1.1 * lane_share(o, nr) * lane_share(j, mr) >= lane_share(j, nr) * lane_share(o, mr);
}

// Work split of the 1x1 weight gradient (weight_grad_1x1): task = (run of output pixels,
// group, block of slivers_per_task input-channel slivers of nr, split of rows_per_split
// output channels), tasks = runs * groups * sliver_blocks * row_splits. Run r sums pixels
// [r * P / runs, (r + 1) * P / runs) of the P = N * OH * OW in chunks of `chunk` pixels in
// order, into gw for r = 0 and into partial sums of its own for the others, which the
// caller adds to gw in order. The runs depend on the shape only (same bits for any thread
// count).
struct Wgrad1x1Plan {
  int64_t chunk = 256;
  int64_t runs = 1;
  int64_t slivers_per_task = 1, sliver_blocks = 1;
  int64_t rows_per_split = 1, row_splits = 1;
  int64_t tasks(const ConvParams& p) const { return runs * p.groups * sliver_blocks * row_splits; }
};

// Work split of the pixels-in-lanes weight gradient (weight_grad_rows): `ob` output
// channels per task, the N * OH output rows in `runs` runs of their own (by shape alone).
struct WgradRowsPlan {
  int64_t ob = 1, runs = 1;
};
// Widest kernel weight_grad_rows is compiled for.
constexpr int kMaxRowsKW = 11;

template <class T>
struct ConvKernels {
  int mr;  // output pixels per microkernel tile (NHWC orientation)
  int nr;  // output channels per tile (NHWC orientation): 2 SIMD vectors
  int mr_nchw;  // output channels per tile in the NCHW (pixels-in-vectors) orientation
  // forward_nhwc stores its tiles straight into an NCHW output (transposed in registers) at
  // full speed; otherwise the glue gives it an NHWC band and unpacks that.
  bool nchw_tile_store;

  // Rows [row_begin, row_end) of the N * hp rows of a padded NHWC buffer from src, written
  // from dst on (dst holds row row_begin): row (n, h), pixel w, channel c = src[n][c][h - pt][w - pl]
  // inside, 0 outside (negative pads crop).
  void (*pack_nhwc)(const T* src, Strides4 s, int64_t C, int64_t H, int64_t W, int64_t pt,
                    int64_t pl, int64_t hp, int64_t wp, T* dst, int64_t row_begin, int64_t row_end);
  // dst[n][c][h][w] = relu?(src[n][h + pt][w + pl][c] + res[n][c][h][w]) for rows
  // [row_begin, row_end) of the N * H output rows (res optional).
  void (*unpack_nhwc)(const T* src, int64_t hp, int64_t wp, int64_t C, int64_t pt, int64_t pl,
                      int64_t H, int64_t W, T* dst, Strides4 d, const T* res, Strides4 rs, bool relu,
                      int64_t row_begin, int64_t row_end);

  // Weight (OC, ICg, KH, KW) contiguous -> blocks of `block` channels:
  // out[g][blk][kh][kw][k][block]. swap: the blocked axis is the input channel and k runs over
  // output channels (input-gradient weights). transposed: w is the weight of the layer whose
  // input gradient this convolution computes (its channel axes swapped per group, flipped in
  // both spatial axes), read as such without a copy. Zero-filled past the end. Fills the
  // (g, blk) items [item_begin, item_end) of the groups * nblk (out is the whole buffer).
  // hwi: w is stored (O, KH, KW, I), a channels_last weight, read in place.
  void (*pack_weight)(const T* w, const ConvParams& p, bool swap, bool transposed, bool hwi, int block, T* out,
                      int64_t item_begin, int64_t item_end);
  // dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols (8 x 8 register transposes):
  // channels_last weights to OIHW, a filter at a time.
  void (*transpose)(const T* src, int64_t ss, T* dst, int64_t ds, int64_t rows, int64_t cols);

  // Direct convolution, NHWC orientation: tiles of mr output pixels x nr output channels,
  // input broadcast from the padded buffer, packed weights (pack_weight with block nr).
  void (*forward_nhwc)(const PaddedNhwc<T>& x, const T* wpack, const ConvParams& p,
                       const FwdPlan& plan, const Epilogue<T>& ep, T* y, Strides4 ys,
                       int64_t task_begin, int64_t task_end);
  // 1x1, stride 1, no padding, as a GEMM over the pixels of all images (q = n * H * W + h * W
  // + w); task = (part, group, chunk of `chunk` pixels), part slowest, tasks = parts * groups *
  // ceil(N * H * W / chunk); part i of `parts` computes the i-th share of the output-channel
  // blocks. The reduction runs in blocks of kc input channels (any kc, chunk or parts gives
  // the same bits).
  // NCHW: x, y and the residual contiguous; pixels in the SIMD lanes, weights packed with
  // block mr_nchw. NHWC: x, y and the residual contiguous channels_last; output channels in
  // the lanes, weights packed with block nr. No layout conversion either way.
  // raw: the weight itself, (OC, C / groups) contiguous, instead of wpack (null then): each
  // (block, reduction block) panel is packed where it is used.
  void (*forward_1x1_nchw)(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                           int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end);
  // The same with tiles of mr_narrow output channels x nr_narrow pixels (weights packed with
  // block mr_narrow), where the table has it (null and 0 otherwise).
  int mr_narrow;
  int nr_narrow;
  void (*forward_1x1_nchw_narrow)(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk,
                                  int64_t kc, int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin,
                                  int64_t task_end);
  void (*forward_1x1_nhwc)(const T* x, const T* wpack, const T* raw, const ConvParams& p, int64_t chunk, int64_t kc,
                           int64_t parts, const Epilogue<T>& ep, T* y, int64_t task_begin, int64_t task_end);

  // Direct convolution, NCHW orientation, for stride-1 (along W) layers with few input or
  // output channels (LeNet's first layer, GoogLeNet's 16-channel 5x5 input gradient): tiles
  // of plan.block output channels x 2 vectors of output pixels along a row; x is a
  // zero-padded NCHW copy [N][C][hp][wp], wide enough that every tile reads whole vectors
  // (wp >= OW rounded up to nr, + (KW - 1) * dw); weights packed with block plan.block; y
  // contiguous NCHW. Task = (n, group, chunk of output rows).
  void (*forward_nchw_direct)(const T* x, int64_t hp, int64_t wp, const T* wpack, const ConvParams& p,
                              const FwdPlan& plan, const Epilogue<T>& ep, T* y, int64_t task_begin,
                              int64_t task_end);

  // Weight gradient into gw[g][o][kh][kw][ic] (OCg x KH x KW x ICg per group), or, when
  // wgrad_oc_lanes(p, mr, nr), its transpose gw[kh][kw][ic][o]; for tiles
  // [tile_begin, tile_end) of weight_grad_tiles(p), summed over the output rows
  // [row_begin, row_end) of the N * OH (n, oh) rows: row_begin == 0 overwrites gw, a later range
  // adds to it. Ranges starting at multiples of wgrad_rows_per_chunk(p) give the sums of one
  // call over all rows, bit for bit.
  void (*weight_grad)(const T* go, Strides4 gs, const PaddedNhwc<T>& x, const ConvParams& p,
                      T* gw, int64_t row_begin, int64_t row_end, int64_t tile_begin, int64_t tile_end);
  int64_t (*weight_grad_tiles)(const ConvParams& p);
  // Weight gradient of a 1x1 layer without padding (any stride, groups) into
  // gw[g][o][ic], as a GEMM over all output pixels; x read in place with strides xs, go
  // contiguous (either layout). Overwrites gw with the first run's sums and partials
  // (runs - 1 arrays shaped as gw) with the others'.
  void (*weight_grad_1x1)(const T* go, Strides4 gs, const T* x, Strides4 xs, const ConvParams& p,
                          const Wgrad1x1Plan& plan, T* gw, T* partials, int64_t task_begin, int64_t task_end);
  // Weight gradient into gw[g][o][kh][kw][ic] with output pixels in the lanes (few channels,
  // stride 1 along W): go contiguous NCHW, xp a zero-padded contiguous NCHW input of hp x wp
  // planes. Tasks =
  // runs * groups * (C / groups) * KH * ceil((OC / groups) / ob); run 0 overwrites gw,
  // run r > 0 partials + (r - 1) * gw.numel().
  void (*weight_grad_rows)(const T* go, const T* xp, int64_t hp, int64_t wp, const ConvParams& p,
                           const WgradRowsPlan& plan, T* gw, T* partials, int64_t task_begin, int64_t task_end);
  int64_t (*weight_grad_rows_block)(int64_t kw);  // largest ob for a kernel width

  // Input gradient of a strided layer: scatter-adds into a zeroed padded NHWC buffer
  // gx[N][hp][wp][C]; task = (n, group, input-channel block of nr); weights packed with
  // swap, block nr.
  void (*input_grad_scatter)(const T* go, Strides4 gs, const T* wpack, const ConvParams& p,
                             T* gx, int64_t hp, int64_t wp, int64_t task_begin, int64_t task_end);

  // grad_bias[oc] = sum over n, h, w of go, for output channels [oc_begin, oc_end).
  void (*bias_grad)(const T* go, Strides4 gs, const ConvParams& p, T* gb, int64_t oc_begin,
                    int64_t oc_end);

  // Winograd F(m x m, 3 x 3), m = 2 or 4, for 3x3 stride-1 dilation-1 single-group layers
  // (conv_winograd.h has the matrices). Tiles are numbered over the batch,
  // t = (n * tiles_h + th) * tiles_w + tw; a call handles a chunk of `count` tiles from
  // `first`. Buffers: u[xi][ocb][ic][nr] (weights), v[xi][count][C] (input tiles),
  // mm[xi][count][OCp] (products; OCp = OC rounded up to nr), xi < (m + 2)^2.
  // Output channels [oc0, oc0 + p.OC) of w (transposed as in pack_weight: w is then
  // (C, oc_total, k, k); hwi: w is channels_last, as in pack_weight).
  void (*winograd_weight)(const T* w, const ConvParams& p, int m, bool transposed, bool hwi, int64_t oc0,
                          int64_t oc_total, T* u, int64_t ocb_begin,
                          int64_t ocb_end);
  void (*winograd_input)(const PaddedNhwc<T>& x, const ConvParams& p, int m, int64_t first,
                         int64_t count, T* v, int64_t t_begin, int64_t t_end);
  // Task = (xi, output-channel block); tiles of the chunk in groups of mr.
  void (*winograd_gemm)(const T* v, const T* u, const ConvParams& p, int m, int64_t count, T* mm,
                        int64_t task_begin, int64_t task_end);
  // Returns false when an output it kept (before the epilogue) is Inf or NaN.
  // A 5x5 layer (winograd_pieces): its weight as four 3x3 pieces, u[xi][ocb][piece][ic][nr];
  // v holds the extended grid's tiles (see winograd_ext_row) of the chunk's tile rows and the
  // row after each, vcount of them; the chunk (first, count) is whole tile rows of the output.
  void (*winograd_gemm5)(const T* v, int64_t vcount, const T* u, const ConvParams& p, int64_t first, int64_t count,
                         T* mm, int64_t task_begin, int64_t task_end);
  bool (*winograd_output)(const T* mm, const ConvParams& p, int m, int64_t first, int64_t count,
                          const Epilogue<T>& ep, T* y, Strides4 ys, int64_t t_begin, int64_t t_end);

  // Weight gradient by F(2x2, 3x3)'s dual tile (m = 2 only), tiles numbered as above:
  //   gw = G^T [ sum over tiles (A dY A^T) .* (B^T d B) ] G,   A = AT^T
  // with the input tiles' B^T d B from winograd_input (v) and, from the output gradient
  // (channels_last: go[n][oh][ow][oc] at gs), vg[xi][count][OC]. The GEMM sums the chunk
  // into mw[xi][OC][Cp] (Cp = C rounded up to nr; the first chunk starts it from zero); task =
  // (xi, input-channel block of nr, output-channel block of mr), output-channel block fastest.
  // The output transform writes gw (OC, 3, 3, C) for output channels [oc_begin, oc_end).
  void (*winograd_wgrad_go)(const T* go, Strides4 gs, const ConvParams& p, int64_t first, int64_t count,
                            T* vg, int64_t t_begin, int64_t t_end);
  void (*winograd_wgrad_gemm)(const T* vg, const T* v, const ConvParams& p, int64_t count, bool first_chunk,
                              T* mw, int64_t task_begin, int64_t task_end);
  void (*winograd_wgrad_output)(const T* mw, const ConvParams& p, T* gw, int64_t oc_begin, int64_t oc_end);
};

const ConvKernels<float>* conv_kernels_avx512_float();
const ConvKernels<double>* conv_kernels_avx512_double();
const ConvKernels<float>* conv_kernels_avx2_float();
const ConvKernels<double>* conv_kernels_avx2_double();
const ConvKernels<float>* conv_kernels_default_float();
const ConvKernels<double>* conv_kernels_default_double();

}  // namespace conv
}  // namespace fastconv
