// C++ tests of the raw pooling and Squeeze-and-Excitation kernel tables (csrc/ops/pool/pool_kernels.h,
// csrc/ops/se/se_kernels.h), without torch.
//
// Every table this CPU can run (avx512 / avx2 / default, from detected_cpu_capability()),
// float and double, is checked against a naive reference written here from torch's CPU
// semantics:
//   max pool      window start advanced past the padding by whole dilation steps; the argmax
//                 starts at the first in-bounds tap; a tap replaces the best when it is greater
//                 or NaN (so ties keep the first tap, the last NaN wins, an all -inf window
//                 points at its first in-bounds tap); indices are h * W + w within the plane.
//                 A dilated window with no in-bounds tap gives -inf, argmax at its advanced
//                 start (possibly past the plane; backward then writes nothing for it).
//   avg pool      divisor = divisor_override, else the window clipped to the padded input
//                 (count_include_pad) or to the input.
//   adaptive avg  cell o covers [floor(o * in / out), ceil((o + 1) * in / out)).
//   backward      the gradient scattered over the same windows (max: onto the argmax).
// NCHW and NHWC, each kernel called on [begin, end) slices (last slice first, so a slice
// writing past its end is caught), inputs and outputs placed against PROT_NONE guard pages
// (inputs read-only) so out-of-bounds reads and writes fault; a fault is caught and reported
// as a failure of that case. Outputs start filled with a sentinel, so unwritten cells fail.
//
// Also checks pooling_output_size (csrc/common/shape.h) against hand-computed values, and the
// Squeeze-and-Excitation tables (csrc/ops/se/se_kernels.h) against a double-precision
// reference of the same formulas, on the same guarded buffers.
// Prints each failure (the first 40, or all with --all-failures) and a final line
// "N passed, M failed"; exit code 1 if anything failed.
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "common/cpu_capability.h"
#include "common/shape.h"
#include "ops/pool/pool_kernels.h"
#include "ops/se/se_kernels.h"

namespace {

using fastconv::CpuCapability;
using fastconv::pool::Pool2dParams;
using fastconv::pool::PoolKernels;

// ============================================================================ harness

int g_passed = 0;
int g_failed = 0;
int g_max_printed_failures = 40;  // --all-failures: no limit

void record(bool ok, const std::string& name, const std::string& detail = "") {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  if (g_max_printed_failures < 0 || g_failed <= g_max_printed_failures) {
    std::printf("FAIL %s\n%s", name.c_str(), detail.c_str());
  } else if (g_failed == g_max_printed_failures + 1) {
    std::printf("(further failures are counted but not printed; --all-failures prints them)\n");
  }
  std::fflush(stdout);
}

// Faults inside a kernel call jump back here instead of killing the run.
sigjmp_buf g_fault_jump;
volatile sig_atomic_t g_fault_armed = 0;

void on_fault(int sig) {
  if (g_fault_armed) {
    g_fault_armed = 0;
    siglongjmp(g_fault_jump, sig);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fault_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_fault;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

// Runs f(); returns 0, or the signal number if it faulted.
template <class F>
int run_guarded(F&& f) {
  const int sig = sigsetjmp(g_fault_jump, 1);
  if (sig != 0) return sig;
  g_fault_armed = 1;
  f();
  g_fault_armed = 0;
  return 0;
}

// Calls call(begin, end) on three slices of [0, units), last slice first.
template <class F>
int run_sliced(int64_t units, F&& call) {
  const int64_t cuts[4] = {0, units / 3, (2 * units) / 3, units};
  return run_guarded([&] {
    for (int i = 2; i >= 0; --i) call(cuts[i], cuts[i + 1]);
  });
}

// Memory with a PROT_NONE page on each side; the data sits flush against one of them.
enum class Align { Start, End };
const char* align_name(Align a) { return a == Align::Start ? "start" : "end"; }

template <class T>
class GuardedBuffer {
 public:
  GuardedBuffer(int64_t n, Align align) : n_(n) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    body_ = std::max<size_t>(page_, (bytes + page_ - 1) / page_ * page_);
    total_ = body_ + 2 * page_;
    void* m = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    base_ = static_cast<char*>(m);
    mprotect(base_, page_, PROT_NONE);
    mprotect(base_ + page_ + body_, page_, PROT_NONE);
    char* start = align == Align::Start ? base_ + page_ : base_ + page_ + body_ - bytes;
    data_ = reinterpret_cast<T*>(start);
  }
  ~GuardedBuffer() { munmap(base_, total_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return n_; }
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }
  void fill(T v) { std::fill(data_, data_ + n_, v); }
  void make_read_only() { mprotect(base_ + page_, body_, PROT_READ); }

 private:
  int64_t n_;
  size_t page_, body_, total_;
  char* base_;
  T* data_;
};

// splitmix64: deterministic on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

 private:
  uint64_t s_;
};

uint64_t g_seed_counter = 0;
Rng next_rng() { return Rng(0x5EED0000ull + 7919ull * ++g_seed_counter); }

// ============================================================================ layouts

enum class Layout { NCHW, NHWC };
const char* layout_name(Layout l) { return l == Layout::NCHW ? "nchw" : "nhwc"; }

struct Shape4 {
  int64_t n, c, h, w;
  int64_t numel() const { return n * c * h * w; }
};

int64_t offset(Layout l, const Shape4& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return l == Layout::NCHW ? ((n * s.c + c) * s.h + h) * s.w + w : ((n * s.h + h) * s.w + w) * s.c + c;
}

std::string coord(Layout l, const Shape4& s, int64_t i) {
  int64_t n, c, h, w;
  if (l == Layout::NCHW) {
    w = i % s.w; i /= s.w; h = i % s.h; i /= s.h; c = i % s.c; n = i / s.c;
  } else {
    c = i % s.c; i /= s.c; w = i % s.w; i /= s.w; h = i % s.h; n = i / s.h;
  }
  std::ostringstream o;
  o << "(n=" << n << ",c=" << c << ",h=" << h << ",w=" << w << ")";
  return o.str();
}

// ============================================================================ comparisons

template <class T>
bool same_value(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

template <class T>
bool close_value(T got, double want, double rtol, double atol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return static_cast<double>(got) == want;
  return std::fabs(static_cast<double>(got) - want) <= atol + rtol * std::fabs(want);
}

constexpr int kMaxListedMismatches = 6;

// Returns "" if equal, else a description of the first mismatches.
template <class T>
std::string diff_exact(const T* got, const T* want, Layout l, const Shape4& s) {
  std::ostringstream o;
  int64_t bad = 0;
  o.precision(9);
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (same_value(got[i], want[i])) continue;
    if (bad++ < kMaxListedMismatches)
      o << "    at " << coord(l, s, i) << ": expected " << want[i] << ", got " << got[i] << "\n";
  }
  if (bad == 0) return "";
  o << "    " << bad << " of " << s.numel() << " values differ\n";
  return o.str();
}

template <class T>
std::string diff_close(const T* got, const double* want, Layout l, const Shape4& s) {
  const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-12;
  std::ostringstream o;
  int64_t bad = 0;
  o.precision(std::is_same<T, float>::value ? 9 : 17);
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (close_value(got[i], want[i], tol, tol)) continue;
    if (bad++ < kMaxListedMismatches)
      o << "    at " << coord(l, s, i) << ": expected " << want[i] << ", got " << got[i] << "\n";
  }
  if (bad == 0) return "";
  o << "    " << bad << " of " << s.numel() << " values differ (rtol = atol = " << tol << ")\n";
  return o.str();
}

template <class I>
std::string diff_indices(const I* got, const int64_t* want, Layout l, const Shape4& s) {
  std::ostringstream o;
  int64_t bad = 0;
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (got[i] == want[i]) continue;
    if (bad++ < kMaxListedMismatches)
      o << "    index at " << coord(l, s, i) << ": expected " << want[i] << ", got " << got[i] << "\n";
  }
  if (bad == 0) return "";
  o << "    " << bad << " of " << s.numel() << " indices differ\n";
  return o.str();
}

std::string fault_detail(int sig) {
  return sig == 0 ? "" : std::string("    kernel faulted: ") + strsignal(sig) +
                             " (out-of-bounds access or write to the read-only input)\n";
}

// ============================================================================ reference

struct Window {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool ceil_mode;
};

// torch's output-size rule, written with floor/ceil of the real quotient (a different
// formulation from shape.h's integer version).
int64_t ref_output_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
  const double span = static_cast<double>(in + 2 * pad - dil * (k - 1) - 1);
  int64_t out = static_cast<int64_t>(ceil_mode ? std::ceil(span / stride) : std::floor(span / stride)) + 1;
  // ceil_mode: the last window must start inside the input or the left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// The arguments the ops accept (pool_shape_checks.h, torch's rule): padding at most half the
// undilated kernel, non-empty output.
bool window_valid(const Shape4& in, const Window& w) {
  if (w.ph > w.kh / 2 || w.pw > w.kw / 2) return false;
  return ref_output_size(in.h, w.kh, w.ph, w.sh, w.dh, w.ceil_mode) >= 1 &&
         ref_output_size(in.w, w.kw, w.pw, w.sw, w.dw, w.ceil_mode) >= 1;
}

Shape4 pooled_shape(const Shape4& in, const Window& w) {
  return {in.n, in.c, ref_output_size(in.h, w.kh, w.ph, w.sh, w.dh, w.ceil_mode),
          ref_output_size(in.w, w.kw, w.pw, w.sw, w.dw, w.ceil_mode)};
}

[[noreturn]] void reference_error(const char* what) {
  std::printf("reference error: %s\n", what);
  std::exit(2);
}

// Max pooling window taps along one axis: start, start + dil, ... < end. With dilation the
// window can hold no in-bounds tap at all (start >= end, e.g. taps at -1 and 2 of a row of 2);
// torch then outputs -inf with the argmax at the advanced start, start_h * W + start_w, even
// though that lies outside the window (in a later row, or past the plane).
void ref_max_axis(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t dil, int64_t in,
                  int64_t* start, int64_t* end) {
  int64_t s = o * stride - pad;
  *end = std::min(s + (k - 1) * dil + 1, in);
  while (s < 0) s += dil;
  *start = s;
}

// Whether some output's max window holds no in-bounds tap (along either axis).
bool has_empty_window(const Shape4& is, const Shape4& os, const Window& w) {
  int64_t start, end;
  for (int64_t o = 0; o < os.h; ++o) {
    ref_max_axis(o, w.sh, w.ph, w.kh, w.dh, is.h, &start, &end);
    if (start >= end) return true;
  }
  for (int64_t o = 0; o < os.w; ++o) {
    ref_max_axis(o, w.sw, w.pw, w.kw, w.dw, is.w, &start, &end);
    if (start >= end) return true;
  }
  return false;
}

template <class T>
void ref_max_fwd(Layout l, const Shape4& is, const Shape4& os, const Window& w, const T* in, T* out,
                 int64_t* idx) {
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          int64_t h0, h1, w0, w1;
          ref_max_axis(oh, w.sh, w.ph, w.kh, w.dh, is.h, &h0, &h1);
          ref_max_axis(ow, w.sw, w.pw, w.kw, w.dw, is.w, &w0, &w1);
          T best = -std::numeric_limits<T>::infinity();
          int64_t best_i = h0 * is.w + w0;
          for (int64_t ih = h0; ih < h1; ih += w.dh)
            for (int64_t iw = w0; iw < w1; iw += w.dw) {
              const T v = in[offset(l, is, n, c, ih, iw)];
              if (v > best || std::isnan(v)) {
                best = v;
                best_i = ih * is.w + iw;
              }
            }
          out[offset(l, os, n, c, oh, ow)] = best;
          idx[offset(l, os, n, c, oh, ow)] = best_i;
        }
}

// The gradient goes to the argmax cell; an index past the plane (a window wholly in the
// padding) carries none and must not be written through.
template <class T>
void ref_max_bwd(Layout l, const Shape4& is, const Shape4& os, const T* go, const int64_t* idx,
                 double* gi) {
  std::fill(gi, gi + is.numel(), 0.0);
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          const int64_t o = offset(l, os, n, c, oh, ow);
          if (idx[o] < 0 || idx[o] >= is.h * is.w) continue;
          gi[offset(l, is, n, c, idx[o] / is.w, idx[o] % is.w)] += go[o];
        }
}

// Average pooling window along one axis: [start, end) clipped to the input, and its extent
// clipped only to the padded input.
void ref_avg_axis(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t in, int64_t* start,
                  int64_t* end, int64_t* padded_extent) {
  const int64_t s = o * stride - pad;
  const int64_t e = std::min(s + k, in + pad);
  *padded_extent = e - s;
  *start = std::max<int64_t>(s, 0);
  *end = std::min(e, in);
  if (*start >= *end) reference_error("empty avg-pool window");
}

double ref_avg_divisor(int64_t h0, int64_t h1, int64_t ph, int64_t w0, int64_t w1, int64_t pw,
                       bool count_include_pad, int64_t divisor_override) {
  if (divisor_override != 0) return static_cast<double>(divisor_override);
  return count_include_pad ? static_cast<double>(ph * pw) : static_cast<double>((h1 - h0) * (w1 - w0));
}

template <class T>
void ref_avg_fwd(Layout l, const Shape4& is, const Shape4& os, const Window& w, bool cip,
                 int64_t divisor_override, const T* in, double* out) {
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          int64_t h0, h1, ph, w0, w1, pw;
          ref_avg_axis(oh, w.sh, w.ph, w.kh, is.h, &h0, &h1, &ph);
          ref_avg_axis(ow, w.sw, w.pw, w.kw, is.w, &w0, &w1, &pw);
          double sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) sum += in[offset(l, is, n, c, ih, iw)];
          out[offset(l, os, n, c, oh, ow)] = sum / ref_avg_divisor(h0, h1, ph, w0, w1, pw, cip, divisor_override);
        }
}

template <class T>
void ref_avg_bwd(Layout l, const Shape4& is, const Shape4& os, const Window& w, bool cip,
                 int64_t divisor_override, const T* go, double* gi) {
  std::fill(gi, gi + is.numel(), 0.0);
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          int64_t h0, h1, ph, w0, w1, pw;
          ref_avg_axis(oh, w.sh, w.ph, w.kh, is.h, &h0, &h1, &ph);
          ref_avg_axis(ow, w.sw, w.pw, w.kw, is.w, &w0, &w1, &pw);
          const double g = go[offset(l, os, n, c, oh, ow)] /
                           ref_avg_divisor(h0, h1, ph, w0, w1, pw, cip, divisor_override);
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) gi[offset(l, is, n, c, ih, iw)] += g;
        }
}

int64_t ref_adaptive_start(int64_t o, int64_t out, int64_t in) { return (o * in) / out; }
int64_t ref_adaptive_end(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

template <class T>
void ref_adaptive_fwd(Layout l, const Shape4& is, const Shape4& os, const T* in, double* out) {
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          const int64_t h0 = ref_adaptive_start(oh, os.h, is.h), h1 = ref_adaptive_end(oh, os.h, is.h);
          const int64_t w0 = ref_adaptive_start(ow, os.w, is.w), w1 = ref_adaptive_end(ow, os.w, is.w);
          double sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) sum += in[offset(l, is, n, c, ih, iw)];
          out[offset(l, os, n, c, oh, ow)] = sum / static_cast<double>((h1 - h0) * (w1 - w0));
        }
}

template <class T>
void ref_adaptive_bwd(Layout l, const Shape4& is, const Shape4& os, const T* go, double* gi) {
  std::fill(gi, gi + is.numel(), 0.0);
  for (int64_t n = 0; n < is.n; ++n)
    for (int64_t c = 0; c < is.c; ++c)
      for (int64_t oh = 0; oh < os.h; ++oh)
        for (int64_t ow = 0; ow < os.w; ++ow) {
          const int64_t h0 = ref_adaptive_start(oh, os.h, is.h), h1 = ref_adaptive_end(oh, os.h, is.h);
          const int64_t w0 = ref_adaptive_start(ow, os.w, is.w), w1 = ref_adaptive_end(ow, os.w, is.w);
          const double g = go[offset(l, os, n, c, oh, ow)] / static_cast<double>((h1 - h0) * (w1 - w0));
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) gi[offset(l, is, n, c, ih, iw)] += g;
        }
}

// ============================================================================ data

enum class Data { Uniform, Ties, Special, AllNegInf };
const char* data_name(Data d) {
  switch (d) {
    case Data::Uniform: return "uniform";
    case Data::Ties: return "ties";
    case Data::Special: return "nan/inf";
    default: return "all-neg-inf";
  }
}

template <class T>
void fill_data(T* p, int64_t n, Data d, Rng& rng) {
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    switch (d) {
      case Data::Uniform: p[i] = static_cast<T>(rng.uniform(-1.0, 1.0)); break;
      case Data::Ties: p[i] = static_cast<T>(rng.below(3) - 1); break;  // -1, 0, 1: many equal maxima
      case Data::Special: {
        const int64_t r = rng.below(20);
        p[i] = r < 10 ? -inf                                             // 50% -inf: whole -inf windows
               : r < 13 ? std::numeric_limits<T>::quiet_NaN()           // 15% NaN: several per window
               : r < 14 ? inf
                        : static_cast<T>(rng.below(3) - 1);
        break;
      }
      case Data::AllNegInf: p[i] = -inf; break;
    }
  }
}

template <class T>
constexpr T sentinel() { return static_cast<T>(4242.5); }

// ============================================================================ kernel tables

template <class T>
const PoolKernels<T>* kernels_for(CpuCapability cap);

template <>
const PoolKernels<float>* kernels_for<float>(CpuCapability cap) {
  switch (cap) {
    case CpuCapability::AVX512: return fastconv::pool::pool_kernels_avx512_float();
    case CpuCapability::AVX2: return fastconv::pool::pool_kernels_avx2_float();
    default: return fastconv::pool::pool_kernels_default_float();
  }
}

template <>
const PoolKernels<double>* kernels_for<double>(CpuCapability cap) {
  switch (cap) {
    case CpuCapability::AVX512: return fastconv::pool::pool_kernels_avx512_double();
    case CpuCapability::AVX2: return fastconv::pool::pool_kernels_avx2_double();
    default: return fastconv::pool::pool_kernels_default_double();
  }
}

template <class T> const char* dtype_name();
template <> const char* dtype_name<float>() { return "float"; }
template <> const char* dtype_name<double>() { return "double"; }

Pool2dParams make_params(const Shape4& is, const Shape4& os, const Window& w) {
  // Every other case writes with non-temporal stores, the path big tensors take.
  static int64_t calls = 0;
  Pool2dParams p;
  p.stream_output = (calls++ % 2) == 1;
  p.batch = is.n;
  p.channels = is.c;
  p.in_h = is.h;
  p.in_w = is.w;
  p.out_h = os.h;
  p.out_w = os.w;
  p.kernel_h = w.kh;
  p.kernel_w = w.kw;
  p.stride_h = w.sh;
  p.stride_w = w.sw;
  p.pad_h = w.ph;
  p.pad_w = w.pw;
  p.dilation_h = w.dh;
  p.dilation_w = w.dw;
  return p;
}

// ============================================================================ test cases

struct Case {
  const char* isa;
  Layout layout;
  Align align;
};

std::string describe(const char* isa, const char* dtype, const char* op, const Case& k, const Shape4& is,
                     const Window& w) {
  std::ostringstream o;
  o << isa << " " << dtype << " " << op << " " << layout_name(k.layout) << " in[N,C,H,W]=[" << is.n << ","
    << is.c << "," << is.h << "," << is.w << "] k=" << w.kh << "x" << w.kw << " s=" << w.sh << "x" << w.sw
    << " p=" << w.ph << "x" << w.pw << " d=" << w.dh << "x" << w.dw << " ceil=" << w.ceil_mode
    << " align=" << align_name(k.align);
  return o.str();
}

