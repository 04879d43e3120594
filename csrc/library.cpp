// The fastconv operator table: every schema, once. Backends register implementations in
// their own files (csrc/ops/<op>/<op>_cpu.cpp, <op>_cuda.cpp) with TORCH_LIBRARY_IMPL;
// autograd formulas and fake (meta) kernels are registered from Python (fastconv/ops/).
#include <torch/library.h>

TORCH_LIBRARY(fastconv, m) {
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
}
