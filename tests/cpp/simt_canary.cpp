// Two deliberately broken kernels that prove the emulator's sanitizer builds catch what they
// are there to catch (ctest expects the sanitizer's report in the output):
//   race   a shared-memory reversal without the __syncthreads between the writes and the
//          reads: ThreadSanitizer on the threads backend reports the data race.
//   oob    an off-by-one bound that reads one element past a heap buffer: AddressSanitizer
//          reports the heap-buffer-overflow.
#ifndef FASTCONV_SIMT_EMU
#define FASTCONV_SIMT_EMU 1
#endif
#include "common/simt.h"

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

constexpr int kThreads = 64;

__global__ void reverse_missing_sync(const float* in, float* out) {
  __shared__ float tile[kThreads];
  tile[threadIdx.x] = in[blockIdx.x * kThreads + threadIdx.x];
  // The bug: a __syncthreads() belongs here.
  out[blockIdx.x * kThreads + threadIdx.x] = tile[kThreads - 1 - threadIdx.x];
}

__global__ void copy_off_by_one(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i < n ? i : n - 1] = in[i];  // the bug: i <= n reads in[n]
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "race") == 0) {
    std::vector<float> in(2 * kThreads, 1.0f), out(2 * kThreads);
    auto k = &reverse_missing_sync;
    const cudaError_t e = FASTCONV_LAUNCH(k, dim3(2), dim3(kThreads), 0, nullptr, in.data(), out.data());
    std::printf("race canary ran: %s\n", cudaGetErrorString(e));
    return 0;
  }
  if (std::strcmp(mode, "oob") == 0) {
    const int n = 100;
    float* in = new float[n];
    for (int i = 0; i < n; ++i) in[i] = float(i);
    std::vector<float> out(n);
    auto k = &copy_off_by_one;
    const cudaError_t e = FASTCONV_LAUNCH(k, dim3(4), dim3(32), 0, nullptr, in, out.data(), n);
    std::printf("oob canary ran: %s\n", cudaGetErrorString(e));
    delete[] in;
    return 0;
  }
  std::fprintf(stderr, "usage: %s race|oob\n", argv[0]);
  return 2;
}
