// The bn CUDA kernels and glue built by g++ for the SIMT emulator (torch.ops.fastconv_simt).
#define FASTCONV_SIMT_EMU 1
#include "bn_cuda.cu"
#include "bn_cuda_glue.cpp"
