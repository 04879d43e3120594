// The CUDA kernels that share memory between threads (tiles, block reductions), run by the SIMT
// emulator without torch, against naive loops. Built three ways (CMakeLists.txt):
//   fibers (the default backend), fibers + AddressSanitizer / UBSan (make sanitize), and
//   the threads backend + ThreadSanitizer, where a missing __syncthreads is a reported race.
// The element-wise kernels (no shared memory, no cross-thread traffic) are covered by the
// Python tests against the CPU ops (tests/test_simt.py).
#ifndef FASTCONV_SIMT_EMU
#define FASTCONV_SIMT_EMU 1
#endif
#include "ops/conv/conv_cuda.cu"
#include "ops/se/se_cuda.cu"
#include "ops/bn/bn_cuda.cu"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

int g_failures = 0;
int g_checks = 0;

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ++g_checks;
  if (got.size() != want.size()) {
    std::printf("FAIL %s: %zu values, expected %zu\n", what, got.size(), want.size());
    ++g_failures;
    return;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol * (1.0 + std::fabs(want[i])))) {
      std::printf("FAIL %s: [%zu] = %.12g, expected %.12g\n", what, i, got[i], want[i]);
      ++g_failures;
      return;
    }
  }
}

void expect_ok(cudaError_t e, const char* what) {
  ++g_checks;
  if (e != cudaSuccess) {
    std::printf("FAIL %s: %s (%s)\n", what, cudaGetErrorString(e), fastconv_simt_last_message());
    ++g_failures;
  }
}

std::vector<double> random_vector(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

using fastconv::conv::ConvParams;

ConvParams make_conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OC, int64_t K, int64_t stride, int64_t pad,
                     int64_t dil, int64_t groups) {
  ConvParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.OC = OC, p.KH = K, p.KW = K;
  p.sh = p.sw = stride, p.dh = p.dw = dil, p.pt = p.pb = p.pl = p.pr = pad, p.groups = groups;
  p.OH = fastconv::conv::conv_output_size(H, pad, pad, K, stride, dil);
  p.OW = fastconv::conv::conv_output_size(W, pad, pad, K, stride, dil);
  return p;
}

// The convolution as a sum over every (output, tap) pair; the three gradients come from the same loop.
void naive_conv(const ConvParams& p, const std::vector<double>& x, const std::vector<double>& w,
                const std::vector<double>& gy, std::vector<double>* y, std::vector<double>* gx,
                std::vector<double>* gw, std::vector<double>* gb) {
  const int64_t icg = p.C / p.groups, ocg = p.OC / p.groups;
  y->assign(p.N * p.OC * p.OH * p.OW, 0.0);
  gx->assign(x.size(), 0.0);
  gw->assign(w.size(), 0.0);
  gb->assign(p.OC, 0.0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t oc = 0; oc < p.OC; ++oc)
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const int64_t yi = ((n * p.OC + oc) * p.OH + oh) * p.OW + ow;
          (*gb)[oc] += gy[yi];
          const int64_t g = oc / ocg;
          for (int64_t ic = 0; ic < icg; ++ic)
            for (int64_t kh = 0; kh < p.KH; ++kh)
              for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t ih = oh * p.sh - p.pt + kh * p.dh, iw = ow * p.sw - p.pl + kw * p.dw;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                const int64_t xi = ((n * p.C + g * icg + ic) * p.H + ih) * p.W + iw;
                const int64_t wi = ((oc * icg + ic) * p.KH + kh) * p.KW + kw;
                (*y)[yi] += x[xi] * w[wi];
                (*gx)[xi] += gy[yi] * w[wi];
                (*gw)[wi] += gy[yi] * x[xi];
              }
        }
}

void test_conv(const ConvParams& p, std::mt19937& rng) {
  const int64_t icg = p.C / p.groups;
  const auto x = random_vector(p.N * p.C * p.H * p.W, rng);
  const auto w = random_vector(p.OC * icg * p.KH * p.KW, rng);
  const auto gy = random_vector(p.N * p.OC * p.OH * p.OW, rng);
  std::vector<double> y, gx, gw, gb;
  naive_conv(p, x, w, gy, &y, &gx, &gw, &gb);
  std::vector<double> y2(y.size()), gx2(gx.size()), gw2(gw.size()), gb2(gb.size());
  std::vector<double> work(fastconv::conv::cuda::weight_grad_workspace(p));
  namespace k = fastconv::conv::cuda;
  expect_ok(k::forward<double>(p, x.data(), w.data(), nullptr, nullptr, nullptr, false, y2.data(), nullptr), "forward");
  expect_ok(k::input_grad<double>(p, gy.data(), w.data(), gx2.data(), nullptr), "input_grad");
  expect_ok(k::weight_grad<double>(p, gy.data(), x.data(), gw2.data(), work.data(), nullptr), "weight_grad");
  expect_ok(k::bias_grad<double>(p, gy.data(), gb2.data(), nullptr), "bias_grad");
  expect_close(y2, y, 1e-12, "conv forward");
  expect_close(gx2, gx, 1e-12, "conv input grad");
  expect_close(gw2, gw, 1e-12, "conv weight grad");
  expect_close(gb2, gb, 1e-12, "conv bias grad");
}

