// CUDA kernels of fastdiff::ito_step (fastdiff/reference/ito_step.py has the math). Two launches, one block per
// (sample, part), a part being a fixed range of the sample's elements (ito_step_partition):
//   ito_reduce_kernel: each thread takes groups of four elements (one vector load per buffer where aligned), reads
//     x and the M denoised outputs, forms e_i = D_i - x, draws z from the counter stream (csrc/philox.h) in
//     registers and accumulates <e_i, e_j> (i <= j), <z, e_i> and, for AND, the centred <e_i - e_bar, e_j - e_bar>,
//     <z, e_i - e_bar>, all in registers (M is a template argument, every loop over the statistics unrolled); a
//     fixed warp-shuffle tree, then the warps' sums added in warp order in float64, reduce the block, and the part's
//     sums go to the workspace. OR's weights are known before the step (softmax of ell), so for OR this pass also
//     writes x'.
//   ito_finalize_kernel: each block adds its sample's part sums in part order (deterministic), thread 0 computes
//     kappa (AND: an M x M symmetric positive definite solve) and the ell updates in float64, reading the sums from
//     shared memory (only the eliminated matrix is held in registers: no stack, no spills), the block of part 0
//     stores them, and for AND every block then moves its part: x' = x + sum_i (Delta kappa_i / sigma^2) e_i +
//     sqrt(Delta) z with z drawn again. float16/bfloat16 are computed in float32, float64 in float64.
// Host side: launch_ito_step in ito_step_launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../ito_weights.h"
#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "group_io.cuh"
#include "ito_step_launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Whether statistic r of ito_stat_count's layout is accumulated: the upper triangles (i <= k) and the z dots.
__host__ __device__ constexpr bool stat_kept(int m, int r) {
  const int base = r < m * m + m ? r : r - (m * m + m);
  return base >= m * m || base / m <= base % m;
}

// One group of four elements of sample b starting at element e0 (len <= 4 valid): x, z and (MODELS)
// e_i = D_i - x, zero past len.
template <int M, bool MODELS, typename T, typename acc_t>
__device__ __forceinline__ void load_group(const T* x, const ItoParams& p, uint64_t seed, int64_t g, int64_t first, int len,
                                           bool vec, acc_t (&xv)[4], acc_t (&z)[4], acc_t (&ev)[M][4]) {
  const PhiloxWords w = philox4x32_10(static_cast<uint32_t>(g), p.step, p.stage, p.stream, static_cast<uint32_t>(seed),
                                      static_cast<uint32_t>(seed >> 32));
  box_muller(w, z);
  load_four(x + first, len, vec, xv);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j >= len) z[j] = acc_t(0);
  }
  if constexpr (MODELS) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      load_four(static_cast<const T*>(p.denoised[i]) + first, len, vec, ev[i]);
#pragma unroll
      for (int j = 0; j < 4; ++j) ev[i][j] -= xv[j];
    }
  }
}

// x' = x + sum_i coef_i e_i + sqrt(Delta) z on the group's len elements.
template <int M, typename T, typename acc_t>
__device__ __forceinline__ void store_move(T* out, int64_t first, int len, bool vec, const acc_t (&xv)[4],
                                           const acc_t (&z)[4], const acc_t (&ev)[M][4], const acc_t* coef,
                                           acc_t noise_scale) {
  acc_t v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[j] = xv[j] + noise_scale * z[j];
#pragma unroll
    for (int i = 0; i < M; ++i) v[j] += coef[i] * ev[i][j];
  }
  store_four(out + first, len, vec, v);
}

// This thread's groups of four elements of part `part` of sample b, loaded (load_group): fn(first, len, xv, z, ev)
// with `first` the group's first element in the buffers; without MODELS, ev is not loaded (fn reads the models).
template <int M, typename acc_t, bool MODELS = true, typename T, typename Fn>
__device__ __forceinline__ void for_each_group(const T* x, const ItoParams& p, const int64_t* keys, int64_t b, int64_t part,
                                               int64_t per_sample, int64_t part_len, bool vec, const Fn& fn) {
  const int64_t begin = part * part_len;
  const int64_t end = begin + part_len < per_sample ? begin + part_len : per_sample;
  const uint64_t seed = static_cast<uint64_t>(keys[b]);
  const int64_t row = b * per_sample;
  for (int64_t g = begin / 4 + threadIdx.x; 4 * g < end; g += blockDim.x) {
    const int64_t e0 = 4 * g;
    const int len = end - e0 < 4 ? static_cast<int>(end - e0) : 4;
    acc_t xv[4], z[4], ev[M][4];
    load_group<M, MODELS>(x, p, seed, g, row + e0, len, vec, xv, z, ev);
    fn(row + e0, len, xv, z, ev);
  }
}

// Element j's terms of the statistics (ito_stat_count's layout, i <= k only): e_i e_k, z e_i and, for AND, the
// centred d_i d_k, z d_i with d_i = e_i - mean_k e_k.
template <int M, bool AND, typename acc_t, int R>
__device__ __forceinline__ void accumulate(acc_t (&st)[R], const acc_t (&e)[M], acc_t z) {
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int k = i; k < M; ++k) st[i * M + k] += e[i] * e[k];
    st[M * M + i] += z * e[i];
  }
  if (AND) {
    acc_t mean = acc_t(0);
#pragma unroll
    for (int i = 0; i < M; ++i) mean += e[i];
    mean /= static_cast<acc_t>(M);
    acc_t d[M];
#pragma unroll
    for (int i = 0; i < M; ++i) d[i] = e[i] - mean;
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
      for (int k = i; k < M; ++k) st[M * M + M + i * M + k] += d[i] * d[k];
      st[2 * M * M + M + i] += z * d[i];
    }
  }
}

template <int M, bool AND, typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) ito_reduce_kernel(const T* x, ItoParams p, const acc_t* ell, const int64_t* keys,
                                                              int64_t per_sample, int64_t parts, int64_t part_len, bool vec,
                                                              double* workspace, T* out) {
  constexpr int R = ito_stat_count(M, AND);
  // AND keeps up to 2 (M (M + 1) / 2 + M) statistics per thread: past 60 doubles' worth, the models are read one
  // element at a time rather than a group at a time (AND writes nothing here, so the group is not needed).
  constexpr bool kNarrow = AND && (M * (M + 1) + 2 * M) * sizeof(acc_t) > 60 * sizeof(double);
  __shared__ acc_t coef[M];
  __shared__ acc_t warp_sums[kWarps][R];
  const int64_t block = blockIdx.x;
  const int64_t b = block / parts;
  if (!AND) {
    if (threadIdx.x == 0) {
      double e[M], k[M];
#pragma unroll
      for (int i = 0; i < M; ++i) e[i] = static_cast<double>(ell[b * M + i]);
      ito_or_weights<M>(p, e, k);
#pragma unroll
      for (int i = 0; i < M; ++i) coef[i] = static_cast<acc_t>(ito_move_coef(p, k[i]));
    }
    __syncthreads();
  }
  // Every index below is a compile-time constant once the loops are unrolled: the statistics stay in registers.
  acc_t st[R];
#pragma unroll
  for (int r = 0; r < R; ++r) st[r] = acc_t(0);
  const acc_t noise_scale = static_cast<acc_t>(p.sqrt_delta);
  for_each_group<M, acc_t, !kNarrow>(x, p, keys, b, block - b * parts, per_sample, part_len, vec,
                           [&](int64_t first, int len, const acc_t(&xv)[4], const acc_t(&z)[4], const acc_t(&ev)[M][4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // kNarrow: one element of every model at a time (scalar loads), fewer values live next to the statistics.
      acc_t e[M];
#pragma unroll
      for (int i = 0; i < M; ++i) {
        const T* d = static_cast<const T*>(p.denoised[i]) + first + j;
        e[i] = !kNarrow ? ev[i][j] : j < len ? static_cast<acc_t>(load(d)) - xv[j] : acc_t(0);
      }
      accumulate<M, AND>(st, e, z[j]);
    }
    if (!AND) store_move<M>(out, first, len, vec, xv, z, ev, coef, noise_scale);
  });
  // A fixed tree per warp (lane 0 ends with the warp's sum), then the warps' sums in warp order (blockDim.x ==
  // kThreads); statistics that are not kept are zero.
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (!stat_kept(M, r)) continue;
    acc_t v = st[r];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) warp_sums[warp][r] = v;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < R; r += kThreads) {
    double sum = 0.0;
    if (stat_kept(M, r)) {
      for (int w = 0; w < kWarps; ++w) sum += static_cast<double>(warp_sums[w][r]);
    }
    workspace[block * R + r] = sum;
  }
}