template <class T>
void test_max_pool(const PoolKernels<T>* kt, const Case& k, const Shape4& is, const Window& w, Data data) {
  const Shape4 os = pooled_shape(is, w);
  const Pool2dParams p = make_params(is, os, w);
  const Layout l = k.layout;
  Rng rng = next_rng();

  GuardedBuffer<T> in(is.numel(), k.align);
  fill_data(in.data(), is.numel(), data, rng);
  in.make_read_only();
  std::vector<T> want(os.numel());
  std::vector<int64_t> want_idx(os.numel());
  ref_max_fwd(l, is, os, w, in.data(), want.data(), want_idx.data());

  const int64_t fwd_units = l == Layout::NCHW ? is.n * is.c : is.n * os.h;
  auto fwd = l == Layout::NCHW ? kt->max_fwd_nchw : kt->max_fwd_nhwc;

  {  // forward without indices (inference path)
    GuardedBuffer<T> out(os.numel(), k.align);
    out.fill(sentinel<T>());
    const int sig = run_sliced(fwd_units, [&](int64_t b, int64_t e) { fwd(in.data(), out.data(), nullptr, p, b, e); });
    const std::string d = sig ? fault_detail(sig) : diff_exact(out.data(), want.data(), l, os);
    record(d.empty(), describe(k.isa, dtype_name<T>(), "max_fwd", k, is, w) + " data=" + data_name(data), d);
  }
  // Forward with an argmax and backward from it, for torch's int64 indices and for the
  // training path's int32 argmax: the same checks through the two kernel sets.
  auto with_index_type = [&](auto index_tag, const char* suffix, auto fwd_nchw, auto fwd_nhwc,
                             auto bwd_nchw, auto bwd_nhwc, auto bwd_scatter) {
    using I = decltype(index_tag);
    const std::string s(suffix);
    {
      GuardedBuffer<T> out(os.numel(), k.align);
      GuardedBuffer<I> idx(os.numel(), k.align);
      out.fill(sentinel<T>());
      idx.fill(-7);
      auto fwd_i = l == Layout::NCHW ? fwd_nchw : fwd_nhwc;
      const int sig = run_sliced(fwd_units, [&](int64_t b, int64_t e) { fwd_i(in.data(), out.data(), idx.data(), p, b, e); });
      const std::string d = sig ? fault_detail(sig)
                                : diff_exact(out.data(), want.data(), l, os) +
                                      diff_indices(idx.data(), want_idx.data(), l, os);
      record(d.empty(), describe(k.isa, dtype_name<T>(), ("max_fwd_with_indices" + s).c_str(), k, is, w) + " data=" + data_name(data), d);
    }
    GuardedBuffer<T> go(os.numel(), k.align);
    GuardedBuffer<I> idx(os.numel(), k.align);
    fill_data(go.data(), os.numel(), Data::Uniform, rng);
    for (int64_t i = 0; i < os.numel(); ++i) idx.data()[i] = static_cast<I>(want_idx[i]);
    go.make_read_only();
    idx.make_read_only();
    std::vector<double> want_gi(is.numel());
    ref_max_bwd(l, is, os, go.data(), want_idx.data(), want_gi.data());
    using BwdFn = void (*)(const T*, const I*, T*, const Pool2dParams&, int64_t, int64_t);
    auto check = [&](const std::string& op, BwdFn bwd, int64_t units) {
      GuardedBuffer<T> gi(is.numel(), k.align);
      gi.fill(sentinel<T>());
      const int sig = run_sliced(units, [&](int64_t b, int64_t e) { bwd(go.data(), idx.data(), gi.data(), p, b, e); });
      const std::string d = sig ? fault_detail(sig) : diff_close(gi.data(), want_gi.data(), l, is);
      record(d.empty(), describe(k.isa, dtype_name<T>(), (op + s).c_str(), k, is, w) + " data=" + data_name(data), d);
    };
    if (l == Layout::NCHW) {
      check("max_bwd", bwd_nchw, is.n * is.c);
    } else {
      // The gather kernel (sliced over input rows) needs every window non-empty; the scatter
      // kernel (sliced over images) takes every shape.
      if (!has_empty_window(is, os, w)) check("max_bwd", bwd_nhwc, is.n * is.h);
      check("max_bwd_scatter", bwd_scatter, is.n);
    }
  };
  with_index_type(int64_t{}, "", kt->max_fwd_nchw, kt->max_fwd_nhwc, kt->max_bwd_nchw,
                  kt->max_bwd_nhwc, kt->max_bwd_nhwc_scatter);
  with_index_type(int32_t{}, "_argmax32", kt->max_fwd_nchw_i32, kt->max_fwd_nhwc_i32,
                  kt->max_bwd_nchw_i32, kt->max_bwd_nhwc_i32, kt->max_bwd_nhwc_scatter_i32);
}

template <class T>
void test_avg_pool(const PoolKernels<T>* kt, const Case& k, const Shape4& is, const Window& w, bool cip,
                   int64_t divisor_override) {
  const Shape4 os = pooled_shape(is, w);
  Pool2dParams p = make_params(is, os, w);
  p.count_include_pad = cip;
  p.divisor_override = divisor_override;
  const Layout l = k.layout;
  Rng rng = next_rng();
  std::ostringstream extra;
  extra << " count_include_pad=" << cip << " divisor_override=" << divisor_override;

  {  // forward
    GuardedBuffer<T> in(is.numel(), k.align);
    fill_data(in.data(), is.numel(), Data::Uniform, rng);
    in.make_read_only();
    std::vector<double> want(os.numel());
    ref_avg_fwd(l, is, os, w, cip, divisor_override, in.data(), want.data());
    GuardedBuffer<T> out(os.numel(), k.align);
    out.fill(sentinel<T>());
    auto fwd = l == Layout::NCHW ? kt->avg_fwd_nchw : kt->avg_fwd_nhwc;
    const int64_t units = l == Layout::NCHW ? is.n * is.c : is.n * os.h;
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) { fwd(in.data(), out.data(), p, b, e); });
    const std::string d = sig ? fault_detail(sig) : diff_close(out.data(), want.data(), l, os);
    record(d.empty(), describe(k.isa, dtype_name<T>(), "avg_fwd", k, is, w) + extra.str(), d);
  }
  {  // backward
    GuardedBuffer<T> go(os.numel(), k.align);
    fill_data(go.data(), os.numel(), Data::Uniform, rng);
    go.make_read_only();
    std::vector<double> want(is.numel());
    ref_avg_bwd(l, is, os, w, cip, divisor_override, go.data(), want.data());
    GuardedBuffer<T> gi(is.numel(), k.align);
    gi.fill(sentinel<T>());
    auto bwd = l == Layout::NCHW ? kt->avg_bwd_nchw : kt->avg_bwd_nhwc;
    const int64_t nhwc_units = is.n * is.h;
    const int64_t units = l == Layout::NCHW ? is.n * is.c : nhwc_units;
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) { bwd(go.data(), gi.data(), p, b, e); });
    const std::string d = sig ? fault_detail(sig) : diff_close(gi.data(), want.data(), l, is);
    record(d.empty(), describe(k.isa, dtype_name<T>(), "avg_bwd", k, is, w) + extra.str(), d);
  }
}

