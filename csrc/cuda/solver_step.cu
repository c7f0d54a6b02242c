// CUDA kernel of fastdiff::solver_step: out = a x + sum_t coefs[t] terms[t] + sum_d c_d z_d over
// dense row-major [batch, per_sample] buffers, where z_d are the counter-based Gaussians of
// csrc/philox.h drawn in place. One thread per group of four elements of a sample: one Philox
// block per draw covers the group, and its loads and stores are vectorized when sizes and
// alignment allow. float16/bfloat16 are computed in float32, float64 in float64 (its Gaussians
// too). Host side: launch_solver_step in launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;
// Terms travel by value in the kernel's parameters, kMaxTerms (csrc/limits.h) per pass; a step with more runs
// several passes.

template <typename T, typename acc_t>
struct Terms {
  const T* ptr[kMaxTerms];
  acc_t coef[kMaxTerms];
  int count;
};

// Four consecutive elements, aligned for one 8- or 16-byte access (two for float64).
template <typename T>
struct alignas(4 * sizeof(T) < 16 ? 4 * sizeof(T) : 16) Group {
  T v[4];
};

// v[j] = p[j] for the group's len elements (VEC: len == 4 and p aligned as Group<T>).
template <bool VEC, typename T, typename acc_t>
__device__ __forceinline__ void load_group(const T* p, int len, acc_t v[4]) {
  if constexpr (VEC) {
    const Group<T> q = *reinterpret_cast<const Group<T>*>(p);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = load(q.v + j);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = j < len ? load(p + j) : acc_t(0);
  }
}

template <bool VEC, typename T, typename acc_t>
__device__ __forceinline__ void store_group(T* p, int len, const acc_t v[4]) {
  if constexpr (VEC) {
    Group<T> q;
#pragma unroll
    for (int j = 0; j < 4; ++j) store(q.v + j, v[j]);
    *reinterpret_cast<Group<T>*>(p) = q;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < len) store(p + j, v[j]);
    }
  }
}

// Group i of `groups` per sample: sample b, elements e = 4g .. 4g+3 (fewer at the sample's end).
// out = a x + sum_t coef_t term_t + sum_d coef_d z_d, each z_d one Philox block at counter
// (g, step_d, stage_d, stream_d) under the key keys[b] = (lo, hi). x and out may be the same
// buffer (later passes); each element is read before it is written.
template <bool VEC, typename T, typename acc_t>
__device__ __forceinline__ void step_group(int64_t i, const T* x, acc_t a, const Terms<T, acc_t>& terms,
                                           const int64_t* keys, const NoiseDraws& draws, int64_t per_sample,
                                           int64_t groups, T* out) {
  const int64_t b = i / groups;
  const int64_t g = i - b * groups;
  const int64_t e = 4 * g;
  const int64_t first = b * per_sample + e;
  const int len = per_sample - e < 4 ? static_cast<int>(per_sample - e) : 4;
  acc_t acc[4];
  acc_t v[4];
  load_group<VEC>(x + first, len, v);
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j] = a * v[j];
  // Constant trip counts keep the parameters in the constant bank (no local copy).
#pragma unroll
  for (int t = 0; t < kMaxTerms; ++t) {
    if (t == terms.count) break;
    load_group<VEC>(terms.ptr[t] + first, len, v);
    const acc_t c = terms.coef[t];
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j] += c * v[j];
  }
  if (draws.count > 0) {
    const uint64_t seed = static_cast<uint64_t>(keys[b]);
    // A runtime loop: `draws` is a __grid_constant__ parameter, read in place by index (a Brownian increment
    // brings up to kMaxDraws draws; unrolling them all would only grow the code).
#pragma unroll 1
    for (int d = 0; d < draws.count; ++d) {
      const PhiloxWords w = philox4x32_10(static_cast<uint32_t>(g), draws.step[d], draws.stage[d], draws.stream[d],
                                          static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
      box_muller(w, v);
      const acc_t c = static_cast<acc_t>(draws.coef[d]);
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += c * v[j];
    }
  }
  store_group<VEC>(out + first, len, acc);
}

template <bool VEC, typename T, typename acc_t>
__global__ void solver_step_kernel(const T* x, acc_t a, Terms<T, acc_t> terms, const int64_t* keys,
                                   const __grid_constant__ NoiseDraws draws, int64_t per_sample, int64_t groups,
                                   int64_t total, T* out) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    step_group<VEC>(i, x, a, terms, keys, draws, per_sample, groups, out);
  }
}

template <typename T>
bool group_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Group<T>) == 0;
}

// Up to kMaxTerms terms per launch; later passes read out back as x with a = 1. The noise
// goes in with the first pass.
template <typename T, typename acc_t>
cudaError_t launch(const void* x, double a, const void* const* ptrs, const double* coefs, int num_terms,
                   const int64_t* keys, const NoiseDraws& draws, int64_t batch, int64_t per_sample, void* out,
                   cudaStream_t cuda_stream) {
  if (num_terms < 0 || draws.count < 0 || draws.count > kMaxDraws) return cudaErrorInvalidValue;
  const int64_t groups = (per_sample + 3) / 4;
  const int64_t total = batch * groups;
  if (total == 0) return cudaSuccess;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  bool vec = per_sample % 4 == 0 && group_aligned<T>(x) && group_aligned<T>(out);
  for (int t = 0; t < num_terms; ++t) vec = vec && group_aligned<T>(ptrs[t]);
  const auto kernel = vec ? solver_step_kernel<true, T, acc_t> : solver_step_kernel<false, T, acc_t>;
  const T* src = static_cast<const T*>(x);
  acc_t scale = static_cast<acc_t>(a);
  NoiseDraws noise = draws;
  int done = 0;
  do {
    Terms<T, acc_t> terms{};
    terms.count = num_terms - done < kMaxTerms ? num_terms - done : kMaxTerms;
    for (int t = 0; t < terms.count; ++t) {
      terms.ptr[t] = static_cast<const T*>(ptrs[done + t]);
      terms.coef[t] = static_cast<acc_t>(coefs[done + t]);
    }
    kernel<<<static_cast<unsigned>(blocks), kThreads, 0, cuda_stream>>>(src, scale, terms, keys, noise, per_sample,
                                                                         groups, total, static_cast<T*>(out));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    done += terms.count;
    src = static_cast<const T*>(out);
    scale = acc_t(1);
    noise.count = 0;
  } while (done < num_terms);
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_solver_step(const void* x, double a, const void* const* terms, const double* coefs, int num_terms,
                               const int64_t* keys, const NoiseDraws& draws, int64_t batch, int64_t per_sample,
                               DType dtype, void* out, cudaStream_t cuda_stream) {
  return dispatch_dtype(dtype, [&](auto types) {
    using Types = decltype(types);
    return launch<typename Types::storage_t, typename Types::acc_t>(x, a, terms, coefs, num_terms, keys, draws, batch,
                                                                    per_sample, out, cuda_stream);
  });
}

}  // namespace fastdiff
