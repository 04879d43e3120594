// Which SIMD code path the CPU kernels run. Chosen once from CPUID (overridable with the
// FASTCONV_CPU_CAPABILITY environment variable or set_cpu_capability), read by every op's
// dispatch table. No torch headers: usable from the per-ISA kernel translation units.
#pragma once

namespace fastconv {

enum class CpuCapability : int { Default = 0, AVX2 = 1, AVX512 = 2 };

// Best path this CPU and OS support (CPUID + XGETBV), ignoring any override.
CpuCapability detected_cpu_capability();

// Path in use: FASTCONV_CPU_CAPABILITY at first call if set, else the detected one.
CpuCapability current_cpu_capability();

// Forces a path. Returns false (and changes nothing) if the CPU cannot run it.
bool set_cpu_capability(CpuCapability cap);

const char* cpu_capability_name(CpuCapability cap);

// Parses "avx512" / "avx2" / "default"; returns false on anything else.
bool parse_cpu_capability(const char* name, CpuCapability* out);

}  // namespace fastconv
