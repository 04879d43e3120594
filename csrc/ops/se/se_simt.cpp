// The se CUDA kernels and glue built by g++ for the SIMT emulator (torch.ops.fastconv_simt).
#define FASTCONV_SIMT_EMU 1
#include "se_cuda.cu"
#include "se_cuda_glue.cpp"
