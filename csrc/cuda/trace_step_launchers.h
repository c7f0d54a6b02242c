// Host launcher of the CUDA kernel in csrc/cuda/trace_step.cu (no torch headers, so the .cu
// builds with nvcc alone; checks and allocation live in csrc/trace_step.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../ito_weights.h"
#include "launchers.h"

namespace fastdiff {

// Buffers are dense and row-major, of the launch's dtype unless stated: x, terms[t] and out are
// [batch, per_sample], u is [probes, batch, per_sample]; keys int64 [batch]; total and total_out
// float64 [batch].
struct TraceStepArgs {
  const void* x;
  double a;
  const void* terms[kMaxTerms];
  double coefs[kMaxTerms];
  int num_terms;
  const void* u;
  int64_t probes;
  const int64_t* keys;
  uint32_t step;
  uint32_t stage;
  bool gaussian;
  const double* total;
  double c;
  double w;
  int64_t batch;
  int64_t per_sample;
  void* out;
  double* total_out;
  double* workspace;  // batch * trace_step_partition(per_sample).parts doubles; unused (may be null) for one part
};

// The kernel's parts of a sample: ranges of whole groups of four elements, at least kPartMin elements each and at
// most kMaxParts (csrc/limits.h), as ito_step cuts its samples.
inline ItoPartition trace_step_partition(int64_t per_sample) { return ito_partition(per_sample, 4); }

// out = a x + sum_t coefs[t] terms[t]; total_out[b] = total[b] + c + w (1/probes) sum_p <u[p, b], v_p(b)>,
// v_p(b) the probe of fastdiff.reference.trace_step: counter (e / 4, step, stage + 2^16 p, 1) under
// keys[b], Rademacher (top bit of each Philox word) or Gaussian (Box-Muller). One block per part of a
// sample, fixed-order reductions: deterministic, and independent of the batch around a sample.
cudaError_t launch_trace_step(const TraceStepArgs& args, DType dtype, cudaStream_t cuda_stream);

}  // namespace fastdiff
