// The conv2d CUDA kernels and glue built by g++ for the SIMT emulator (torch.ops.fastconv_simt).
#define FASTCONV_SIMT_EMU 1
#include "conv_cuda.cu"
#include "conv_cuda_glue.cpp"
