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

// Layers Winograd can run: 3x3 or 5x5, stride 1, dilation 1, one group.
FASTCONV_HOST_DEVICE_INLINE bool winograd_applies(int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                                  int64_t dh, int64_t dw, int64_t groups) {
  return kh == kw && (kh == 3 || kh == 5) && sh == 1 && sw == 1 && dh == 1 && dw == 1 && groups == 1;
}

// A 5x5 filter runs as four 3x3 pieces through F(2x2, 3x3), piece (a, b) (a, b in {0, 1})
// at tap offset (2a, 2b): output tile (th, tw) needs input tile (th + a, tw + b), a tile of
// the same 2-pixel grid, so one input transform serves all four and their products add up
// before a single output transform. 16 multiplies per output where the direct sum takes 25,
// each through F(2x2, 3x3)'s transforms (the direct path's error level, unlike F(2x2, 5x5)'s
// 6x6 tile). The pieces overlap in row and column 2; those taps go to the a = 0 / b = 0 piece.
FASTCONV_HOST_DEVICE_INLINE int64_t winograd_pieces(int64_t k) { return k == 5 ? 4 : 1; }

// The filter tap of a piece's tap i (0..2) along one axis, a the piece's offset (0, 1); -1
// where that piece holds a zero.
FASTCONV_HOST_DEVICE_INLINE int64_t winograd_piece_tap(int64_t a, int64_t i) { return a == 0 || i > 0 ? 2 * a + i : -1; }

// The 5x5 layer's extended tile grid has th_n + 1 tile rows per image (the pieces with a = 1
// read one below the last); the extended row of output tile row r = n * th_n + th.
FASTCONV_HOST_DEVICE_INLINE int64_t winograd_ext_row(int64_t r, int64_t th_n) { return r / th_n * (th_n + 1) + r % th_n; }

FASTCONV_HOST_DEVICE_INLINE int64_t winograd_tiles(int64_t out, int64_t m) { return (out + m - 1) / m; }

}  // namespace conv
}  // namespace fastconv
