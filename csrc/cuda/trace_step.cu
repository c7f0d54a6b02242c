// CUDA kernel of fastdiff::trace_step: the solver update out = a x + sum_t coefs[t] terms[t] and
// the per-sample Hutchinson sum sum_p <u[p], v_p>, with the probes v_p generated in registers from
// the counter stream (fastdiff.reference.trace_step: counter (e / 4, step, stage + 2^16 p, STREAM_PROBE),
// Rademacher from the top bit of each Philox word, Gaussian by Box-Muller), in one launch.
// One block per sample: its threads stride over the sample's groups of four elements and the
// block reduces the dot in a fixed tree, so the result is deterministic and does not depend on the
// batch. float16/bfloat16 are computed in float32, float64 in float64; total is float64.
// Host side: launch_trace_step in trace_step_launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "trace_step_launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;  // a power of two (the tree reduction halves it)

// v[q] = probe value of element 4 g + q: +-1 from the top bit of word q, or the Box-Muller normal.
template <typename acc_t>
__device__ __forceinline__ void probe_group(const PhiloxWords& words, bool gaussian, acc_t v[4]) {
  if (gaussian) {
    box_muller(words, v);
  } else {
    v[0] = acc_t(1) - acc_t(2) * static_cast<acc_t>(words.r0 >> 31);
    v[1] = acc_t(1) - acc_t(2) * static_cast<acc_t>(words.r1 >> 31);
    v[2] = acc_t(1) - acc_t(2) * static_cast<acc_t>(words.r2 >> 31);
    v[3] = acc_t(1) - acc_t(2) * static_cast<acc_t>(words.r3 >> 31);
  }
}

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) trace_step_kernel(const TraceStepArgs args) {
  __shared__ acc_t partial[kThreads];
  const int64_t b = blockIdx.x;
  const int64_t per_sample = args.per_sample;
  const int64_t groups = (per_sample + 3) / 4;
  const int64_t row = b * per_sample;
  const int64_t plane = args.batch * per_sample;
  const T* x = static_cast<const T*>(args.x);
  const T* u = static_cast<const T*>(args.u);
  T* out = static_cast<T*>(args.out);
  const acc_t a = static_cast<acc_t>(args.a);
  const uint64_t seed = static_cast<uint64_t>(args.keys[b]);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  acc_t dot = acc_t(0);
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    const int64_t first = row + 4 * g;
    const int len = per_sample - 4 * g < 4 ? static_cast<int>(per_sample - 4 * g) : 4;
    acc_t acc[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j] = j < len ? a * load(x + first + j) : acc_t(0);
#pragma unroll
    for (int t = 0; t < kMaxTerms; ++t) {
      if (t == args.num_terms) break;
      const T* term = static_cast<const T*>(args.terms[t]);
      const acc_t coef = static_cast<acc_t>(args.coefs[t]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < len) acc[j] += coef * load(term + first + j);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < len) store(out + first + j, acc[j]);
    }
    for (int64_t p = 0; p < args.probes; ++p) {
      const uint32_t stage_word = args.stage + static_cast<uint32_t>(p) * kProbeStride;
      const PhiloxWords words = philox4x32_10(static_cast<uint32_t>(g), args.step, stage_word, kStreamProbe, k0, k1);
      acc_t v[4];
      probe_group(words, args.gaussian, v);
      const T* up = u + p * plane + first;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < len) dot += load(up + j) * v[j];
      }
    }
  }
  partial[threadIdx.x] = dot;
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double mean = static_cast<double>(partial[0]) / static_cast<double>(args.probes);
    args.total_out[b] = args.total[b] + args.c + args.w * mean;
  }
}

template <typename T, typename acc_t>
cudaError_t launch(const TraceStepArgs& args, cudaStream_t cuda_stream) {
  if (args.num_terms < 0 || args.num_terms > kMaxTerms || args.probes < 1 || args.batch < 0 || args.per_sample < 0) {
    return cudaErrorInvalidValue;
  }
  if (args.batch == 0) return cudaSuccess;
  if (args.batch > 0x7fffffff) return cudaErrorInvalidValue;  // one block per sample in gridDim.x
  trace_step_kernel<T, acc_t><<<static_cast<unsigned>(args.batch), kThreads, 0, cuda_stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_trace_step(const TraceStepArgs& args, DType dtype, cudaStream_t cuda_stream) {
  return dispatch_dtype(dtype, [&](auto types) {
    using Types = decltype(types);
    return launch<typename Types::storage_t, typename Types::acc_t>(args, cuda_stream);
  });
}

}  // namespace fastdiff
