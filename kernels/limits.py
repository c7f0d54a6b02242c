"""The fused kernels' limits, written once in Python (no triton import, so the ops' checks read them too).

csrc/limits.h holds the C++/CUDA copy; tests/test_constants.py fails when the two drift apart.
"""

MAX_DRAWS = 64  # counter draws inside one fused solver step (a Brownian increment brings up to 2 depth + 1); more: more passes
MAX_TERMS = 8  # stage tensors per kernel pass (solver_step: further terms take more passes; trace_step: the limit)
MAX_MODELS = 8  # denoised tensors of one ito_step
PART_MIN = 4096  # ito_step: a part (a fixed element range of a sample) covers at least this many elements ...
MAX_PARTS = 64  # ... and a sample has at most this many parts
