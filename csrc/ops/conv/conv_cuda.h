// CUDA conv2d launchers (csrc/ops/conv/conv_cuda.cu): raw pointers, NCHW-contiguous tensors,
// weight (OC, C / groups, KH, KW) contiguous, a stream. No torch headers.
#pragma once

#include <cstdint>

#include "../../common/simt.h"
#include "conv_math.h"

namespace fastconv {
namespace conv {
namespace cuda {

// y = relu?(conv(x, w) * scale + shift + residual); scale, shift (OC,) and residual (the
// output's shape, NCHW) may each be null.
template <class T>
cudaError_t forward(const ConvParams& p, const T* x, const T* w, const T* scale, const T* shift,
                    const T* residual, bool relu, T* y, cudaStream_t stream);

// gx (N, C, H, W) from gy (N, OC, OH, OW).
template <class T>
cudaError_t input_grad(const ConvParams& p, const T* gy, const T* w, T* gx, cudaStream_t stream);

// Floats of scratch weight_grad needs (its split-K partial sums), 0 for none.
int64_t weight_grad_workspace(const ConvParams& p);

// gw (OC, C / groups, KH, KW); workspace: weight_grad_workspace(p) elements (may be null if 0).
template <class T>
cudaError_t weight_grad(const ConvParams& p, const T* gy, const T* x, T* gw, T* workspace, cudaStream_t stream);

// gb (OC,) = sum of gy over N, OH, OW.
template <class T>
cudaError_t bias_grad(const ConvParams& p, const T* gy, T* gb, cudaStream_t stream);

}  // namespace cuda
}  // namespace conv
}  // namespace fastconv
