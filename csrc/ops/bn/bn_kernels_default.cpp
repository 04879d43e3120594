// BatchNorm + ReLU kernels for the default path; the build gives this file its ISA flags.
#define FASTCONV_CPU_NS cpu_default
#define FASTCONV_ISA_NAME default
#include "bn_kernels_impl.h"
