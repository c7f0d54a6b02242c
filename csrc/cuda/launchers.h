// Host launchers of the CUDA kernels in csrc/cuda/*.cu. They take raw pointers, sizes, host
// scalars and a stream, and never see a torch header, so the .cu files build with nvcc alone;
// the torch-facing checks and allocation live in csrc/<op>.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../limits.h"

namespace fastdiff {

// Element types of the buffers a launcher reads and writes.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// out[b, e] (row-major [batch, numel], dtype `dtype`) = the standard normal of element e for the
// 64-bit seed keys[b] at (step, stage, stream); see csrc/philox.h for the layout.
cudaError_t launch_philox_normal(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage,
                                 uint32_t stream, DType dtype, void* out, cudaStream_t cuda_stream);

// Counter-based Gaussians added by a solver step: z_d(b, e) is the standard normal of element e
// of sample b for seed keys[b] at (step[d], stage[d], stream[d]) (csrc/philox.h), the same
// function as fastdiff.reference.philox.philox_normal. At most kMaxDraws (csrc/limits.h) per step.
struct NoiseDraws {
  int count;
  uint32_t step[kMaxDraws];
  uint32_t stage[kMaxDraws];
  uint32_t stream[kMaxDraws];
  double coef[kMaxDraws];
};

// out[i] = a x[i] + sum_t coefs[t] terms[t][i] + sum_d draws.coef[d] z_d(b, e), for the
// row-major [batch, per_sample] layout i = b per_sample + e. Every buffer is dense, row-major and
// of dtype `dtype`; keys is int64 [batch] (unused when draws.count == 0). float16/bfloat16 are
// computed in float32, float64 in float64 (its Gaussians too).
cudaError_t launch_solver_step(const void* x, double a, const void* const* terms, const double* coefs, int num_terms,
                               const int64_t* keys, const NoiseDraws& draws, int64_t batch, int64_t per_sample,
                               DType dtype, void* out, cudaStream_t cuda_stream);

}  // namespace fastdiff
