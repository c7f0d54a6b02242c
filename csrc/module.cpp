// fastdiff._C: importing it registers the torch.ops.fastdiff operators. Schemas live here;
// implementations per device in csrc/<op>.cpp; fake (meta) kernels for torch.compile in
// fastdiff/ops/<op>.py, which the schemas point to.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "fastdiff's compiled CPU/CUDA kernels, exposed as torch.ops.fastdiff.*",  // doc
      -1,  // size: no per-module state
      nullptr,  // methods: none, everything goes through torch.ops
      nullptr,  // slots
      nullptr,  // traverse
      nullptr,  // clear
      nullptr,  // free
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fastdiff, m) {
  // Standard normals [B, numel]: Philox4x32-10 keyed by keys[b], counter (e // 4, step, stage, stream), Box-Muller.
  m.set_python_module("fastdiff.ops.philox");
  m.def("philox_normal(Tensor keys, int numel, int step, int stage, int stream, ScalarType dtype) -> Tensor");
  // a x + sum_i bs[i] ks[i] + sum_d cs[d] z_d in x's dtype, z_d the standard normals of
  // (keys[b], element, step, stage, stream) with draws = [step_0, stage_0, stream_0, step_1, ...].
  m.set_python_module("fastdiff.ops.solver_step");
  m.def("solver_step(Tensor x, Tensor[] ks, float a, float[] bs, Tensor? keys, int[] draws, float[] cs) -> Tensor");
}
