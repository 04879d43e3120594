// fastconv._simt: the CUDA kernels compiled by g++ for the SIMT emulator (csrc/common/simt.h)
// and registered as torch.ops.fastconv_simt.<op> on CPU tensors, with the same schemas as
// torch.ops.fastconv. Tests run them side by side with the CPU ops; nothing else uses them.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "../schema_table.h"

TORCH_LIBRARY(fastconv_simt, m) { fastconv::define_ops(m); }

PYBIND11_MODULE(_simt, m) {
  m.doc() = "fastconv's CUDA kernels run by a CPU SIMT emulator (torch.ops.fastconv_simt), for tests";
#if defined(FASTCONV_SIMT_THREADS)
  m.attr("backend") = "threads";
#else
  m.attr("backend") = "fibers";
#endif
}
