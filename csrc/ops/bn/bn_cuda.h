// Host launchers of the CUDA BatchNorm + residual + ReLU kernels (bn_cuda.cu); no torch
// headers. Tensors are contiguous channels-first x[n][c][i] (i over H * W); per-channel
// arrays hold C values. Optional inputs / outputs are nullptr when absent. Each launcher
// returns cudaGetLastError() after its launches (cudaSuccess when there is nothing to do).
#pragma once

#include <cstdint>

#include "../../common/simt.h"
#include "bn_math.h"

namespace fastconv {
namespace bn {
namespace cuda {

// y = act((x - mean) * weight / sqrt(var + eps) + bias + r) with the batch statistics mean /
// var (biased) written out; `scratch` holds 2 C values (the per-channel scale and bias).
template <class T>
cudaError_t batch_norm_act(const T* x, const T* weight, const T* bias, const T* r, T* y, T* mean, T* var,
                           T* scratch, bool relu, double eps, const BnParams& p, cudaStream_t stream);

// grad_x, grad_weight, grad_bias (C each) and, when grad_r is given, grad_r = g (the masked
// grad_output; y, the forward output, gives the ReLU mask when given). `scratch` holds 3 C
// values (k1, k2, k3).
template <class T>
cudaError_t batch_norm_act_backward(const T* g, const T* x, const T* weight, const T* mean, const T* var, const T* y,
                                    T* grad_x, T* grad_weight, T* grad_bias, T* grad_r, T* scratch, double eps,
                                    const BnParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace bn
}  // namespace fastconv
