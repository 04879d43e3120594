// conv2d shape and index math, shared by the CPU and CUDA code.
//
// Padding is four-sided (top, bottom, left, right) so that padding='same' with an even kernel
// (torch pads the extra row / column at the bottom / right) needs no copy in Python.
//
//   OH = (H + pt + pb - dh * (KH - 1) - 1) / sh + 1        (likewise OW)
//   y[n][g*OCg + o][oh][ow] = sum_{ic < ICg, kh, kw} w[g*OCg + o][ic][kh][kw]
//                              * x[n][g*ICg + ic][oh*sh + kh*dh - pt][ow*sw + kw*dw - pl]
//
// The input gradient of a stride-1 convolution is itself a stride-1 convolution of the
// output gradient, padded by d*(K-1) - p on each side (negative: cropped), with the weight
// flipped in both spatial axes and its channel axes swapped (per group). Strided layers
// scatter instead (see conv_kernels_impl.h).
#pragma once

#include <cstdint>

#include "../../common/macros.h"

namespace fastconv {
namespace conv {

struct ConvParams {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t OC = 0, KH = 1, KW = 1;      // weight (OC, C / groups, KH, KW)
  int64_t OH = 0, OW = 0;              // output
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pb = 0, pl = 0, pr = 0;
  int64_t groups = 1;
  int64_t icg() const { return C / groups; }
  int64_t ocg() const { return OC / groups; }
};

FASTCONV_HOST_DEVICE_INLINE int64_t conv_output_size(int64_t in, int64_t pad_lo, int64_t pad_hi,
                                                     int64_t kernel, int64_t stride,
                                                     int64_t dilation) {
  const int64_t span = in + pad_lo + pad_hi - dilation * (kernel - 1) - 1;
  return span < 0 ? -1 : span / stride + 1;  // -1: the kernel does not fit (an error)
}

// The padding of the output gradient that turns a stride-1 input gradient into a forward
// convolution: d*(K-1) - p (may be negative, meaning crop).
FASTCONV_HOST_DEVICE_INLINE int64_t transposed_pad(int64_t pad, int64_t kernel, int64_t dilation) {
  return dilation * (kernel - 1) - pad;
}

}  // namespace conv
}  // namespace fastconv
