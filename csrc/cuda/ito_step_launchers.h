// Host launcher of the CUDA kernels in csrc/cuda/ito_step.cu (fastdiff::ito_step): raw pointers, sizes, host
// scalars and a stream, no torch headers, so the .cu builds with nvcc alone.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../ito_weights.h"
#include "launchers.h"

namespace fastdiff {

// The CUDA kernels' parts: ranges of whole groups of four elements (csrc/ito_weights.h).
inline ItoPartition ito_step_partition(int64_t per_sample) { return ito_partition(per_sample, 4); }

// x' (row-major [batch, per_sample], dtype `dtype`), ell' and kappa ([batch, M], float64 for float64 x, else
// float32, like ell) of one superposed Itô step; workspace holds batch * parts * ito_stat_count doubles.
// keys: int64 [batch] seeds of the counter-based Gaussians (csrc/philox.h) at (step, stage, stream).
cudaError_t launch_ito_step(const void* x, const ItoParams& params, const void* ell, const int64_t* keys, int64_t batch,
                            int64_t per_sample, DType dtype, double* workspace, void* out, void* ell_next, void* kappa,
                            cudaStream_t cuda_stream);

}  // namespace fastdiff
