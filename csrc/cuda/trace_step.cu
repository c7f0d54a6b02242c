// CUDA kernel of fastdiff::trace_step: the solver update out = a x + sum_t coefs[t] terms[t] and
// the per-sample Hutchinson sum sum_p <u[p], v_p>, with the probes v_p generated in registers from
// the counter stream (fastdiff.reference.trace_step: counter (e / 4, step, stage + 2^16 p, STREAM_PROBE),
// Rademacher from the top bit of each Philox word, Gaussian by Box-Muller).
// One block per (sample, part), a part a fixed range of the sample's elements (trace_step_partition, a function
// of the sample size only): its threads stride over the part's groups of four elements (vector loads and stores
// where aligned) and the block reduces the dot in a fixed order; with several parts a second launch adds each
// sample's part dots in part order. No atomics: the result is deterministic and does not depend on the batch.
// float16/bfloat16 are computed in float32, float64 in float64; total is float64.
// Host side: launch_trace_step in trace_step_launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "group_io.cuh"
#include "trace_step_launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

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

// Block (b, q) takes part q of sample b (trace_step_partition): its threads stride over the part's groups of four
// elements, writing out and accumulating <u[p], v_p>; a fixed warp-shuffle tree, then the warps' sums in warp order,
// give the part's dot. One part: total_out directly; several: the part's dot goes to the workspace.
template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) trace_step_kernel(const TraceStepArgs args, int64_t parts, int64_t part_len,
                                                              bool vec) {
  __shared__ double warp_sums[kWarps];
  const int64_t b = blockIdx.x / parts;
  const int64_t q = blockIdx.x - b * parts;
  const int64_t per_sample = args.per_sample;
  const int64_t begin = q * part_len;
  const int64_t end = begin + part_len < per_sample ? begin + part_len : per_sample;
  const int64_t row = b * per_sample;
  const int64_t plane = args.batch * per_sample;
  const T* x = static_cast<const T*>(args.x);
  const T* u = static_cast<const T*>(args.u);
  T* out = static_cast<T*>(args.out);
  const acc_t a = static_cast<acc_t>(args.a);
  const uint64_t seed = static_cast<uint64_t>(args.keys[b]);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  acc_t dot = acc_t(0);
  for (int64_t g = begin / 4 + threadIdx.x; 4 * g < end; g += kThreads) {
    const int64_t first = row + 4 * g;
    const int len = end - 4 * g < 4 ? static_cast<int>(end - 4 * g) : 4;
    acc_t acc[4], v[4];
    load_four(x + first, len, vec, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j] = a * v[j];
#pragma unroll
    for (int t = 0; t < kMaxTerms; ++t) {
      if (t == args.num_terms) break;
      load_four(static_cast<const T*>(args.terms[t]) + first, len, vec, v);
      const acc_t coef = static_cast<acc_t>(args.coefs[t]);
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += coef * v[j];
    }
    store_four(out + first, len, vec, acc);
    for (int64_t p = 0; p < args.probes; ++p) {
      const uint32_t stage_word = args.stage + static_cast<uint32_t>(p) * kProbeStride;
      const PhiloxWords words = philox4x32_10(static_cast<uint32_t>(g), args.step, stage_word, kStreamProbe, k0, k1);
      acc_t probe[4];
      probe_group(words, args.gaussian, probe);
      load_four(u + p * plane + first, len, vec, v);  // zero past len
#pragma unroll
      for (int j = 0; j < 4; ++j) dot += v[j] * probe[j];
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_down_sync(0xffffffffu, dot, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = static_cast<double>(dot);
  __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0.0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += warp_sums[w];
    if (parts == 1) {
      args.total_out[b] = args.total[b] + args.c + args.w * (sum / static_cast<double>(args.probes));
    } else {
      args.workspace[blockIdx.x] = sum;
    }
  }
}

// total_out[b] = total[b] + c + w (1/probes) sum_q dot_q, the parts' dots added in part order.
__global__ void __launch_bounds__(kThreads) trace_total_kernel(const TraceStepArgs args, int64_t parts) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= args.batch) return;
  double sum = 0.0;
  for (int64_t q = 0; q < parts; ++q) sum += args.workspace[b * parts + q];
  args.total_out[b] = args.total[b] + args.c + args.w * (sum / static_cast<double>(args.probes));
}

template <typename T, typename acc_t>
cudaError_t launch(const TraceStepArgs& args, cudaStream_t cuda_stream) {
  if (args.num_terms < 0 || args.num_terms > kMaxTerms || args.probes < 1 || args.batch < 0 || args.per_sample < 0) {
    return cudaErrorInvalidValue;
  }
  if (args.batch == 0) return cudaSuccess;
  const ItoPartition split = trace_step_partition(args.per_sample);
  const int64_t blocks = args.batch * split.parts;
  if (blocks > INT32_MAX || (split.parts > 1 && args.workspace == nullptr)) return cudaErrorInvalidValue;
  bool vec = args.per_sample % 4 == 0 && group_aligned<T>(args.x) && group_aligned<T>(args.u) && group_aligned<T>(args.out);
  for (int t = 0; t < args.num_terms; ++t) vec = vec && group_aligned<T>(args.terms[t]);
  trace_step_kernel<T, acc_t><<<static_cast<unsigned>(blocks), kThreads, 0, cuda_stream>>>(args, split.parts,
                                                                                           split.part_len, vec);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || split.parts == 1) return err;
  const int64_t total_blocks = (args.batch + kThreads - 1) / kThreads;
  trace_total_kernel<<<static_cast<unsigned>(total_blocks), kThreads, 0, cuda_stream>>>(args, split.parts);
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
