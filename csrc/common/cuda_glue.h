// What the CUDA glue (<op>_cuda_glue.cpp) needs from the backend, for both of its builds:
//   the CUDA extension: the current stream, a device guard, registrations for the CUDA key;
//   the SIMT emulator (FASTCONV_SIMT_EMU): CPU tensors, no stream, registrations for the CPU
//   key of the `fastconv_simt` namespace, so tests can call the emulated kernels side by side
//   with the CPU ops (torch.ops.fastconv_simt.<op> vs torch.ops.fastconv.<op>).
// Only c10/cuda headers: ATen/cuda/CUDAContext.h drags in cuSPARSE headers this toolkit lacks.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "simt.h"

#if defined(FASTCONV_SIMT_EMU)

#define FASTCONV_CUDA_LIB fastconv_simt
#define FASTCONV_CUDA_KEY CPU
#define FASTCONV_CUDA_STREAM() (static_cast<cudaStream_t>(nullptr))
#define FASTCONV_DEVICE_GUARD(t) ((void)(t))
#define FASTCONV_CUDA_CHECK(expr)                                                              \
  do {                                                                                         \
    const cudaError_t fastconv_err_ = (expr);                                                  \
    TORCH_CHECK(fastconv_err_ == cudaSuccess, "fastconv CUDA kernel (SIMT emulator) failed: ", \
                cudaGetErrorString(fastconv_err_), ": ", fastconv_simt_last_message());        \
  } while (0)

#else

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define FASTCONV_CUDA_LIB fastconv
#define FASTCONV_CUDA_KEY CUDA
#define FASTCONV_CUDA_STREAM() (c10::cuda::getCurrentCUDAStream().stream())
#define FASTCONV_DEVICE_GUARD(t) const c10::cuda::CUDAGuard fastconv_device_guard_((t).device())
#define FASTCONV_CUDA_CHECK(expr)                                                                   \
  do {                                                                                              \
    const cudaError_t fastconv_err_ = (expr);                                                       \
    TORCH_CHECK(fastconv_err_ == cudaSuccess, "fastconv CUDA kernel failed: ", cudaGetErrorString(fastconv_err_)); \
  } while (0)

#endif

namespace fastconv {

inline at::Tensor contiguous_or_undefined(const at::Tensor& t) { return t.defined() ? t.contiguous() : t; }

template <class T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// A contiguous kernel result in the layout the CPU op returns, allocated as the CPU op
// allocates it so the strides match too (also those of size-1 dimensions).
inline at::Tensor in_memory_format(const at::Tensor& t, at::MemoryFormat fmt) {
  if (fmt == at::MemoryFormat::Contiguous) return t;
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(fmt));
  out.copy_(t);
  return out;
}

}  // namespace fastconv
