// The pool CUDA kernels and glue built by g++ for the SIMT emulator (torch.ops.fastconv_simt).
#define FASTCONV_SIMT_EMU 1
#include "pool_cuda.cu"
#include "pool_cuda_glue.cpp"
