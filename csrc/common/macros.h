// Portability macros shared by the C++ and CUDA halves of every op.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTCONV_HOST_DEVICE __host__ __device__
#else
#define FASTCONV_HOST_DEVICE
#endif

// static: every translation unit keeps its own copy, so the linker never swaps the portable
// path's copy for one compiled with AVX-512 flags (an ODR merge of the per-ISA objects).
#define FASTCONV_HOST_DEVICE_INLINE FASTCONV_HOST_DEVICE static inline

#if defined(__GNUC__)
#define FASTCONV_ALWAYS_INLINE inline __attribute__((always_inline))
#define FASTCONV_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))
#define FASTCONV_RESTRICT __restrict__
#else
#define FASTCONV_ALWAYS_INLINE inline
#define FASTCONV_ALWAYS_INLINE_LAMBDA
#define FASTCONV_RESTRICT
#endif
