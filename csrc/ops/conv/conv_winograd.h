// Winograd minimal filtering F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016), shared by the CPU and CUDA code.
//
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A        d: (m+2) x (m+2) input tile, g: 3 x 3 filter
//
// F(2x2, 3x3) multiplies 16 times per 4 outputs instead of 36 (2.25x fewer) with an error at
// the direct convolution's level; F(4x4, 3x3) multiplies 36 times per 16 outputs (4x fewer)
// but its transforms have coefficients up to 8 and 1/24, and float32 error grows by roughly
// an order of magnitude (measured in tests/test_conv.py), so it is opt-in only.
#pragma once

#include "../../common/macros.h"

namespace fastconv {
namespace conv {

template <int M>
struct Winograd;

template <>
struct Winograd<2> {
  static constexpr int A = 4;  // tile side, m + r - 1
  static constexpr double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  // The weight gradient's transforms (the dual tile, F(3x3, 2x2)): the output gradient's 2x2
  // tile goes in through A = AT^T, the summed products come out through G^T.
  static constexpr double ATT[4][2] = {{1, 0}, {1, 1}, {1, -1}, {0, -1}};
  static constexpr double GT[3][4] = {{1, 0.5, 0.5, 0}, {0, 0.5, -0.5, 0}, {0, 0.5, 0.5, 1}};
};

template <>
struct Winograd<4> {
  static constexpr int A = 6;
  static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},   {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0},  {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0},  {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                    {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                    {0, 0, 1}};
  static constexpr double AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// Layers Winograd can run: 3x3, stride 1, dilation 1, one group.
FASTCONV_HOST_DEVICE_INLINE bool winograd_applies(int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                                  int64_t dh, int64_t dw, int64_t groups) {
  return kh == 3 && kw == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && groups == 1;
}

FASTCONV_HOST_DEVICE_INLINE int64_t winograd_tiles(int64_t out, int64_t m) { return (out + m - 1) / m; }

}  // namespace conv
}  // namespace fastconv
