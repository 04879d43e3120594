// Pooling geometry shared by the CPU kernels and (later) the CUDA kernels: the parameter
// block every kernel takes, and the window bounds of one output cell. Raw integers only.
#pragma once

#include <cstdint>

#include "../../common/macros.h"
#include "../../common/shape.h"

namespace fastconv {
namespace pool {

struct Pool2dParams {
  int64_t batch = 0;     // N (1 for unbatched input)
  int64_t channels = 0;  // C
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  bool count_include_pad = true;
  int64_t divisor_override = 0;  // 0: none
  // Set by the glue when the tensor being written is far larger than the caches: kernels then
  // write it with non-temporal stores (no read-for-ownership of each line).
  bool stream_output = false;
};

// Max pooling window along one axis: taps start, start + dilation, ... below end. The start
// is advanced past the padding by whole dilation steps, as torch does, so the argmax of a
// window whose every tap is -inf is its first in-bounds tap.
struct MaxWindow {
  int64_t start, end;
};
FASTCONV_HOST_DEVICE_INLINE MaxWindow max_window(int64_t o, int64_t stride, int64_t pad,
                                                 int64_t kernel, int64_t dilation, int64_t in) {
  int64_t start = o * stride - pad;
  const int64_t end_unclipped = start + (kernel - 1) * dilation + 1;
  const int64_t end = end_unclipped < in ? end_unclipped : in;
  if (start < 0) start += div_floor(-start + dilation - 1, dilation) * dilation;
  return {start, end};
}

// True if some output's max window holds no in-bounds tap (padding with dilation can do
// that); such a window's argmax is torch's placeholder, not a tap of the window.
static inline bool has_empty_max_window(const Pool2dParams& p) {
  for (int64_t o = 0; o < p.out_h; ++o) {
    const MaxWindow w = max_window(o, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
    if (w.start >= w.end) return true;
  }
  for (int64_t o = 0; o < p.out_w; ++o) {
    const MaxWindow w = max_window(o, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w);
    if (w.start >= w.end) return true;
  }
  return false;
}

// Average pooling window along one axis (no dilation) and its share of the divisor:
// count_include_pad counts padding cells (but not cells past the padding that ceil_mode
// adds), otherwise only in-bounds cells. The divisor of a 2-D window is the product of the
// two axes' shares, so it can be computed per row and per column.
struct AvgWindow {
  int64_t start, end, count;
};
FASTCONV_HOST_DEVICE_INLINE AvgWindow avg_window(int64_t o, int64_t stride, int64_t pad,
                                                 int64_t kernel, int64_t in,
                                                 bool count_include_pad) {
  int64_t start = o * stride - pad;
  int64_t end = start + kernel < in + pad ? start + kernel : in + pad;
  const int64_t padded_count = end - start;
  if (start < 0) start = 0;
  if (end > in) end = in;
  return {start, end, count_include_pad ? padded_count : end - start};
}

// Output columns [lo, hi) whose whole window lies inside the input, so vector code needs no
// bounds checks there.
struct InteriorRange {
  int64_t lo, hi;
};
FASTCONV_HOST_DEVICE_INLINE InteriorRange interior_outputs(int64_t out, int64_t stride,
                                                           int64_t pad, int64_t kernel,
                                                           int64_t dilation, int64_t in) {
  const int64_t lo = (pad + stride - 1) / stride;
  const int64_t last_start = in - 1 - (kernel - 1) * dilation + pad;  // largest o*stride allowed
  int64_t hi = last_start < 0 ? 0 : last_start / stride + 1;
  if (hi > out) hi = out;
  return {lo < hi ? lo : hi, hi};
}

// Outputs [first, last] (empty when first > last) of a sliding window whose span
// [o * stride - pad, o * stride - pad + (kernel - 1) * dilation] holds input index i, clipped
// to [0, out). With dilation some of them step over i; a backward gather that checks what
// it reads (an argmax) or that runs without dilation (average) can loop over them all.
struct OutputRange {
  int64_t first, last;
};
FASTCONV_HOST_DEVICE_INLINE OutputRange outputs_covering(int64_t i, int64_t stride, int64_t pad,
                                                         int64_t kernel, int64_t dilation,
                                                         int64_t out) {
  const int64_t lowest = i + pad - (kernel - 1) * dilation;  // o * stride may not be below it
  const int64_t first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
  const int64_t last = (i + pad) / stride;  // i + pad >= 0
  return {first, last < out - 1 ? last : out - 1};
}

// Adaptive pooling: the outputs [first, last] of `out` whose bin [adaptive_start,
// adaptive_end) of `in` holds input index i (0 <= i < in). Exact, and never empty when out > 0:
// start(o) <= i  <=>  o * in <= (i + 1) * out - 1, and end(o) > i  <=>  o >= i * out / in.
FASTCONV_HOST_DEVICE_INLINE OutputRange adaptive_outputs_covering(int64_t i, int64_t out, int64_t in) {
  const int64_t first = (i * out) / in;
  const int64_t last = ((i + 1) * out - 1) / in;
  return {first, last < out - 1 ? last : out - 1};
}

}  // namespace pool
}  // namespace fastconv
