// CUDA kernel of fastdiff::solver_step: out = a x + sum_t coefs[t] terms[t], elementwise over
// dense buffers that share one layout. float16/bfloat16 load and store in their type and add in
// float32. Host side: launch_solver_step in launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;
// Terms travel by value in the kernel's parameters; a step with more runs several passes.
constexpr int kTermsPerPass = 8;

template <typename T, typename acc_t>
struct Terms {
  const T* ptr[kTermsPerPass];
  acc_t coef[kTermsPerPass];
  int count;
};

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// x and out may be the same buffer (later passes); each element is read before it is written.
template <typename T, typename acc_t>
__global__ void solver_step_kernel(const T* x, acc_t a, Terms<T, acc_t> terms, int64_t n, T* out) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    acc_t acc = a * load(x + i);
    for (int t = 0; t < terms.count; ++t) acc += terms.coef[t] * load(terms.ptr[t] + i);
    store(out + i, acc);
  }
}

template <typename T, typename acc_t>
cudaError_t launch(const void* x, double a, const void* const* ptrs, const double* coefs, int num_terms, int64_t n,
                   void* out, cudaStream_t cuda_stream) {
  if (n == 0) return cudaSuccess;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  const T* src = static_cast<const T*>(x);
  acc_t scale = static_cast<acc_t>(a);
  int done = 0;
  do {
    Terms<T, acc_t> terms{};
    terms.count = num_terms - done < kTermsPerPass ? num_terms - done : kTermsPerPass;
    for (int t = 0; t < terms.count; ++t) {
      terms.ptr[t] = static_cast<const T*>(ptrs[done + t]);
      terms.coef[t] = static_cast<acc_t>(coefs[done + t]);
    }
    solver_step_kernel<T, acc_t>
        <<<static_cast<unsigned>(blocks), kThreads, 0, cuda_stream>>>(src, scale, terms, n, static_cast<T*>(out));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    done += terms.count;
    src = static_cast<const T*>(out);
    scale = acc_t(1);
  } while (done < num_terms);
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_solver_step(const void* x, double a, const void* const* terms, const double* coefs, int num_terms,
                               int64_t n, DType dtype, void* out, cudaStream_t cuda_stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch<float, float>(x, a, terms, coefs, num_terms, n, out, cuda_stream);
    case DType::kFloat64:
      return launch<double, double>(x, a, terms, coefs, num_terms, n, out, cuda_stream);
    case DType::kFloat16:
      return launch<__half, float>(x, a, terms, coefs, num_terms, n, out, cuda_stream);
    case DType::kBFloat16:
      return launch<__nv_bfloat16, float>(x, a, terms, coefs, num_terms, n, out, cuda_stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastdiff
