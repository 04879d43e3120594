// BatchNorm + ReLU kernels for the avx512 path; the build gives this file its ISA flags.
#define FASTCONV_CPU_NS cpu_avx512
#define FASTCONV_ISA_NAME avx512
#include "bn_kernels_impl.h"
