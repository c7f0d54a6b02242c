// Host launcher of the CUDA kernels in csrc/cuda/ito_step.cu (fastdiff::ito_step): raw pointers, sizes, host
// scalars and a stream, no torch headers, so the .cu builds with nvcc alone.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "launchers.h"

namespace fastdiff {

constexpr int kItoMaxModels = 8;

// The step's host scalars (float64) and the M denoised buffers (dense, row-major, x's dtype).
struct ItoParams {
  int models;  // M, 1..kItoMaxModels (AND: at least 2)
  int mode;    // 0 = OR, 1 = AND
  double delta, sqrt_delta, inv_s2, temperature, rcond;
  uint32_t step, stage, stream;
  const void* denoised[kItoMaxModels];
  double log_weights[kItoMaxModels];
  double bias[kItoMaxModels];
};

// Per-sample statistics of the reduction pass: <e_i, e_j> (M x M), <z, e_i> (M); AND adds the centred pair.
inline int64_t ito_step_stat_count(int models, int mode) {
  const int64_t m = models;
  return mode == 1 ? 2 * (m * m + m) : m * m + m;
}

// Each sample is cut into `parts` ranges of `part_len` elements (a multiple of 4; the last may be shorter),
// a function of the sample size only, so the summation order never depends on the device.
struct ItoPartition {
  int64_t parts, part_len;
};

inline ItoPartition ito_step_partition(int64_t per_sample) {
  const int64_t groups = std::max<int64_t>(1, (per_sample + 3) / 4);
  const int64_t wanted = std::min<int64_t>(64, std::max<int64_t>(1, per_sample / 4096));
  const int64_t per_part = (groups + wanted - 1) / wanted;
  return {(groups + per_part - 1) / per_part, 4 * per_part};
}

// x' (row-major [batch, per_sample], dtype `dtype`), ell' and kappa ([batch, M], float64 for float64 x, else
// float32, like ell) of one superposed Itô step; workspace holds batch * parts * ito_step_stat_count doubles.
// keys: int64 [batch] seeds of the counter-based Gaussians (csrc/philox.h) at (step, stage, stream).
cudaError_t launch_ito_step(const void* x, const ItoParams& params, const void* ell, const int64_t* keys, int64_t batch,
                            int64_t per_sample, DType dtype, double* workspace, void* out, void* ell_next, void* kappa,
                            cudaStream_t cuda_stream);

}  // namespace fastdiff
