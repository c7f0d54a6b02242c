"""Triton kernels of the fused primitives, one module per primitive (installed as `fastdiff.kernels`):
`philox` (counter-based normals), `solver_step` (the fused step), `trace_step` and `ito_step`, plus `limits`
(the kernels' limits, plain Python, which the ops read too). Each kernel module imports triton; to run them on
CPU tensors in Triton's interpreter, set TRITON_INTERPRET=1 before importing them (the kernels read it when they
are defined)."""
