// The fastconv operator table: every schema, once. Two libraries define it: `fastconv`
// (csrc/library.cpp; the real ops, CPU and CUDA backends) and `fastconv_simt` (csrc/simt/module.cpp;
// the CUDA kernels run by the SIMT emulator on CPU tensors, for tests). Backends register
// implementations in their own files (csrc/ops/<op>/<op>_cpu.cpp, <op>_cuda_glue.cpp) with
// TORCH_LIBRARY_IMPL; autograd formulas and fake (meta) kernels are registered from Python
// (fastconv/ops/).
#pragma once

#include <torch/library.h>

namespace fastconv {

inline void define_ops(torch::Library& m) {
  // ---- pooling (csrc/ops/pool)
  // Inference path: no argmax is computed or stored.
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def("max_pool2d_with_indices(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // Training path: like max_pool2d_with_indices, but the argmax is int32 whenever a plane has
  // fewer than 2^31 cells (half the index traffic); it is only ever fed to max_pool2d_backward.
  m.def("max_pool2d_with_argmax(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, "
        "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  m.def("avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("avg_pool2d_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
        "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("adaptive_avg_pool2d(Tensor input, int[2] output_size) -> Tensor");
  m.def("adaptive_avg_pool2d_backward(Tensor grad_output, Tensor input) -> Tensor");

  // ---- local response normalisation (csrc/ops/lrn), across channels, torch's semantics
  m.def("local_response_norm(Tensor input, int size, float alpha, float beta, float k) -> Tensor");
  m.def("local_response_norm_backward(Tensor grad_output, Tensor input, int size, float alpha, "
        "float beta, float k) -> Tensor");

  // ---- conv2d (csrc/ops/conv). padding is (top, bottom, left, right): 'same' with an even
  // kernel pads one more at the bottom / right, as torch does.
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, int groups) -> Tensor");
  // Inference epilogue fused into the output tile:
  //   relu?((conv(input, weight) + bias) * scale + shift + residual), scale / shift per channel.
  m.def("conv2d_fused(Tensor input, Tensor weight, Tensor? bias, Tensor? scale, Tensor? shift, "
        "Tensor? residual, bool relu, int[2] stride, int[4] padding, int[2] dilation, int groups) -> Tensor");
  // Gradients of conv2d for input, weight and bias; outputs not asked for in output_mask are
  // empty (shape (0,)).
  m.def("conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // ---- Squeeze-and-Excitation (csrc/ops/se); the squeeze is adaptive_avg_pool2d to 1x1.
  // y = relu?(input * scale[n, c] + residual): the SE scale, and with residual + relu the
  // SE-ResNet block tail in one pass. input (N, C, H, W), scale (N, C).
  m.def("channel_scale(Tensor input, Tensor scale, Tensor? residual, bool relu) -> Tensor");
  // (grad_scale (N, C) = sum over H, W of grad_output * mask * input, grad_residual =
  // grad_output * mask, or empty (0,) unless residual_grad and output are given, since
  // without a mask it is grad_output itself); mask = output > 0 when the forward output is
  // given (the ReLU), else 1.
  m.def("channel_scale_grad_scale(Tensor grad_output, Tensor input, Tensor? output, bool residual_grad) "
        "-> (Tensor, Tensor)");
  // grad_input = grad_output * mask * scale[n, c] + shift[n, c].
  m.def("channel_scale_grad_input(Tensor grad_output, Tensor scale, Tensor? shift, Tensor? output) -> Tensor");
  // The whole SE block, image by image (an image's second pass finds it in cache):
  //   pooled = mean_hw(input) (N, C), hidden = relu(pooled fc1_weight^T + fc1_bias) (N, C/r),
  //   scale = sigmoid(hidden fc2_weight^T + fc2_bias) (N, C),
  //   output = input * scale, or relu(input * scale + residual) with a residual.
  // fc1_weight (C/r, C), fc2_weight (C, C/r). pooled / hidden / scale are saved for backward.
  m.def("squeeze_excitation(Tensor input, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, "
        "Tensor? fc2_bias, Tensor? residual) -> (Tensor output, Tensor pooled, Tensor hidden, Tensor scale)");
  // (grad_input, grad_residual, dz1, dz2): dz1 / dz2 are the gradients of the FC layers'
  // pre-activations (N, C/r) / (N, C); grad_input / grad_residual are empty (0,) when
  // output_mask (input, residual) says so (grad_residual also without output, where it is
  // grad_output itself).
  m.def("squeeze_excitation_backward(Tensor grad_output, Tensor input, Tensor fc1_weight, Tensor fc2_weight, "
        "Tensor hidden, Tensor scale, Tensor? output, bool[2] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");

  // ---- Training-mode BatchNorm with the residual add and ReLU after it (csrc/ops/bn):
  //   output = relu?((input - mean[c]) * rsqrt(var[c] + eps) * weight[c] + bias[c] + residual)
  // with the batch statistics over N, H, W: mean and the biased var (C,), returned for the
  // running averages and the backward. input (N, C, H, W); weight / bias (C,) or absent.
  m.def("batch_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, bool relu, float eps) "
        "-> (Tensor output, Tensor mean, Tensor var)");
  // (grad_input, grad_weight (C,), grad_bias (C,), grad_residual): the gradient through the ReLU
  // (mask output > 0 or NaN when the forward output is given) and the batch statistics;
  // grad_residual is the masked grad_output, or empty (0,) unless residual_grad and output are
  // given (without a mask it is grad_output itself).
  m.def("batch_norm_act_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor mean, Tensor var, "
        "Tensor? output, float eps, bool residual_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace fastconv