// The SE block and its backward against the formulas in se_cuda.h (no ReLU tail).
void test_se(int64_t N, int64_t C, int64_t HW, int64_t squeezed, std::mt19937& rng) {
  fastconv::se::SeParams p;
  p.batch = N, p.channels = C, p.inner = HW;
  const auto x = random_vector(N * C * HW, rng), g = random_vector(N * C * HW, rng);
  const auto w1 = random_vector(squeezed * C, rng), b1 = random_vector(squeezed, rng);
  const auto w2 = random_vector(C * squeezed, rng), b2 = random_vector(C, rng);
  std::vector<double> pooled(N * C), hidden(N * squeezed), scale(N * C), y(N * C * HW);
  std::vector<double> gs(N * C), dz2(N * C), dz1(N * squeezed), shift(N * C), gx(N * C * HW);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, t = 0;
      for (int64_t i = 0; i < HW; ++i) {
        s += x[(n * C + c) * HW + i];
        t += g[(n * C + c) * HW + i] * x[(n * C + c) * HW + i];
      }
      pooled[n * C + c] = s / double(HW);
      gs[n * C + c] = t;
    }
    for (int64_t j = 0; j < squeezed; ++j) {
      double z = b1[j];
      for (int64_t c = 0; c < C; ++c) z += w1[j * C + c] * pooled[n * C + c];
      hidden[n * squeezed + j] = z > 0 ? z : 0;
    }
    for (int64_t c = 0; c < C; ++c) {
      double z = b2[c];
      for (int64_t j = 0; j < squeezed; ++j) z += w2[c * squeezed + j] * hidden[n * squeezed + j];
      const double sc = 1 / (1 + std::exp(-z));
      scale[n * C + c] = sc;
      dz2[n * C + c] = gs[n * C + c] * sc * (1 - sc);
      for (int64_t i = 0; i < HW; ++i) y[(n * C + c) * HW + i] = x[(n * C + c) * HW + i] * sc;
    }
    for (int64_t j = 0; j < squeezed; ++j) {
      double d = 0;
      for (int64_t c = 0; c < C; ++c) d += w2[c * squeezed + j] * dz2[n * C + c];
      dz1[n * squeezed + j] = hidden[n * squeezed + j] > 0 ? d : 0;
    }
    for (int64_t c = 0; c < C; ++c) {
      double d = 0;
      for (int64_t j = 0; j < squeezed; ++j) d += w1[j * C + c] * dz1[n * squeezed + j];
      for (int64_t i = 0; i < HW; ++i)
        gx[(n * C + c) * HW + i] = g[(n * C + c) * HW + i] * scale[n * C + c] + d / double(HW);
    }
  }
  namespace k = fastconv::se::cuda;
  std::vector<double> y2(y.size()), pooled2(pooled.size()), hidden2(hidden.size()), scale2(scale.size());
  expect_ok(k::squeeze_excitation<double>(x.data(), w1.data(), b1.data(), w2.data(), b2.data(), nullptr, y2.data(),
                                          pooled2.data(), hidden2.data(), scale2.data(), p, squeezed, nullptr),
            "squeeze_excitation");
  expect_close(pooled2, pooled, 1e-12, "se pooled");
  expect_close(hidden2, hidden, 1e-12, "se hidden");
  expect_close(scale2, scale, 1e-12, "se scale");
  expect_close(y2, y, 1e-12, "se output");
  std::vector<double> gx2(gx.size()), dz1_2(dz1.size()), dz2_2(dz2.size()), shift2(shift.size()), gs2(gs.size());
  expect_ok(k::squeeze_excitation_backward<double>(g.data(), x.data(), w1.data(), w2.data(), hidden.data(),
                                                   scale.data(), nullptr, gx2.data(), nullptr, dz1_2.data(),
                                                   dz2_2.data(), shift2.data(), p, squeezed, nullptr),
            "squeeze_excitation_backward");
  expect_close(dz2_2, dz2, 1e-12, "se dz2");
  expect_close(dz1_2, dz1, 1e-12, "se dz1");
  expect_close(gx2, gx, 1e-12, "se grad_input");
  expect_ok(k::channel_scale_grad_scale<double>(g.data(), x.data(), nullptr, gs2.data(), nullptr, p, nullptr),
            "channel_scale_grad_scale");
  expect_close(gs2, gs, 1e-12, "channel_scale grad_scale");
}

