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

#include <cfloat>
#include <cstdint>

#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "ito_step_launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;

// Statistics layout: upper triangle (i <= k) of <e_i, e_k> at i M + k, <z, e_i> at M M + i; AND: the centred
// ones at M M + M + (i M + k) and 2 M M + M + i.
template <int M, bool AND>
struct StatCount {
  static constexpr int value = AND ? 2 * (M * M + M) : M * M + M;
};

// softmax(T ell + log w), max subtracted.
template <int M>
__device__ void or_weights(const ItoParams& p, const double* ell, double* kappa) {
  double logits[M];
  double top = -DBL_MAX;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    logits[i] = p.temperature * ell[i] + p.log_weights[i];
    top = logits[i] > top ? logits[i] : top;
  }
  double total = 0.0;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    kappa[i] = exp(logits[i] - top);
    total += kappa[i];
  }
#pragma unroll
  for (int i = 0; i < M; ++i) kappa[i] /= total;
}

// AND: (Delta C + eps I) a = Q(b - ell) - sqrt(Delta) cz + (Delta/2) Q diag(C), kappa = 1/M + centred a,
// eps = rcond Delta tr(G)/M + DBL_MIN; elimination without pivoting (symmetric positive definite).
template <int M>
__device__ void and_weights(const ItoParams& p, const double (&g)[M][M], const double (&cc)[M][M], const double* cz,
                            const double* ell, double* kappa) {
  double trace = 0.0, mean_t = 0.0, mean_d = 0.0;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    trace += g[i][i];
    mean_t += p.bias[i] - ell[i];
    mean_d += cc[i][i];
  }
  mean_t /= M;
  mean_d /= M;
  const double eps = p.rcond * p.delta * trace / M + DBL_MIN;
  double a[M][M];
  double r[M];
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int j = 0; j < M; ++j) a[i][j] = p.delta * cc[i][j] + (i == j ? eps : 0.0);
    r[i] = (p.bias[i] - ell[i] - mean_t) - p.sqrt_delta * cz[i] + 0.5 * p.delta * (cc[i][i] - mean_d);
  }
#pragma unroll
  for (int k = 0; k < M; ++k) {
#pragma unroll
    for (int i = k + 1; i < M; ++i) {
      const double f = a[i][k] / a[k][k];
#pragma unroll
      for (int j = k; j < M; ++j) a[i][j] -= f * a[k][j];
      r[i] -= f * r[k];
    }
  }
  double mean_a = 0.0;
#pragma unroll
  for (int i = M - 1; i >= 0; --i) {
    double v = r[i];
#pragma unroll
    for (int j = i + 1; j < M; ++j) v -= a[i][j] * kappa[j];
    kappa[i] = v / a[i][i];
    mean_a += kappa[i];
  }
  mean_a /= M;
#pragma unroll
  for (int i = 0; i < M; ++i) kappa[i] = 1.0 / M + (kappa[i] - mean_a);
}

// kappa and ell' = ell + Delta G kappa + sqrt(Delta) c - (Delta/2) diag G from a sample's summed statistics.
template <int M, bool AND>
__device__ void finalize(const ItoParams& p, const double* st, const double* ell, double* kappa, double* ell_next) {
  const double inv4 = p.inv_s2 * p.inv_s2;
  double g[M][M], c[M];
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int k = 0; k < M; ++k) g[i][k] = st[(i < k ? i * M + k : k * M + i)] * inv4;
    c[i] = st[M * M + i] * p.inv_s2;
  }
  if (AND) {
    double cc[M][M], cz[M];
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
      for (int k = 0; k < M; ++k) cc[i][k] = st[M * M + M + (i < k ? i * M + k : k * M + i)] * inv4;
      cz[i] = st[2 * M * M + M + i] * p.inv_s2;
    }
    and_weights<M>(p, g, cc, cz, ell, kappa);
  } else {
    or_weights<M>(p, ell, kappa);
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    double pull = 0.0;
#pragma unroll
    for (int j = 0; j < M; ++j) pull += g[i][j] * kappa[j];
    ell_next[i] = ell[i] + p.delta * pull + p.sqrt_delta * c[i] - 0.5 * p.delta * g[i][i];
  }
}

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

template <int M, bool AND, typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) ito_reduce_kernel(const T* x, ItoParams p, const acc_t* ell, const int64_t* keys,
                                                              int64_t per_sample, int64_t parts, int64_t part_len,
                                                              double* workspace, T* out) {
  constexpr int R = StatCount<M, AND>::value;
  __shared__ acc_t coef[M];
  __shared__ acc_t red[kThreads];
  const int64_t block = blockIdx.x;
  const int64_t b = block / parts;
  const int64_t begin = (block - b * parts) * part_len;
  const int64_t end = begin + part_len < per_sample ? begin + part_len : per_sample;
  if (!AND) {
    if (threadIdx.x == 0) {
      double e[M], k[M];
#pragma unroll
      for (int i = 0; i < M; ++i) e[i] = static_cast<double>(ell[b * M + i]);
      or_weights<M>(p, e, k);
#pragma unroll
      for (int i = 0; i < M; ++i) coef[i] = static_cast<acc_t>(p.delta * p.inv_s2 * k[i]);
    }
    __syncthreads();
  }
  acc_t st[R];
#pragma unroll
  for (int r = 0; r < R; ++r) st[r] = acc_t(0);
  const uint64_t seed = static_cast<uint64_t>(keys[b]);
  const int64_t row = b * per_sample;
  const acc_t noise_scale = static_cast<acc_t>(p.sqrt_delta);
  for (int64_t g = begin / 4 + threadIdx.x; 4 * g < end; g += blockDim.x) {
    const int64_t e0 = 4 * g;
    const int len = end - e0 < 4 ? static_cast<int>(end - e0) : 4;
    acc_t xv[4], z[4], ev[M][4];
    load_group<M>(x, p, seed, g, row + e0, len, xv, z, ev);
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
    if (!AND) store_move<M>(out, row + e0, len, xv, z, ev, coef, noise_scale);
  }
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
  constexpr int R = StatCount<M, AND>::value;
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
    finalize<M, AND>(p, st, e, k, next);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      coef[i] = static_cast<acc_t>(p.delta * p.inv_s2 * k[i]);
      if (part == 0) {
        ell_next[b * M + i] = static_cast<acc_t>(next[i]);
        kappa_out[b * M + i] = static_cast<acc_t>(k[i]);
      }
    }
  }
  __syncthreads();
  if (!AND) return;
  const int64_t begin = part * part_len;
  const int64_t end = begin + part_len < per_sample ? begin + part_len : per_sample;
  const uint64_t seed = static_cast<uint64_t>(keys[b]);
  const int64_t row = b * per_sample;
  const acc_t noise_scale = static_cast<acc_t>(p.sqrt_delta);
  for (int64_t g = begin / 4 + threadIdx.x; 4 * g < end; g += blockDim.x) {
    const int64_t e0 = 4 * g;
    const int len = end - e0 < 4 ? static_cast<int>(end - e0) : 4;
    acc_t xv[4], z[4], ev[M][4];
    load_group<M>(x, p, seed, g, row + e0, len, xv, z, ev);
    store_move<M>(out, row + e0, len, xv, z, ev, coef, noise_scale);
  }
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
  switch (dtype) {
    case DType::kFloat32:
      return launch_models<float, float>(x, params, ell, keys, batch, per_sample, workspace, out, ell_next, kappa,
                                         cuda_stream);
    case DType::kFloat64:
      return launch_models<double, double>(x, params, ell, keys, batch, per_sample, workspace, out, ell_next, kappa,
                                           cuda_stream);
    case DType::kFloat16:
      return launch_models<__half, float>(x, params, ell, keys, batch, per_sample, workspace, out, ell_next, kappa,
                                          cuda_stream);
    case DType::kBFloat16:
      return launch_models<__nv_bfloat16, float>(x, params, ell, keys, batch, per_sample, workspace, out, ell_next, kappa,
                                                 cuda_stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastdiff
