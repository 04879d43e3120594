// BatchNorm + ReLU kernels for the avx2 path; the build gives this file its ISA flags.
#define FASTCONV_CPU_NS cpu_avx2
#define FASTCONV_ISA_NAME avx2
#include "bn_kernels_impl.h"