// Training-mode BatchNorm + residual + ReLU: the block reductions over each channel's values.
void test_bn(int64_t N, int64_t C, int64_t HW, std::mt19937& rng) {
  fastconv::bn::BnParams p;
  p.batch = N, p.channels = C, p.inner = HW;
  const int64_t M = N * HW;
  auto x = random_vector(N * C * HW, rng);
  for (auto& v : x) v = 3.0 * v + 2.0;
  const auto r = random_vector(N * C * HW, rng), g = random_vector(N * C * HW, rng);
  const auto w = random_vector(C, rng), b = random_vector(C, rng);
  const double eps = 1e-5;
  std::vector<double> mean(C), var(C), y(x.size()), gx(x.size()), gw(C), gb(C), gr(x.size());
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) s += x[(n * C + c) * HW + i];
    mean[c] = s / double(M);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) q += (x[(n * C + c) * HW + i] - mean[c]) * (x[(n * C + c) * HW + i] - mean[c]);
    var[c] = q / double(M);
    const double is = 1 / std::sqrt(var[c] + eps);
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t e = (n * C + c) * HW + i;
        const double v = (x[e] - mean[c]) * is * w[c] + b[c] + r[e];
        y[e] = v > 0 ? v : 0;
        gr[e] = v > 0 ? g[e] : 0;
        s1 += gr[e];
        s2 += gr[e] * (x[e] - mean[c]);
      }
    gb[c] = s1;
    gw[c] = s2 * is;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t e = (n * C + c) * HW + i;
        gx[e] = w[c] * is * (gr[e] - s1 / double(M) - (x[e] - mean[c]) * is * is * s2 / double(M));
      }
  }
  namespace k = fastconv::bn::cuda;
  std::vector<double> y2(y.size()), mean2(C), var2(C), scratch(3 * C);
  expect_ok(k::batch_norm_act<double>(x.data(), w.data(), b.data(), r.data(), y2.data(), mean2.data(), var2.data(),
                                      scratch.data(), true, eps, p, nullptr),
            "batch_norm_act");
  expect_close(mean2, mean, 1e-12, "bn mean");
  expect_close(var2, var, 1e-12, "bn var");
  expect_close(y2, y, 1e-10, "bn output");
  std::vector<double> gx2(gx.size()), gw2(C), gb2(C), gr2(gr.size());
  expect_ok(k::batch_norm_act_backward<double>(g.data(), x.data(), w.data(), mean.data(), var.data(), y.data(),
                                               gx2.data(), gw2.data(), gb2.data(), gr2.data(), scratch.data(), eps, p,
                                               nullptr),
            "batch_norm_act_backward");
  expect_close(gb2, gb, 1e-10, "bn grad_bias");
  expect_close(gw2, gw, 1e-10, "bn grad_weight");
  expect_close(gr2, gr, 0, "bn grad_residual");
  expect_close(gx2, gx, 1e-9, "bn grad_input");
}

// ---------------------------------------------------------------------------- the emulator itself
// The CUDA features no kernel of ours uses yet, so that one can start using them with the
// emulator already proven: warp shuffles, __syncwarp, dynamic shared memory, atomicAdd, and
// the driver's launch checks.

__global__ void warp_sums(const double* x, double* by_shuffle, double* by_xor, double* prefix) {
  const int t = threadIdx.x;
  double v = x[blockIdx.x * blockDim.x + t];
  double s = v;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  double a = v;
  for (int m = 16; m > 0; m >>= 1) a += __shfl_xor_sync(0xffffffffu, a, m);
  double p = v;  // inclusive prefix sum within the warp
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(0xffffffffu, p, o);
    if ((t & 31) >= o) p += up;
  }
  if ((t & 31) == 0) by_shuffle[(blockIdx.x * blockDim.x + t) / 32] = s;
  by_xor[blockIdx.x * blockDim.x + t] = a;
  prefix[blockIdx.x * blockDim.x + t] = p;
}

__global__ void reverse_dynamic(const float* x, float* y, int n) {
  FASTCONV_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  if (t < n) tile[t] = x[t];
  __syncwarp();
  __syncthreads();
  if (t < n) y[t] = tile[n - 1 - t];
}

__global__ void count_into(int* counter, float* total) {
  atomicAdd(counter, 1);
  atomicAdd(total, 0.5f);
}

// Lanes 32..39 wait at the block barrier, lanes 40..63 of the same warp at a warp barrier:
// neither can complete (a hang on a GPU).
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 40) __syncthreads();
  else __syncwarp();
  out[threadIdx.x] = 1;
}

