// Host launchers of the CUDA Squeeze-and-Excitation kernels (se_cuda.cu); no torch headers.
// Tensors are contiguous: activations channels-first x[n][c][i] (i over H * W), per-channel
// values (N, C), fc1 (C/r, C), fc2 (C, C/r). Optional inputs / outputs are nullptr when absent.
// Each launcher returns cudaGetLastError() after its launches (cudaSuccess when there is
// nothing to do).
#pragma once

#include <cstdint>

#include "../../common/simt.h"
#include "se_math.h"

namespace fastconv {
namespace se {
namespace cuda {

// y = act(x * s[n, c] + r), act = ReLU when `relu`.
template <class T>
cudaError_t channel_scale(const T* x, const T* s, const T* r, T* y, bool relu, const SeParams& p,
                          cudaStream_t stream);

// grad_s[n, c] = sum_i g * m * x, and grad_r = g * m when grad_r is given; m = relu_passes(y)
// when y (the forward output) is given, else 1.
template <class T>
cudaError_t channel_scale_grad_scale(const T* g, const T* x, const T* y, T* grad_s, T* grad_r, const SeParams& p,
                                     cudaStream_t stream);

// grad_x = g * m * s[n, c] (+ t[n, c] when t is given); m as above.
template <class T>
cudaError_t channel_scale_grad_input(const T* g, const T* y, const T* s, const T* t, T* grad_x, const SeParams& p,
                                     cudaStream_t stream);

// The SE block: pooled = mean_hw(x), hidden = relu(fc1 pooled + b1) (N, squeezed),
// scale = sigmoid(fc2 hidden + b2), y = x * scale, or relu(x * scale + r) when r is given.
template <class T>
cudaError_t squeeze_excitation(const T* x, const T* w1, const T* b1, const T* w2, const T* b2, const T* r, T* y,
                               T* pooled, T* hidden, T* scale, const SeParams& p, int64_t squeezed,
                               cudaStream_t stream);

// Its backward: dz2 = (sum_i g * m * x) * s (1 - s) (N, C), dz1 = (fc2^T dz2) * (hidden > 0)
// (N, squeezed), grad_r = g * m when grad_r is given, and when grad_x is given
// grad_x = g * m * s + shift with shift = (fc1^T dz1) / (H W), for which `shift` is an (N, C)
// scratch buffer (unused, may be nullptr, without grad_x).
template <class T>
cudaError_t squeeze_excitation_backward(const T* g, const T* x, const T* w1, const T* w2, const T* hidden,
                                        const T* scale, const T* y, T* grad_x, T* grad_r, T* dz1, T* dz2, T* shift,
                                        const SeParams& p, int64_t squeezed, cudaStream_t stream);

}  // namespace cuda
}  // namespace se
}  // namespace fastconv
