// Host launchers of the CUDA pooling kernels (pool_cuda.cu); no torch headers. Every tensor is
// contiguous NCHW: input / grad_input are (p.batch, p.channels, p.in_h, p.in_w), output /
// grad_output / indices are (p.batch, p.channels, p.out_h, p.out_w). Argmax indices are
// plane-local (ih * in_w + iw), as torch's. Each launcher returns cudaGetLastError() after
// its launches (cudaSuccess when there is nothing to do). T is float or double; the index
// type I is int32_t (a plane of fewer than 2^31 cells) or int64_t.
#pragma once

#include <cstdint>

#include "../../common/simt.h"
#include "pool_math.h"

namespace fastconv {
namespace pool {
namespace cuda {

// Max pooling (kernel, stride, padding, dilation and out_h / out_w of p). `indices` may be
// null (no argmax wanted). A NaN in a window wins (the last NaN's index); a window of only
// -inf, or with no tap inside the input, keeps its first in-bounds tap as torch does.
template <class T, class I>
cudaError_t max_pool2d_forward(const T* input, T* output, I* indices, const Pool2dParams& p,
                               cudaStream_t stream);

// grad_input[cell] = sum of grad_output over the outputs whose stored argmax is that cell
// (in output order); every grad_input element is written.
template <class T, class I>
cudaError_t max_pool2d_backward(const T* grad_output, const I* indices, T* grad_input,
                                const Pool2dParams& p, cudaStream_t stream);

// Average pooling (no dilation; count_include_pad and divisor_override of p).
template <class T>
cudaError_t avg_pool2d_forward(const T* input, T* output, const Pool2dParams& p, cudaStream_t stream);

template <class T>
cudaError_t avg_pool2d_backward(const T* grad_output, T* grad_input, const Pool2dParams& p,
                                cudaStream_t stream);

// Adaptive average pooling to p.out_h x p.out_w: bins [floor(o * in / out), ceil((o + 1) * in / out)).
template <class T>
cudaError_t adaptive_avg_pool2d_forward(const T* input, T* output, const Pool2dParams& p,
                                        cudaStream_t stream);

template <class T>
cudaError_t adaptive_avg_pool2d_backward(const T* grad_output, T* grad_input, const Pool2dParams& p,
                                         cudaStream_t stream);

}  // namespace cuda
}  // namespace pool
}  // namespace fastconv