void test_emulator(std::mt19937& rng) {
  const int blocks = 2, threads = 96;  // three warps per block
  const auto x = random_vector(blocks * threads, rng);
  std::vector<double> shuffle(blocks * threads / 32), xr(x.size()), prefix(x.size());
  auto k1 = &warp_sums;
  expect_ok(FASTCONV_LAUNCH(k1, dim3(blocks), dim3(threads), 0, nullptr, x.data(), shuffle.data(), xr.data(),
                            prefix.data()),
            "warp_sums");
  std::vector<double> want_sum(shuffle.size()), want_xor(x.size()), want_prefix(x.size());
  for (size_t w = 0; w < shuffle.size(); ++w) {
    double s = 0;
    for (int l = 0; l < 32; ++l) {
      s += x[w * 32 + l];
      want_prefix[w * 32 + l] = s;
    }
    want_sum[w] = s;
    for (int l = 0; l < 32; ++l) want_xor[w * 32 + l] = s;
  }
  expect_close(shuffle, want_sum, 1e-12, "__shfl_down_sync warp sum");
  expect_close(xr, want_xor, 1e-12, "__shfl_xor_sync butterfly");
  expect_close(prefix, want_prefix, 1e-12, "__shfl_up_sync prefix sum");

  std::vector<float> in(50), out(50);
  for (int i = 0; i < 50; ++i) in[i] = float(i);
  auto k2 = &reverse_dynamic;
  expect_ok(FASTCONV_LAUNCH(k2, dim3(1), dim3(64), 50 * sizeof(float), nullptr, in.data(), out.data(), 50),
            "reverse_dynamic");
  std::vector<double> got(out.begin(), out.end()), want(50);
  for (int i = 0; i < 50; ++i) want[i] = 49 - i;
  expect_close(got, want, 0, "dynamic shared memory");

  int counter = 0;
  float total = 0;
  auto k3 = &count_into;
  expect_ok(FASTCONV_LAUNCH(k3, dim3(3, 2), dim3(8, 4), 0, nullptr, &counter, &total), "count_into");
  expect_close({double(counter), double(total)}, {192.0, 96.0}, 0, "atomicAdd over a 2-D grid of 2-D blocks");

  // The driver's checks: nothing runs, the error is returned and then cleared.
  ++g_checks;
  const cudaError_t bad_grid = FASTCONV_LAUNCH(k3, dim3(0), dim3(32), 0, nullptr, &counter, &total);
  const cudaError_t bad_block = FASTCONV_LAUNCH(k3, dim3(1), dim3(2048), 0, nullptr, &counter, &total);
  const cudaError_t sticky = cudaGetLastError(), cleared = cudaGetLastError();
  if (bad_grid != cudaErrorInvalidConfiguration || bad_block != cudaErrorInvalidConfiguration ||
      sticky != cudaErrorInvalidConfiguration || cleared != cudaSuccess || counter != 192) {
    std::printf("FAIL launch checks: %d %d %d %d, counter %d\n", bad_grid, bad_block, sticky, cleared, counter);
    ++g_failures;
  }
#if !defined(FASTCONV_SIMT_THREADS)
  // Fibers see the deadlock and fail the launch; the threads backend would wait (then abort).
  ++g_checks;
  std::vector<int> flags(64);
  auto k4 = &divergent_barrier;
  const cudaError_t dead = FASTCONV_LAUNCH(k4, dim3(1), dim3(64), 0, nullptr, flags.data());
  const std::string why = fastconv_simt_last_message();
  if (dead != cudaErrorLaunchFailure || cudaGetLastError() != cudaErrorLaunchFailure ||
      why.find("deadlock") == std::string::npos) {
    std::printf("FAIL divergent __syncthreads not reported: %d '%s'\n", dead, why.c_str());
    ++g_failures;
  }
#endif
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  test_emulator(rng);
  test_conv(make_conv(2, 3, 9, 7, 5, 3, 1, 1, 1, 1), rng);     // partial tiles
  test_conv(make_conv(1, 8, 5, 5, 65, 1, 1, 0, 1, 1), rng);    // 1x1 GEMM path, a second column tile
  test_conv(make_conv(2, 4, 8, 8, 4, 3, 2, 1, 2, 2), rng);     // groups, stride, dilation
  test_conv(make_conv(2, 2, 24, 24, 3, 3, 1, 1, 1, 1), rng);   // weight grad split into slices
  test_se(2, 5, 37, 2, rng);                                    // a plane smaller than a block
  test_se(1, 3, 700, 1, rng);                                   // a plane of several block strides
  test_bn(3, 4, 37, rng);                                       // fewer values per channel than threads
  test_bn(2, 3, 300, rng);                                      // several block strides per channel
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