template <class T>
void test_adaptive(const PoolKernels<T>* kt, const Case& k, const Shape4& is, int64_t out_h, int64_t out_w) {
  const Shape4 os{is.n, is.c, out_h, out_w};
  Pool2dParams p;
  p.batch = is.n;
  p.channels = is.c;
  p.in_h = is.h;
  p.in_w = is.w;
  p.out_h = out_h;
  p.out_w = out_w;
  const Layout l = k.layout;
  Rng rng = next_rng();
  std::ostringstream name;
  name << dtype_name<T>() << " " << layout_name(l) << " in[N,C,H,W]=[" << is.n << "," << is.c << "," << is.h
       << "," << is.w << "] out=" << out_h << "x" << out_w << " align=" << align_name(k.align);
  const int64_t units = l == Layout::NCHW ? is.n * is.c : is.n;

  {  // forward
    GuardedBuffer<T> in(is.numel(), k.align);
    fill_data(in.data(), is.numel(), Data::Uniform, rng);
    in.make_read_only();
    std::vector<double> want(os.numel());
    ref_adaptive_fwd(l, is, os, in.data(), want.data());
    GuardedBuffer<T> out(os.numel(), k.align);
    out.fill(sentinel<T>());
    auto fwd = l == Layout::NCHW ? kt->adaptive_avg_fwd_nchw : kt->adaptive_avg_fwd_nhwc;
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) { fwd(in.data(), out.data(), p, b, e); });
    const std::string d = sig ? fault_detail(sig) : diff_close(out.data(), want.data(), l, os);
    record(d.empty(), std::string(k.isa) + " adaptive_avg_fwd " + name.str(), d);
  }
  {  // backward
    GuardedBuffer<T> go(os.numel(), k.align);
    fill_data(go.data(), os.numel(), Data::Uniform, rng);
    go.make_read_only();
    std::vector<double> want(is.numel());
    ref_adaptive_bwd(l, is, os, go.data(), want.data());
    GuardedBuffer<T> gi(is.numel(), k.align);
    gi.fill(sentinel<T>());
    auto bwd = l == Layout::NCHW ? kt->adaptive_avg_bwd_nchw : kt->adaptive_avg_bwd_nhwc;
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) { bwd(go.data(), gi.data(), p, b, e); });
    const std::string d = sig ? fault_detail(sig) : diff_close(gi.data(), want.data(), l, is);
    record(d.empty(), std::string(k.isa) + " adaptive_avg_bwd " + name.str(), d);
  }
}

