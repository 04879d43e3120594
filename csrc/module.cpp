// The Python extension module fastconv._C: build facts, the SIMD path switch and the machine
// probes. Ops are not bound here; they reach Python through the dispatcher (torch.ops.fastconv).
#include <pybind11/pybind11.h>
#include <torch/version.h>

#include <stdexcept>
#include <string>

#include "common/cpu_capability.h"
#include "common/probe.h"
#include "ops/conv/conv_algo.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = FASTCONV_VERSION;
  info["torch_version"] = TORCH_VERSION;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
#ifdef FASTCONV_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  py::list paths;
  paths.append("avx512");
  paths.append("avx2");
  paths.append("default");
  info["cpu_paths_compiled"] = paths;
  info["cpu_capability_detected"] =
      fastconv::cpu_capability_name(fastconv::detected_cpu_capability());
  return info;
}

void set_cpu_capability(const std::string& name) {
  fastconv::CpuCapability cap;
  if (!fastconv::parse_cpu_capability(name.c_str(), &cap)) {
    throw py::value_error("cpu capability must be one of 'avx512', 'avx2', 'default'; got '" + name + "'");
  }
  if (!fastconv::set_cpu_capability(cap)) {
    throw py::value_error("cpu capability '" + name + "' is not supported by this CPU (best: '" +
                          fastconv::cpu_capability_name(fastconv::detected_cpu_capability()) + "')");
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv native extension: build facts, SIMD path control and machine probes";
  m.def("build_info", &build_info, "Compile-time facts about this build, as a dict.");
  m.def("cpu_capability",
        [] { return std::string(fastconv::cpu_capability_name(fastconv::current_cpu_capability())); },
        "SIMD path the CPU kernels use now: 'avx512', 'avx2' or 'default'.");
  m.def("detected_cpu_capability",
        [] { return std::string(fastconv::cpu_capability_name(fastconv::detected_cpu_capability())); },
        "Best SIMD path this CPU supports.");
  m.def("set_cpu_capability", &set_cpu_capability, py::arg("name"),
        "Switch the SIMD path for subsequent calls (for tests and benchmarks).");
  m.def("probe_fma_gflops", &fastconv::probe_fma_gflops, py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(),
        "FP32 FMA throughput in GFLOP/s with `threads` threads, on the current SIMD path.");
  m.def("probe_copy_gbps", &fastconv::probe_copy_gbps, py::arg("nbytes"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(),
        "Memory copy bandwidth in GB/s (bytes read + written) over an nbytes buffer.");
  m.def("set_conv_algo",
        [](const std::string& name) {
          try {
            fastconv::conv::set_conv_algo(name);
          } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
          }
        },
        py::arg("name"), "Force the conv2d algorithm: 'auto' (the heuristic), 'direct' or 'gemm1x1'.");
  m.def("set_conv_band_bytes",
        [](int64_t bytes) {
          try {
            return fastconv::conv::set_conv_band_bytes(bytes);
          } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
          }
        },
        py::arg("bytes"), "Set the conv2d row-band budget in bytes (tests); returns the previous one.");
  m.def("conv_algo", &fastconv::conv::conv_algo_name, "The forced conv2d algorithm ('auto' if none).");
}
