// Host launchers of the CUDA LRN kernels (lrn_cuda.cu); no torch headers. Tensors are
// contiguous channels-first x[n][c][s], s over the `inner` positions after C. Each launcher
// returns cudaGetLastError() after its launches (cudaSuccess when there is nothing to do).
#pragma once

#include <cstdint>

#include "../../common/simt.h"
#include "lrn_math.h"

namespace fastconv {
namespace lrn {
namespace cuda {

// y = x / (k + alpha / size * window sum of x^2)^beta.
template <class T>
cudaError_t lrn_forward(const T* x, T* y, const LrnParams& p, cudaStream_t stream);

// grad_x from grad_y and x. `workspace` holds batch * channels * inner elements (the u terms
// of lrn_math.h's backward), scratch only.
template <class T>
cudaError_t lrn_backward(const T* grad_y, const T* x, T* grad_x, T* workspace, const LrnParams& p,
                         cudaStream_t stream);

}  // namespace cuda
}  // namespace lrn
}  // namespace fastconv