// Shapes for max and avg pooling: odd sizes, padding, stride > kernel, dilation, width 1,
// widths around and not multiples of the vector widths (8 and 16 floats), channel counts that
// leave NHWC vector tails, and each of the NCHW max kernel's specialised shapes (2x2/2, 3x3/2,
// 3x3/1) next to the generic one. Each runs with ceil_mode off and on (skipped where torch
// would reject it); avg pooling uses dilation 1 and clamps padding to kernel / 2.
struct PoolShape {
  Shape4 in;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

const PoolShape kPoolShapes[] = {
    {{1, 3, 7, 7}, 3, 3, 2, 2, 1, 1, 1, 1},        // ResNet stem pool on an odd plane
    {{2, 5, 9, 35}, 2, 2, 2, 2, 0, 0, 1, 1},       // 2x2/2, odd width
    {{1, 2, 8, 67}, 3, 3, 2, 2, 1, 1, 1, 1},       // 3x3/2 over several vector chunks
    {{1, 4, 5, 33}, 3, 3, 1, 1, 1, 1, 1, 1},       // 3x3/1, width 33
    {{2, 3, 11, 40}, 2, 3, 3, 4, 1, 1, 1, 1},      // stride > kernel
    {{1, 3, 9, 45}, 3, 2, 2, 5, 1, 1, 1, 1},       // stride 5 > kernel 2 (gathers)
    {{1, 2, 10, 50}, 3, 3, 2, 3, 1, 1, 2, 2},      // dilation 2
    {{1, 2, 9, 29}, 3, 3, 3, 3, 1, 1, 2, 2},       // dilation 2, stride 3
    {{1, 2, 7, 37}, 2, 3, 1, 1, 0, 1, 1, 3},       // dilation 3 along W only
    {{1, 3, 6, 1}, 3, 1, 1, 1, 1, 0, 1, 1},        // width 1
    {{2, 3, 6, 1}, 2, 1, 2, 1, 0, 0, 1, 1},        // width 1, stride 2
    {{1, 1, 1, 1}, 1, 1, 1, 1, 0, 0, 1, 1},        // 1x1
    {{1, 2, 3, 3}, 3, 3, 1, 1, 1, 1, 1, 1},        // window larger than the plane
    {{3, 17, 13, 17}, 3, 3, 2, 2, 1, 1, 1, 1},     // C=17: NHWC vector tail
    {{1, 33, 7, 9}, 2, 2, 1, 1, 1, 1, 1, 1},       // C=33, kernel 2 with padding 1
    {{2, 16, 5, 6}, 2, 2, 2, 2, 0, 0, 1, 1},       // C=16: exact vectors
    {{1, 64, 4, 5}, 3, 3, 2, 2, 1, 1, 1, 1},       // C=64
    {{1, 2, 4, 100}, 5, 4, 1, 3, 2, 2, 1, 1},      // wide, stride 3
    {{1, 2, 5, 18}, 5, 18, 1, 1, 2, 9, 1, 1},      // kernel as wide as the row
    {{1, 2, 5, 5}, 2, 2, 2, 2, 1, 1, 1, 1},        // ceil_mode drops the last window
    {{1, 2, 6, 16}, 3, 3, 1, 1, 1, 1, 1, 1},       // out_w = 16
    {{1, 2, 6, 32}, 3, 3, 1, 1, 1, 1, 1, 1},       // out_w = 32
    {{1, 2, 4, 64}, 2, 2, 2, 2, 0, 0, 1, 1},       // out_w = 32, stride 2
    {{1, 2, 4, 31}, 2, 2, 2, 2, 0, 0, 1, 1},       // out_w = 15
    {{1, 2, 5, 130}, 3, 3, 2, 2, 1, 1, 1, 1},      // many full chunks
    {{2, 1, 12, 12}, 4, 4, 4, 4, 2, 2, 1, 1},      // non-overlapping, padded
    {{1, 1, 2, 70}, 1, 1, 1, 2, 0, 0, 1, 1},       // 1x1 kernel, stride 2
    {{1, 3, 7, 23}, 1, 3, 1, 1, 0, 1, 1, 1},       // 1x3 kernel
    {{1, 2, 6, 48}, 2, 2, 1, 1, 0, 0, 1, 1},       // 2x2/1
    {{1, 2, 3, 17}, 4, 4, 2, 2, 0, 0, 1, 1},       // ceil_mode window past the input
    // Max-pool windows with no in-bounds tap (dilation straddling the input):
    {{2, 5, 5, 1}, 4, 2, 4, 4, 0, 1, 2, 3},        //   empty along W: argmax wraps into a later row
    {{1, 3, 4, 2}, 2, 2, 1, 1, 0, 1, 1, 3},        //   argmax in the next row, inside the plane
    {{1, 2, 2, 5}, 2, 2, 1, 1, 1, 0, 3, 1},        //   empty along H: argmax past the plane
    {{1, 17, 2, 2}, 2, 2, 1, 1, 1, 1, 3, 3},       //   empty along both, C=17
};

struct AdaptiveShape {
  Shape4 in;
  int64_t out_h, out_w;
};

const AdaptiveShape kAdaptiveShapes[] = {
    {{2, 3, 7, 7}, 1, 1},    // global
    {{1, 3, 13, 35}, 1, 1},  // global, odd plane
    {{1, 17, 14, 14}, 1, 1}, // global, C=17
    {{2, 33, 7, 7}, 1, 1},   // global, C=33
    {{1, 2, 16, 16}, 1, 1},  // global, plane a multiple of 16
    {{1, 2, 67, 1}, 1, 1},   // global, width 1
    {{1, 1, 1, 1}, 1, 1},    // 1x1
    {{1, 2, 7, 7}, 3, 3},    // non-divisible 7 -> 3 (overlapping windows)
    {{2, 2, 5, 9}, 3, 4},
    {{1, 2, 10, 10}, 5, 5},  // divisible
    {{1, 2, 6, 4}, 7, 5},    // output larger than input
    {{1, 2, 1, 1}, 2, 3},    // upsampling a single cell
    {{1, 3, 3, 1}, 3, 1},    // identity
    {{1, 2, 7, 7}, 7, 7},    // identity
    {{1, 4, 9, 40}, 2, 17},
    {{1, 2, 7, 3}, 3, 7},
};

template <class T>
void run_table_tests(CpuCapability cap) {
  const char* isa = fastconv::cpu_capability_name(cap);
  const PoolKernels<T>* kt = kernels_for<T>(cap);
  const int passed0 = g_passed, failed0 = g_failed;
  const auto t0 = std::chrono::steady_clock::now();
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    for (Align align : {Align::End, Align::Start}) {
      const Case k{isa, layout, align};
      for (const PoolShape& s : kPoolShapes) {
        for (bool ceil_mode : {false, true}) {
          const Window w{s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, ceil_mode};
          if (window_valid(s.in, w)) {
            for (Data d : {Data::Uniform, Data::Ties, Data::Special, Data::AllNegInf})
              test_max_pool<T>(kt, k, s.in, w, d);
          }
          const Window a{s.kh, s.kw, s.sh, s.sw, std::min(s.ph, s.kh / 2), std::min(s.pw, s.kw / 2), 1, 1, ceil_mode};
          if (window_valid(s.in, a)) {
            for (bool cip : {true, false})
              for (int64_t divisor : {int64_t(0), int64_t(3)}) test_avg_pool<T>(kt, k, s.in, a, cip, divisor);
          }
        }
      }
      for (const AdaptiveShape& s : kAdaptiveShapes) test_adaptive<T>(kt, k, s.in, s.out_h, s.out_w);
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%-7s %-6s : %5d passed, %d failed (%.0f ms)\n", isa, dtype_name<T>(), g_passed - passed0,
              g_failed - failed0, ms);
  std::fflush(stdout);
}

// ============================================================================ shape.h

void test_output_size() {
  struct Row {
    int64_t in, kernel, pad, stride, dilation;
    bool ceil_mode;
    int64_t want;
  };
  // Hand-computed with torch's rule: floor((in + 2p - d(k-1) - 1 [+ s-1 if ceil]) / s) + 1, minus
  // one in ceil_mode when the last window would start at or past in + pad.
  const Row rows[] = {
      {224, 3, 1, 2, 1, false, 112},  // ResNet stem pool
      {112, 3, 1, 2, 1, false, 56},
      {224, 2, 0, 2, 1, false, 112},  // VGG
      {7, 3, 1, 2, 1, false, 4},
      {7, 3, 1, 2, 1, true, 4},
      {7, 2, 0, 2, 1, false, 3},
      {7, 2, 0, 2, 1, true, 4},       // ceil adds a partial window
      {6, 2, 0, 2, 1, true, 3},       // exact: ceil changes nothing
      {6, 3, 1, 2, 1, false, 3},
      {6, 3, 1, 2, 1, true, 4},
      {5, 2, 1, 2, 1, false, 3},
      {5, 2, 1, 2, 1, true, 3},       // ceil's extra window would start in the right padding
      {3, 2, 1, 2, 1, true, 2},       // same rule
      {4, 3, 1, 5, 1, true, 1},
      {10, 3, 1, 3, 2, false, 3},     // dilation 2: effective kernel 5
      {10, 3, 1, 3, 2, true, 4},
      {11, 3, 1, 2, 2, true, 5},
      {9, 3, 0, 1, 3, false, 3},      // dilation 3: effective kernel 7
      {1, 1, 0, 1, 1, false, 1},
      {1, 1, 0, 5, 1, true, 1},
      {17, 4, 0, 2, 1, true, 8},
      // Zero results (the ops reject these shapes, but the arithmetic must still be right).
      {3, 4, 0, 2, 1, false, 0},      // window larger than the input: no output ...
      {3, 4, 0, 2, 1, true, 1},       // ... unless ceil_mode keeps a partial one
      {1, 3, 0, 3, 1, false, 0},      // negative numerator must round toward -inf
      {2, 4, 0, 2, 1, true, 0},
      {5, 5, 2, 1, 1, false, 5},      // "same" padding
      {18, 18, 9, 1, 1, false, 19},
  };
  for (const Row& r : rows) {
    const int64_t got = fastconv::pooling_output_size(r.in, r.kernel, r.pad, r.stride, r.dilation, r.ceil_mode);
    std::ostringstream name, detail;
    name << "pooling_output_size(in=" << r.in << ", kernel=" << r.kernel << ", pad=" << r.pad
         << ", stride=" << r.stride << ", dilation=" << r.dilation << ", ceil_mode=" << r.ceil_mode << ")";
    detail << "    expected " << r.want << ", got " << got << "\n";
    record(got == r.want, name.str(), detail.str());
  }
  // The test's own output-size reference must agree with shape.h on every shape used above.
  int64_t disagreements = 0;
  std::ostringstream detail;
  for (const PoolShape& s : kPoolShapes) {
    for (bool ceil_mode : {false, true}) {
      for (int axis = 0; axis < 2; ++axis) {
        const int64_t in = axis ? s.in.w : s.in.h, k = axis ? s.kw : s.kh, p = axis ? s.pw : s.ph;
        const int64_t st = axis ? s.sw : s.sh, d = axis ? s.dw : s.dh;
        const int64_t a = fastconv::pooling_output_size(in, k, p, st, d, ceil_mode);
        const int64_t b = ref_output_size(in, k, p, st, d, ceil_mode);
        if (a != b && disagreements++ < kMaxListedMismatches)
          detail << "    in=" << in << " k=" << k << " p=" << p << " s=" << st << " d=" << d
                 << " ceil=" << ceil_mode << ": shape.h " << a << ", reference " << b << "\n";
      }
    }
  }
  record(disagreements == 0, "pooling_output_size agrees with the test reference on all test shapes",
         detail.str());
}


// ============================================================================ squeeze-excitation

using fastconv::se::SeKernels;
using fastconv::se::SeParams;

template <class T>
const SeKernels<T>* se_kernels_for(CpuCapability cap);

template <>
const SeKernels<float>* se_kernels_for<float>(CpuCapability cap) {
  switch (cap) {
    case CpuCapability::AVX512: return fastconv::se::se_kernels_avx512_float();
    case CpuCapability::AVX2: return fastconv::se::se_kernels_avx2_float();
    default: return fastconv::se::se_kernels_default_float();
  }
}

template <>
const SeKernels<double>* se_kernels_for<double>(CpuCapability cap) {
  switch (cap) {
    case CpuCapability::AVX512: return fastconv::se::se_kernels_avx512_double();
    case CpuCapability::AVX2: return fastconv::se::se_kernels_avx2_double();
    default: return fastconv::se::se_kernels_default_double();
  }
}

// Filled read-only buffer of n values in [lo, hi).
template <class T>
void fill_uniform(GuardedBuffer<T>& b, Rng& rng, double lo, double hi) {
  for (int64_t i = 0; i < b.size(); ++i) b[i] = static_cast<T>(rng.uniform(lo, hi));
  b.make_read_only();
}

template <class T>
bool close_to(T got, double want, double scale) {
  const double tol = (std::is_same<T, float>::value ? 2e-5 : 1e-12) * std::max(1.0, scale);
  return std::fabs(static_cast<double>(got) - want) <= tol || (std::isnan(want) && std::isnan(got));
}

// Every SE kernel of one table on one shape and layout: outputs against the double reference,
// inputs read-only behind guard pages, outputs flush against a guard page (Align::End) and
// pre-filled with a sentinel so a cell left unwritten fails.
template <class T>
void test_se(const SeKernels<T>* kt, const char* isa, Layout layout, int64_t n, int64_t c, int64_t hw, int64_t cr) {
  Rng rng = next_rng();
  const bool cl = layout == Layout::NHWC;
  const int64_t numel = n * c * hw;
  SeParams p;
  p.batch = n;
  p.channels = c;
  p.inner = hw;
  // index of (n, c, i) in the layout
  auto at = [&](int64_t b, int64_t ch, int64_t i) { return cl ? (b * hw + i) * c + ch : (b * c + ch) * hw + i; };
  GuardedBuffer<T> x(numel, Align::End), r(numel, Align::End), g(numel, Align::End), y(numel, Align::End);
  GuardedBuffer<T> s(n * c, Align::End), t(n * c, Align::End);
  GuardedBuffer<T> w1(cr * c, Align::End), b1(cr, Align::End), w2(c * cr, Align::End), b2(c, Align::End);
  fill_uniform(x, rng, -2, 2);
  fill_uniform(r, rng, -2, 2);
  fill_uniform(g, rng, -1, 1);
  fill_uniform(s, rng, -0.5, 1.5);
  fill_uniform(t, rng, -1, 1);
  fill_uniform(w1, rng, -0.3, 0.3);
  fill_uniform(b1, rng, -0.1, 0.1);
  fill_uniform(w2, rng, -0.3, 0.3);
  fill_uniform(b2, rng, -0.1, 0.1);
  std::ostringstream base;
  base << isa << " " << dtype_name<T>() << " se " << layout_name(layout) << " N=" << n << " C=" << c << " HW=" << hw
       << " C/r=" << cr;
  const int64_t units = cl ? n * hw : n * c;
  const int64_t chunk = 3;  // odd chunks of channels: every tail path of the reductions
  const int64_t items = n * ((c + chunk - 1) / chunk);

  // scale: y = act(x * s + r), all four variants, plain and streamed stores.
  for (int variant = 0; variant < 8; ++variant) {
    const bool relu = variant & 1, res = variant & 2, stream = variant & 4;
    GuardedBuffer<T> out(numel, Align::End);
    out.fill(sentinel<T>());
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) {
      (cl ? kt->scale_cl : kt->scale_cf)(x.data(), s.data(), res ? r.data() : nullptr, out.data(), relu, stream, p, b, e);
    });
    int64_t bad = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < hw; ++i) {
          double v = double(x[at(b, ch, i)]) * double(s[b * c + ch]) + (res ? double(r[at(b, ch, i)]) : 0.0);
          if (relu && v < 0) v = 0;
          bad += !close_to(out[at(b, ch, i)], v, std::fabs(v));
        }
    std::ostringstream name;
    name << base.str() << " scale relu=" << relu << " residual=" << res << " stream=" << stream;
    record(sig == 0 && bad == 0, name.str(), sig ? "    fault\n" : "    mismatches: " + std::to_string(bad) + "\n");
  }

  // The forward output that carries the ReLU mask for the gradients.
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < hw; ++i) {
        const double v = double(x[at(b, ch, i)]) * double(s[b * c + ch]) + double(r[at(b, ch, i)]);
        y[at(b, ch, i)] = static_cast<T>(v > 0 ? v : 0);
      }
  y.make_read_only();

  // grad_scale with and without the mask / grad_residual.
  for (int variant = 0; variant < 4; ++variant) {
    const bool mask = variant & 1, want_gr = variant & 2;
    GuardedBuffer<T> gs(n * c, Align::End), gr(numel, Align::End);
    gs.fill(sentinel<T>());
    gr.fill(sentinel<T>());
    const int sig = run_sliced(cl ? items : units, [&](int64_t b, int64_t e) {
      if (cl)
        kt->grad_scale_cl(g.data(), x.data(), mask ? y.data() : nullptr, gs.data(), want_gr ? gr.data() : nullptr, p,
                          chunk, b, e);
      else
        kt->grad_scale_cf(g.data(), x.data(), mask ? y.data() : nullptr, gs.data(), want_gr ? gr.data() : nullptr, p, b, e);
    });
    int64_t bad = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch) {
        double acc = 0, mag = 0;
        for (int64_t i = 0; i < hw; ++i) {
          const double m = (!mask || y[at(b, ch, i)] > 0) ? double(g[at(b, ch, i)]) : 0.0;
          acc += m * double(x[at(b, ch, i)]);
          mag += std::fabs(m * double(x[at(b, ch, i)]));
          if (want_gr) bad += !close_to(gr[at(b, ch, i)], m, std::fabs(m));
        }
        bad += !close_to(gs[b * c + ch], acc, mag);
      }
    std::ostringstream name;
    name << base.str() << " grad_scale mask=" << mask << " grad_residual=" << want_gr;
    record(sig == 0 && bad == 0, name.str(), sig ? "    fault\n" : "    mismatches: " + std::to_string(bad) + "\n");
  }

  // grad_input with and without the mask / shift, plain and streamed.
  for (int variant = 0; variant < 8; ++variant) {
    const bool mask = variant & 1, shift = variant & 2, stream = variant & 4;
    GuardedBuffer<T> gx(numel, Align::End);
    gx.fill(sentinel<T>());
    const int sig = run_sliced(units, [&](int64_t b, int64_t e) {
      (cl ? kt->grad_input_cl : kt->grad_input_cf)(g.data(), mask ? y.data() : nullptr, s.data(),
                                                   shift ? t.data() : nullptr, gx.data(), stream, p, b, e);
    });
    int64_t bad = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < hw; ++i) {
          const double m = (!mask || y[at(b, ch, i)] > 0) ? double(g[at(b, ch, i)]) : 0.0;
          const double v = m * double(s[b * c + ch]) + (shift ? double(t[b * c + ch]) : 0.0);
          bad += !close_to(gx[at(b, ch, i)], v, std::fabs(v));
        }
    std::ostringstream name;
    name << base.str() << " grad_input mask=" << mask << " shift=" << shift << " stream=" << stream;
    record(sig == 0 && bad == 0, name.str(), sig ? "    fault\n" : "    mismatches: " + std::to_string(bad) + "\n");
  }

  // squeeze + excite + excite_backward: the block's small-vector path.
  {
    GuardedBuffer<T> pooled(n * c, Align::End), hidden(n * cr, Align::End), scale(n * c, Align::End);
    GuardedBuffer<T> dz1(n * cr, Align::End), dz2(n * c, Align::End), shift(n * c, Align::End);
    for (auto* b : {&pooled, &hidden, &scale, &dz1, &dz2, &shift}) b->fill(sentinel<T>());
    const int sig = run_guarded([&] {
      if (cl) {
        for (int64_t i = 2; i >= 0; --i) kt->squeeze_cl(x.data(), pooled.data(), p, chunk, items * i / 3, items * (i + 1) / 3);
      } else {
        for (int64_t i = 2; i >= 0; --i) kt->squeeze_cf(x.data(), pooled.data(), p, n * c * i / 3, n * c * (i + 1) / 3);
      }
      kt->excite(pooled.data(), w1.data(), b1.data(), w2.data(), b2.data(), hidden.data(), scale.data(), p, cr, 0, n);
      // s(1 - s) and the ReLU mask come from the kernel's own excitation; g's sums play grad_s.
      kt->excite_backward(t.data(), w1.data(), w2.data(), hidden.data(), scale.data(), dz1.data(), dz2.data(),
                          shift.data(), p, cr, 0, n);
    });
    int64_t bad = 0;
    for (int64_t b = 0; b < n; ++b) {
      std::vector<double> pr(c), h(cr), sc(c), d2(c), d1(cr, 0.0), sh(c, 0.0);
      for (int64_t ch = 0; ch < c; ++ch) {
        double acc = 0;
        for (int64_t i = 0; i < hw; ++i) acc += double(x[at(b, ch, i)]);
        pr[ch] = acc / double(hw);
        bad += !close_to(pooled[b * c + ch], pr[ch], 2.0);
      }
      for (int64_t j = 0; j < cr; ++j) {
        double z = double(b1[j]);
        for (int64_t ch = 0; ch < c; ++ch) z += double(w1[j * c + ch]) * pr[ch];
        h[j] = z > 0 ? z : 0;
        bad += !close_to(hidden[b * cr + j], h[j], 1.0);
      }
      for (int64_t ch = 0; ch < c; ++ch) {
        double z = double(b2[ch]);
        for (int64_t j = 0; j < cr; ++j) z += double(w2[ch * cr + j]) * h[j];
        sc[ch] = 1.0 / (1.0 + std::exp(-z));
        bad += !close_to(scale[b * c + ch], sc[ch], 1.0);
        // the kernel's own s feeds the backward (a float s differs from the double one)
        const double s_k = double(scale[b * c + ch]);
        d2[ch] = double(t[b * c + ch]) * s_k * (1 - s_k);
        bad += !close_to(dz2[b * c + ch], d2[ch], 1.0);
      }
      for (int64_t j = 0; j < cr; ++j) {
        for (int64_t ch = 0; ch < c; ++ch) d1[j] += d2[ch] * double(w2[ch * cr + j]);
        if (!(double(hidden[b * cr + j]) > 0)) d1[j] = 0;
        bad += !close_to(dz1[b * cr + j], d1[j], 1.0);
      }
      for (int64_t ch = 0; ch < c; ++ch) {
        for (int64_t j = 0; j < cr; ++j) sh[ch] += d1[j] * double(w1[j * c + ch]);
        sh[ch] /= double(hw);
        bad += !close_to(shift[b * c + ch], sh[ch], 1.0);
      }
    }
    record(sig == 0 && bad == 0, base.str() + " squeeze / excite / excite_backward",
           sig ? "    fault\n" : "    mismatches: " + std::to_string(bad) + "\n");
  }
}

