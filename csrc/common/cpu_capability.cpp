#include "cpu_capability.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace fastconv {
namespace {

CpuCapability detect() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  // __builtin_cpu_supports consults XGETBV too, so an OS that does not save zmm state
  // reports no AVX-512 even on a capable core.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma")) {
    return CpuCapability::AVX512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return CpuCapability::AVX2;
  }
#endif
  return CpuCapability::Default;
}

int initial_capability() {
  const CpuCapability detected = detected_cpu_capability();
  const char* env = std::getenv("FASTCONV_CPU_CAPABILITY");
  CpuCapability requested;
  if (env != nullptr && *env != '\0' && parse_cpu_capability(env, &requested) &&
      static_cast<int>(requested) <= static_cast<int>(detected)) {
    return static_cast<int>(requested);
  }
  // An unknown or unsupported request falls back to the detected path; the Python package
  // validates the variable at import and raises, so this is only reached from C++ users.
  return static_cast<int>(detected);
}

std::atomic<int>& capability_slot() {
  static std::atomic<int> slot{initial_capability()};
  return slot;
}

}  // namespace

CpuCapability detected_cpu_capability() {
  static const CpuCapability cap = detect();
  return cap;
}

CpuCapability current_cpu_capability() {
  return static_cast<CpuCapability>(capability_slot().load(std::memory_order_relaxed));
}

bool set_cpu_capability(CpuCapability cap) {
  if (static_cast<int>(cap) > static_cast<int>(detected_cpu_capability())) return false;
  capability_slot().store(static_cast<int>(cap), std::memory_order_relaxed);
  return true;
}

const char* cpu_capability_name(CpuCapability cap) {
  switch (cap) {
    case CpuCapability::AVX512: return "avx512";
    case CpuCapability::AVX2: return "avx2";
    default: return "default";
  }
}

bool parse_cpu_capability(const char* name, CpuCapability* out) {
  if (std::strcmp(name, "avx512") == 0) { *out = CpuCapability::AVX512; return true; }
  if (std::strcmp(name, "avx2") == 0) { *out = CpuCapability::AVX2; return true; }
  if (std::strcmp(name, "default") == 0) { *out = CpuCapability::Default; return true; }
  return false;
}

}  // namespace fastconv
