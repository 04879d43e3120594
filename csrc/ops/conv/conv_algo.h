// Which conv2d algorithm runs: chosen per shape by a heuristic (conv_cpu.cpp), or forced by
// FASTCONV_CONV_ALGO / fastconv.set_conv_algo for testing and benchmarking.
#pragma once

#include <cstdint>
#include <string>

namespace fastconv {
namespace conv {

enum class ConvAlgo { Auto, Direct, Gemm1x1, Winograd, Winograd4, NchwDirect };

ConvAlgo forced_conv_algo();
// "auto", "direct", "gemm1x1", "winograd" (F(2x2,3x3)) or "winograd4" (F(4x4,3x3)), "nchw" (pixels-in-lanes direct); anything else is a ValueError naming the choices.
void set_conv_algo(const std::string& name);
std::string conv_algo_name();
// The budget of the row bands conv2d pads its input and transposes its output through
// (512 KB by default); returns the previous one. For tests, which cut small layers into many
// bands.
int64_t set_conv_band_bytes(int64_t bytes);

}  // namespace conv
}  // namespace fastconv
