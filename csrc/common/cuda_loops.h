// Loops shared by the CUDA kernels (nvcc, or g++ with the SIMT emulator of simt.h).
#pragma once

#include <cstdint>

#include "simt.h"

namespace fastconv {

// Blocks of `threads` for a grid-stride pass over `total` elements: one element per thread, at
// most `max_blocks` (the loop covers the rest).
inline int grid_blocks(int64_t total, int threads, int64_t max_blocks) {
  const int64_t b = (total + threads - 1) / threads;
  return static_cast<int>(b < max_blocks ? b : max_blocks);
}

// A grid-stride loop over the elements [0, total) of channels-first planes of `inner` elements:
// f(i, q, c) for each element i of this thread, with q = i / inner its plane and c = q % channels
// its channel, both tracked incrementally (one division per thread, none per element).
template <class F>
__device__ __forceinline__ void for_each_plane_element(int64_t total, int64_t inner, int64_t channels, F&& f) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  int64_t q = i / inner, j = i - q * inner, c = q % channels;
  const int64_t dq = stride / inner, dj = stride - dq * inner, dc = dq % channels;
  for (; i < total; i += stride) {
    f(i, q, c);
    q += dq;
    c += dc;
    j += dj;
    if (j >= inner) {
      j -= inner;
      ++q;
      ++c;
    }
    if (c >= channels) c -= channels;
  }
}

}  // namespace fastconv
