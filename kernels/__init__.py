"""Triton kernels of the fused primitives, one module per primitive (installed as `fastdiff.kernels`)."""
