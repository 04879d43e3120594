// When an op writes its output with non-temporal (streaming) stores: from 16 MB, well past
// any core's L2 and half of a 32 MB L3, the output would be evicted before the next layer
// reads it, and an ordinary store first reads every line it fills (a third of the traffic
// of a read-one-write-one pass). One rule for every op that streams (pooling, SE,
// BatchNorm, the 1x1 convolutions' output).
#pragma once

#include <cstdint>

namespace fastconv {

constexpr int64_t kStreamingBytes = int64_t(16) << 20;

inline bool streams_past_caches(int64_t output_bytes) { return output_bytes >= kStreamingBytes; }

}  // namespace fastconv
