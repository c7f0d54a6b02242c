// One element of a float, double, half or bfloat16 buffer, read into and written from the kernels' arithmetic type
// (float for the 16-bit types, rounded to nearest on store); shared by the CUDA kernels of every fused op.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "launchers.h"

namespace fastdiff {

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// The element type of a buffer and the type the kernels compute in for it.
template <typename T, typename Acc>
struct ElementTypes {
  using storage_t = T;
  using acc_t = Acc;
};

// A launcher's dtype switch, written once: fn(ElementTypes<T, acc_t>{}) for the buffers' dtype.
template <typename Fn>
cudaError_t dispatch_dtype(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(ElementTypes<float, float>{});
    case DType::kFloat64:
      return fn(ElementTypes<double, double>{});
    case DType::kFloat16:
      return fn(ElementTypes<__half, float>{});
    case DType::kBFloat16:
      return fn(ElementTypes<__nv_bfloat16, float>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastdiff
