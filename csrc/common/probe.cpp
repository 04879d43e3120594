#include "probe.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_capability.h"

namespace fastconv {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

float fma_loop(int64_t iters, double* flops) {
  switch (current_cpu_capability()) {
    case CpuCapability::AVX512: return probe::fma_loop_avx512(iters, flops);
    case CpuCapability::AVX2: return probe::fma_loop_avx2(iters, flops);
    default: return probe::fma_loop_default(iters, flops);
  }
}

void copy_floats(const float* src, float* dst, int64_t n) {
  switch (current_cpu_capability()) {
    case CpuCapability::AVX512: probe::copy_floats_avx512(src, dst, n); break;
    case CpuCapability::AVX2: probe::copy_floats_avx2(src, dst, n); break;
    default: probe::copy_floats_default(src, dst, n); break;
  }
}

}  // namespace

double probe_fma_gflops(int64_t threads) {
  TORCH_CHECK_VALUE(threads >= 1, "probe_fma_gflops: threads must be >= 1, got ", threads);
  const int64_t iters = 20'000'000;
  std::vector<double> flops(threads, 0.0);
  std::vector<float> sink(threads, 0.f);
  double best = 0.0;
  // Best of 3: the machine is shared, and a peak is a best case by definition.
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) sink[t] += fma_loop(iters, &flops[t]);
    });
    const double s = seconds_since(t0);
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}

double probe_copy_gbps(int64_t nbytes, int64_t threads) {
  TORCH_CHECK_VALUE(nbytes >= 4096, "probe_copy_gbps: nbytes must be >= 4096, got ", nbytes);
  TORCH_CHECK_VALUE(threads >= 1, "probe_copy_gbps: threads must be >= 1, got ", threads);
  const int64_t n = nbytes / static_cast<int64_t>(sizeof(float));
  std::unique_ptr<float[]> src(new float[n]), dst(new float[n]);
  std::memset(src.get(), 1, n * sizeof(float));
  std::memset(dst.get(), 0, n * sizeof(float));  // fault the pages in before timing
  const int64_t chunk = (n + threads - 1) / threads;
  // Median of 7, not the best: DRAM bandwidth on a shared host swings both ways (a 2-thread
  // best-of-5 once read 86 GB/s against a typical 48), and the roofline should describe what
  // the kernels will see during the run.
  std::vector<double> rates;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = Clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
        if (lo < hi) copy_floats(src.get() + lo, dst.get() + lo, hi - lo);
      }
    });
    const double s = seconds_since(t0);
    rates.push_back(2.0 * n * sizeof(float) / s / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace fastconv