template <class T>
void run_se_tests(CpuCapability cap) {
  const char* isa = fastconv::cpu_capability_name(cap);
  const SeKernels<T>* kt = se_kernels_for<T>(cap);
  const int passed0 = g_passed, failed0 = g_failed;
  struct SeShape { int64_t n, c, hw, cr; };
  // Channel counts around the vector widths (8, 16) and the 128-channel chunks; 1x1 maps
  // (one element per plane) and odd plane sizes.
  const SeShape shapes[] = {{1, 1, 1, 1}, {2, 3, 5, 1}, {3, 17, 13, 4}, {2, 40, 7, 5}, {1, 130, 9, 8}, {2, 16, 49, 2}};
  for (Layout layout : {Layout::NCHW, Layout::NHWC})
    for (const SeShape& sh : shapes) test_se<T>(kt, isa, layout, sh.n, sh.c, sh.hw, sh.cr);
  std::printf("%-7s %-6s : %5d passed, %d failed (squeeze-excitation)\n", isa, dtype_name<T>(), g_passed - passed0,
              g_failed - failed0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--all-failures") == 0) {
      g_max_printed_failures = -1;
    } else {
      std::printf("usage: %s [--all-failures]\n", argv[0]);
      return 2;
    }
  }
  install_fault_handlers();
  const auto t0 = std::chrono::steady_clock::now();
  const CpuCapability best = fastconv::detected_cpu_capability();
  std::printf("detected CPU capability: %s\n", fastconv::cpu_capability_name(best));

  test_output_size();

  for (CpuCapability cap : {CpuCapability::AVX512, CpuCapability::AVX2, CpuCapability::Default}) {
    if (static_cast<int>(cap) > static_cast<int>(best)) {
      std::printf("%-7s        : skipped (not supported by this CPU)\n", fastconv::cpu_capability_name(cap));
      continue;
    }
    run_table_tests<float>(cap);
    run_table_tests<double>(cap);
    run_se_tests<float>(cap);
    run_se_tests<double>(cap);
  }

  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("total time %.2f s\n", s);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
