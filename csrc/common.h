// Torch-side helpers shared by the op files (never included by csrc/cuda/*.cu).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#ifdef FASTDIFF_WITH_CUDA
#include "cuda/launchers.h"
#endif

namespace fastdiff {

// Elementwise work below this many elements stays on one thread.
constexpr int64_t kParallelThreshold = 1 << 15;

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_dtype(at::ScalarType t, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(is_supported_float(t), op, ": ", arg, " must be float32, float64, float16 or bfloat16, got ", t);
}

#ifdef FASTDIFF_WITH_CUDA
inline DType launcher_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "fastdiff: no CUDA kernel for dtype ", t);
  }
}
#endif

}  // namespace fastdiff
