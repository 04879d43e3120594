// When a tensor is too large to stay in the caches: from 16 MB, well past any core's L2 and
// half of a 32 MB L3. An output that size is written with non-temporal (streaming) stores,
// since it would be evicted before the next layer reads it and an ordinary store first reads
// every line it fills (a third of the traffic of a read-one-write-one pass); an input that
// size comes from DRAM, so the 1x1 convolution prefetches it ahead of its packing loop. One
// rule for every op that asks (pooling, SE, BatchNorm, the 1x1 convolutions).
#pragma once

#include <cstdint>

namespace fastconv {

constexpr int64_t kStreamingBytes = int64_t(16) << 20;

inline bool streams_past_caches(int64_t bytes) { return bytes >= kStreamingBytes; }

}  // namespace fastconv
