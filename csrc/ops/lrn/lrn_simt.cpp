// The lrn CUDA kernels and glue built by g++ for the SIMT emulator (torch.ops.fastconv_simt).
#define FASTCONV_SIMT_EMU 1
#include "lrn_cuda.cu"
#include "lrn_cuda_glue.cpp"
