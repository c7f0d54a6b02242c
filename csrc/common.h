// Torch-side helpers shared by the op files (never included by csrc/cuda/*.cu).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "float_io.h"

#ifdef FASTDIFF_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launchers.h"
#endif

// Registers the kernels of the operator fastdiff::<op>: fastdiff::<op>_cpu for CPU tensors and, in a CUDA build,
// fastdiff::<op>_cuda for CUDA tensors. Used once per op file, at file scope.
#define FASTDIFF_REGISTER_CPU_KERNEL(op) \
  TORCH_LIBRARY_IMPL(fastdiff, CPU, m) { m.impl(#op, &fastdiff::op##_cpu); }
#ifdef FASTDIFF_WITH_CUDA
#define FASTDIFF_REGISTER_KERNELS(op) \
  FASTDIFF_REGISTER_CPU_KERNEL(op)    \
  TORCH_LIBRARY_IMPL(fastdiff, CUDA, m) { m.impl(#op, &fastdiff::op##_cuda); }
#else
#define FASTDIFF_REGISTER_KERNELS(op) FASTDIFF_REGISTER_CPU_KERNEL(op)
#endif

namespace fastdiff {

// On x86-64 Linux, a function marked with this is also compiled for AVX2 and SSE4.1 (which have
// 32-bit lane multiplies) and the loader picks the best clone for the CPU; elsewhere a no-op.
// Without FMA in the clones, every clone rounds exactly as the baseline does.
#if defined(__x86_64__) && defined(__linux__)
#define FASTDIFF_MULTIVERSION __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define FASTDIFF_MULTIVERSION
#endif

// Elementwise work below this many elements stays on one thread.
constexpr int64_t kParallelThreshold = 1 << 15;

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_dtype(at::ScalarType t, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(is_supported_float(t), op, ": ", arg, " must be float32, float64, float16 or bfloat16, got ", t);
}

// fn(IO{}) with IO the element type of `t` (csrc/float_io.h); `t` must be a supported float.
template <typename Fn>
void dispatch_float(at::ScalarType t, const Fn& fn) {
  switch (t) {
    case at::kFloat:
      return fn(Float32IO{});
    case at::kDouble:
      return fn(Float64IO{});
    case at::kHalf:
      return fn(Float16IO{});
    case at::kBFloat16:
      return fn(BFloat16IO{});
    default:
      TORCH_CHECK_TYPE(false, "fastdiff: no CPU kernel for dtype ", t);
  }
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