template <int M, bool AND, typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    ito_finalize_kernel(const T* x, ItoParams p, const acc_t* ell, const int64_t* keys, int64_t per_sample, int64_t parts,
                        int64_t part_len, bool vec, const double* workspace, T* out, acc_t* ell_next, acc_t* kappa_out) {
  constexpr int R = ito_stat_count(M, AND);
  __shared__ double st[R];
  __shared__ acc_t coef[M];
  const int64_t moves = AND ? parts : 1;
  const int64_t b = blockIdx.x / moves;
  const int64_t part = blockIdx.x - b * moves;
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    double sum = 0.0;
    for (int64_t q = 0; q < parts; ++q) sum += workspace[(b * parts + q) * R + r];
    st[r] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double e[M], k[M], next[M];
#pragma unroll
    for (int i = 0; i < M; ++i) e[i] = static_cast<double>(ell[b * M + i]);
    ito_finalize<M, AND>(p, st, e, k, next);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      coef[i] = static_cast<acc_t>(ito_move_coef(p, k[i]));
      if (part == 0) {
        ell_next[b * M + i] = static_cast<acc_t>(next[i]);
        kappa_out[b * M + i] = static_cast<acc_t>(k[i]);
      }
    }
  }
  __syncthreads();
  if (!AND) return;
  const acc_t noise_scale = static_cast<acc_t>(p.sqrt_delta);
  for_each_group<M, acc_t>(x, p, keys, b, part, per_sample, part_len, vec,
                           [&](int64_t first, int len, const acc_t(&xv)[4], const acc_t(&z)[4], const acc_t(&ev)[M][4]) {
    store_move<M>(out, first, len, vec, xv, z, ev, coef, noise_scale);
  });
}

template <int M, bool AND, typename T, typename acc_t>
cudaError_t launch_typed(const void* x, const ItoParams& params, const void* ell, const int64_t* keys, int64_t batch,
                         int64_t per_sample, double* workspace, void* out, void* ell_next, void* kappa,
                         cudaStream_t cuda_stream) {
  const ItoPartition split = ito_step_partition(per_sample);
  const int64_t reduce_blocks = batch * split.parts;
  const int64_t move_blocks = batch * (AND ? split.parts : 1);
  if (batch == 0) return cudaSuccess;
  if (reduce_blocks > INT32_MAX) return cudaErrorInvalidValue;
  bool vec = per_sample % 4 == 0 && group_aligned<T>(x) && group_aligned<T>(out);
  for (int i = 0; i < M; ++i) vec = vec && group_aligned<T>(params.denoised[i]);
  ito_reduce_kernel<M, AND, T, acc_t><<<static_cast<unsigned>(reduce_blocks), kThreads, 0, cuda_stream>>>(
      static_cast<const T*>(x), params, static_cast<const acc_t*>(ell), keys, per_sample, split.parts, split.part_len, vec,
      workspace, static_cast<T*>(out));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  ito_finalize_kernel<M, AND, T, acc_t><<<static_cast<unsigned>(move_blocks), kThreads, 0, cuda_stream>>>(
      static_cast<const T*>(x), params, static_cast<const acc_t*>(ell), keys, per_sample, split.parts, split.part_len, vec,
      workspace, static_cast<T*>(out), static_cast<acc_t*>(ell_next), static_cast<acc_t*>(kappa));
  return cudaGetLastError();
}

template <typename T, typename acc_t>
cudaError_t launch_models(const void* x, const ItoParams& params, const void* ell, const int64_t* keys, int64_t batch,
                          int64_t per_sample, double* workspace, void* out, void* ell_next, void* kappa,
                          cudaStream_t cuda_stream) {
  static_assert(kMaxModels == 8, "one case below per model count");
#define FASTDIFF_ITO_CASE(M)                                                                                          \
  case M:                                                                                                            \
    return params.mode == 1 ? launch_typed<M, true, T, acc_t>(x, params, ell, keys, batch, per_sample, workspace, out, \
                                                             ell_next, kappa, cuda_stream)                          \
                            : launch_typed<M, false, T, acc_t>(x, params, ell, keys, batch, per_sample, workspace,   \
                                                              out, ell_next, kappa, cuda_stream);
  if (params.mode != 0 && params.mode != 1) return cudaErrorInvalidValue;
  if (params.mode == 1 && params.models < 2) return cudaErrorInvalidValue;
  switch (params.models) {
    FASTDIFF_ITO_CASE(1)
    FASTDIFF_ITO_CASE(2)
    FASTDIFF_ITO_CASE(3)
    FASTDIFF_ITO_CASE(4)
    FASTDIFF_ITO_CASE(5)
    FASTDIFF_ITO_CASE(6)
    FASTDIFF_ITO_CASE(7)
    FASTDIFF_ITO_CASE(8)
  }
#undef FASTDIFF_ITO_CASE
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_ito_step(const void* x, const ItoParams& params, const void* ell, const int64_t* keys, int64_t batch,
                            int64_t per_sample, DType dtype, double* workspace, void* out, void* ell_next, void* kappa,
                            cudaStream_t cuda_stream) {
  return dispatch_dtype(dtype, [&](auto types) {
    using Types = decltype(types);
    return launch_models<typename Types::storage_t, typename Types::acc_t>(x, params, ell, keys, batch, per_sample,
                                                                           workspace, out, ell_next, kappa, cuda_stream);
  });
}

}  // namespace fastdiff
