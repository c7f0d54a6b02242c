// The per-sample scalar algebra of fastdiff::ito_step, shared by the CPU kernel (csrc/ito_step.cpp) and the CUDA
// kernels (csrc/cuda/ito_step.cu): from a sample's summed statistics to the weights kappa and the ell updates, in
// float64 (fastdiff/reference/ito_step.py has the math). No torch or CUDA headers. The template argument M > 0
// fixes the model count at compile time (CUDA, unrolled); M = 0 reads it from the parameters (CPU).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "host_device.h"
#include "limits.h"

namespace fastdiff {

enum ItoMode : int { kOr = 0, kAnd = 1 };

// The step's host scalars (float64), its counter draw and the M denoised buffers (dense, row-major, x's dtype).
struct ItoParams {
  int models;  // M, 1..kMaxModels (AND: at least 2)
  int mode;    // kOr or kAnd
  double delta, sqrt_delta, inv_s2, temperature, rcond;
  uint32_t step, stage, stream;
  const void* denoised[kMaxModels];
  double log_weights[kMaxModels];
  double bias[kMaxModels];
};

// Statistics per sample, with e_i = D_i - x: <e_i, e_k> at i M + k (only i <= k is read), <z, e_i> at M M + i;
// AND adds the centred ones, <e_i - e_bar, e_k - e_bar> at M M + M + i M + k and <z, e_i - e_bar> at 2 M M + M + i.
FASTDIFF_HOST_DEVICE constexpr int64_t ito_stat_count(int64_t models, bool centred) {
  return centred ? 2 * (models * models + models) : models * models + models;
}

// Each sample is cut into `parts` ranges of `part_len` elements (a multiple of `tile`; the last may be shorter),
// a function of the sample size only, so the summation order depends neither on the threads nor on the device.
struct ItoPartition {
  int64_t parts, part_len;
};

inline ItoPartition ito_partition(int64_t per_sample, int64_t tile) {
  const int64_t tiles = std::max<int64_t>(1, (per_sample + tile - 1) / tile);
  const int64_t wanted = std::min<int64_t>(kMaxParts, std::max<int64_t>(1, per_sample / kPartMin));
  const int64_t per_part = (tiles + wanted - 1) / wanted;
  return {(tiles + per_part - 1) / per_part, per_part * tile};
}

// The move's coefficient of e_i: Delta kappa_i / sigma^2.
FASTDIFF_HOST_DEVICE double ito_move_coef(const ItoParams& p, double kappa) { return p.delta * p.inv_s2 * kappa; }

// OR: kappa = softmax(T ell + log w), max subtracted.
template <int M>
FASTDIFF_HOST_DEVICE void ito_or_weights(const ItoParams& p, const double* ell, double* kappa) {
  const int m = M > 0 ? M : p.models;
  double logits[kMaxModels];
  double top = -INFINITY;
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) {
    logits[i] = p.temperature * ell[i] + p.log_weights[i];
    top = logits[i] > top ? logits[i] : top;
  }
  double total = 0.0;
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) {
    kappa[i] = exp(logits[i] - top);
    total += kappa[i];
  }
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) kappa[i] /= total;
}

// Entry (i, k) of the symmetric M x M block at `offset` of ito_stat_count's layout (only i <= k is stored).
FASTDIFF_HOST_DEVICE double ito_sym(const double* stats, int m, int offset, int i, int k) {
  return stats[offset + (i < k ? i * m + k : k * m + i)];
}

// AND: (Delta C + eps I) a = Q(b - ell) - sqrt(Delta) cz + (Delta/2) Q diag(C), kappa = 1/M + a (a centred),
// eps = rcond Delta tr(G)/M + DBL_MIN, with G = <s_i, s_k>, C = <s_i - s_bar, s_k - s_bar>, cz = <z, s_i - s_bar>
// read where they lie in the sample's summed statistics (ito_stat_count's layout, s_i = e_i / sigma^2), not copied:
// on CUDA they stay in shared memory and only the eliminated matrix takes registers. Gaussian elimination without
// pivoting: the matrix is symmetric positive definite.
template <int M>
FASTDIFF_HOST_DEVICE void ito_and_weights(const ItoParams& p, const double* stats, const double* ell, double* kappa) {
  const int m = M > 0 ? M : p.models;
  const double inv4 = p.inv_s2 * p.inv_s2;
  const int centred = m * m + m;
  double trace = 0.0, mean_t = 0.0, mean_d = 0.0;
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) {
    trace += stats[i * m + i] * inv4;
    mean_t += p.bias[i] - ell[i];
    mean_d += stats[centred + i * m + i] * inv4;
  }
  mean_t /= m;
  mean_d /= m;
  const double eps = p.rcond * p.delta * trace / m + DBL_MIN;
  double a[kMaxModels][kMaxModels];
  double r[kMaxModels];
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) {
    FASTDIFF_UNROLL
    for (int j = 0; j < m; ++j) a[i][j] = p.delta * (ito_sym(stats, m, centred, i, j) * inv4) + (i == j ? eps : 0.0);
    r[i] = (p.bias[i] - ell[i] - mean_t) - p.sqrt_delta * (stats[2 * m * m + m + i] * p.inv_s2) +
           0.5 * p.delta * (stats[centred + i * m + i] * inv4 - mean_d);
  }
  FASTDIFF_UNROLL
  for (int k = 0; k < m; ++k) {
    FASTDIFF_UNROLL
    for (int i = k + 1; i < m; ++i) {
      const double f = a[i][k] / a[k][k];
      FASTDIFF_UNROLL
      for (int j = k; j < m; ++j) a[i][j] -= f * a[k][j];
      r[i] -= f * r[k];
    }
  }
  double mean_a = 0.0;
  FASTDIFF_UNROLL
  for (int i = m - 1; i >= 0; --i) {
    double v = r[i];
    FASTDIFF_UNROLL
    for (int j = i + 1; j < m; ++j) v -= a[i][j] * kappa[j];
    kappa[i] = v / a[i][i];
    mean_a += kappa[i];
  }
  mean_a /= m;
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) kappa[i] = 1.0 / m + (kappa[i] - mean_a);
}

// kappa and ell' = ell + Delta G kappa + sqrt(Delta) c - (Delta/2) diag G from a sample's summed statistics
// (ito_stat_count's layout), with G = <s_i, s_k>, c = <z, s_i> and s_i = e_i / sigma^2, read where they lie.
template <int M, bool AND>
FASTDIFF_HOST_DEVICE void ito_finalize(const ItoParams& p, const double* stats, const double* ell, double* kappa,
                                       double* ell_next) {
  const int m = M > 0 ? M : p.models;
  const double inv4 = p.inv_s2 * p.inv_s2;
  if (AND) {
    ito_and_weights<M>(p, stats, ell, kappa);
  } else {
    ito_or_weights<M>(p, ell, kappa);
  }
  FASTDIFF_UNROLL
  for (int i = 0; i < m; ++i) {
    double pull = 0.0;
    FASTDIFF_UNROLL
    for (int j = 0; j < m; ++j) pull += (ito_sym(stats, m, 0, i, j) * inv4) * kappa[j];
    ell_next[i] = ell[i] + p.delta * pull + p.sqrt_delta * (stats[m * m + i] * p.inv_s2) -
                  0.5 * p.delta * (stats[i * m + i] * inv4);
  }
}

}  // namespace fastdiff
