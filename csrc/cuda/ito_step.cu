// CUDA kernels of fastdiff::ito_step (fastdiff/reference/ito_step.py has the math). Two launches, one block per
// (sample, part), a part being a fixed range of the sample's elements (ito_step_partition):
//   ito_reduce_kernel: each thread takes groups of four elements, reads x and the M denoised outputs, forms
//     e_i = D_i - x, draws z from the counter stream (csrc/philox.h) in registers and accumulates <e_i, e_j>,
//     <z, e_i> and, for AND, the centred <e_i - e_bar, e_j - e_bar>, <z, e_i - e_bar>; a fixed shared-memory
//     tree reduces the block, and the part's sums go to the workspace in float64. OR's weights are known before
//     the step (softmax of ell), so for OR this pass also writes x'.
//   ito_finalize_kernel: each block adds its sample's part sums in part order (deterministic), thread 0 computes
//     kappa (AND: an M x M symmetric positive definite solve) and the ell updates in float64, the block of part 0
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
#include "ito_step_launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;

// One group of four elements of sample b starting at element e0 (len <= 4 valid): x, e_i = D_i - x and z,
// zero past len.
template <int M, typename T, typename acc_t>
__device__ __forceinline__ void load_group(const T* x, const ItoParams& p, uint64_t seed, int64_t g, int64_t first, int len,
                                           acc_t (&xv)[4], acc_t (&z)[4], acc_t (&ev)[M][4]) {
  const PhiloxWords w = philox4x32_10(static_cast<uint32_t>(g), p.step, p.stage, p.stream, static_cast<uint32_t>(seed),
                                      static_cast<uint32_t>(seed >> 32));
  box_muller(w, z);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    xv[j] = j < len ? static_cast<acc_t>(load(x + first + j)) : acc_t(0);
    if (j >= len) z[j] = acc_t(0);
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const T* d = static_cast<const T*>(p.denoised[i]) + first;
#pragma unroll
    for (int j = 0; j < 4; ++j) ev[i][j] = j < len ? static_cast<acc_t>(load(d + j)) - xv[j] : acc_t(0);
  }
}

// x' = x + sum_i coef_i e_i + sqrt(Delta) z on the group's len elements.
template <int M, typename T, typename acc_t>
__device__ __forceinline__ void store_move(T* out, int64_t first, int len, const acc_t (&xv)[4], const acc_t (&z)[4],
                                           const acc_t (&ev)[M][4], const acc_t* coef, acc_t noise_scale) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j < len) {
      acc_t v = xv[j] + noise_scale * z[j];
#pragma unroll
      for (int i = 0; i < M; ++i) v += coef[i] * ev[i][j];
      store(out + first + j, v);
    }
  }
}

// This thread's groups of four elements of part `part` of sample b, loaded (load_group): fn(first, len, xv, z, ev)
// with `first` the group's first element in the buffers.
template <int M, typename acc_t, typename T, typename Fn>
__device__ __forceinline__ void for_each_group(const T* x, const ItoParams& p, const int64_t* keys, int64_t b, int64_t part,
                                               int64_t per_sample, int64_t part_len, const Fn& fn) {
  const int64_t begin = part * part_len;
  const int64_t end = begin + part_len < per_sample ? begin + part_len : per_sample;
  const uint64_t seed = static_cast<uint64_t>(keys[b]);
  const int64_t row = b * per_sample;
  for (int64_t g = begin / 4 + threadIdx.x; 4 * g < end; g += blockDim.x) {
    const int64_t e0 = 4 * g;
    const int len = end - e0 < 4 ? static_cast<int>(end - e0) : 4;
    acc_t xv[4], z[4], ev[M][4];
    load_group<M>(x, p, seed, g, row + e0, len, xv, z, ev);
    fn(row + e0, len, xv, z, ev);
  }
}

template <int M, bool AND, typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) ito_reduce_kernel(const T* x, ItoParams p, const acc_t* ell, const int64_t* keys,
                                                              int64_t per_sample, int64_t parts, int64_t part_len,
                                                              double* workspace, T* out) {
  constexpr int R = ito_stat_count(M, AND);
  __shared__ acc_t coef[M];
  __shared__ acc_t red[kThreads];
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
  acc_t st[R];
#pragma unroll
  for (int r = 0; r < R; ++r) st[r] = acc_t(0);
  const acc_t noise_scale = static_cast<acc_t>(p.sqrt_delta);
  for_each_group<M, acc_t>(x, p, keys, b, block - b * parts, per_sample, part_len, [&](int64_t first, int len, const acc_t(&xv)[4],
                                                                             const acc_t(&z)[4], const acc_t(&ev)[M][4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int k = i; k < M; ++k) st[i * M + k] += ev[i][j] * ev[k][j];
        st[M * M + i] += z[j] * ev[i][j];
      }
      if (AND) {
        acc_t mean = acc_t(0);
#pragma unroll
        for (int i = 0; i < M; ++i) mean += ev[i][j];
        mean /= static_cast<acc_t>(M);
        acc_t d[M];
#pragma unroll
        for (int i = 0; i < M; ++i) d[i] = ev[i][j] - mean;
#pragma unroll
        for (int i = 0; i < M; ++i) {
#pragma unroll
          for (int k = i; k < M; ++k) st[M * M + M + i * M + k] += d[i] * d[k];
          st[2 * M * M + M + i] += z[j] * d[i];
        }
      }
    }
    if (!AND) store_move<M>(out, first, len, xv, z, ev, coef, noise_scale);
  });
  // Fixed tree over the block (blockDim.x == kThreads), one statistic at a time.
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    red[threadIdx.x] = st[r];
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) workspace[block * R + r] = static_cast<double>(red[0]);
    __syncthreads();
  }
}

template <int M, bool AND, typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    ito_finalize_kernel(const T* x, ItoParams p, const acc_t* ell, const int64_t* keys, int64_t per_sample, int64_t parts,
                        int64_t part_len, const double* workspace, T* out, acc_t* ell_next, acc_t* kappa_out) {
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
  for_each_group<M, acc_t>(x, p, keys, b, part, per_sample, part_len, [&](int64_t first, int len, const acc_t(&xv)[4],
                                                                   const acc_t(&z)[4], const acc_t(&ev)[M][4]) {
    store_move<M>(out, first, len, xv, z, ev, coef, noise_scale);
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
  ito_reduce_kernel<M, AND, T, acc_t><<<static_cast<unsigned>(reduce_blocks), kThreads, 0, cuda_stream>>>(
      static_cast<const T*>(x), params, static_cast<const acc_t*>(ell), keys, per_sample, split.parts, split.part_len,
      workspace, static_cast<T*>(out));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  ito_finalize_kernel<M, AND, T, acc_t><<<static_cast<unsigned>(move_blocks), kThreads, 0, cuda_stream>>>(
      static_cast<const T*>(x), params, static_cast<const acc_t*>(ell), keys, per_sample, split.parts, split.part_len,
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
