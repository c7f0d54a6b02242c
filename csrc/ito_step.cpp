// fastdiff::ito_step on CPU (and the CUDA registration that calls csrc/cuda/ito_step.cu): one superposed
// reverse-SDE step of M denoisers with the Itô log-density updates (fastdiff/reference/ito_step.py has the
// math, fastdiff/ops/ito_step.py what is fused). Per sample, with e_i = D_i - x (so s_i = e_i / sigma^2) and z
// the counter-based Gaussians of csrc/normal_block.h, generated in the loop and never stored:
//   pass 1: partial sums over fixed element ranges ("parts") of <e_i, e_j>, <z, e_i> and, for AND, of the
//           centred <e_i - e_bar, e_j - e_bar>, <z, e_i - e_bar>; OR also writes x' here (its weights are known);
//   weights: the parts of a sample are added in order (deterministic for any thread count), then kappa and the
//           ell updates in float64 (AND: an M x M symmetric positive definite solve);
//   pass 2 (AND only): x' = x + sum_i (Delta kappa_i / sigma^2) e_i + sqrt(Delta) z.
// float16/bfloat16/float32 are computed in float32 (block sums added in float64), float64 in float64.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "ito_weights.h"
#include "limits.h"
#include "normal_block.h"

#ifdef FASTDIFF_WITH_CUDA
#include "cuda/ito_step_launchers.h"
#endif

namespace fastdiff {
namespace {

// Elements per inner block: one normal_block call (kBlock groups of four).
constexpr int64_t kTile = 4 * kBlock;
constexpr int kLanes = 8;

template <typename math_t>
inline math_t dot_lanes(const math_t* u, const math_t* v) {
  math_t lanes[kLanes] = {};
  for (int64_t j = 0; j < kTile; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += u[j + l] * v[j + l];
  }
  math_t total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// One part [begin, end) of the sample at `row`: statistics into stats (float64, the layout of ito_stat_count); with
// move_coef (the OR move, Delta kappa_i / sigma^2 per model) x' is written too. Elements past `end` are zero in
// every tile.
template <typename IO>
void reduce_part(const ItoParams& p, const typename IO::storage_t* x, const std::vector<const typename IO::storage_t*>& ds,
                 uint64_t key, int64_t row, int64_t begin, int64_t end, double* stats, const double* move_coef,
                 typename IO::storage_t* out) {
  using math_t = typename IO::math_t;
  const int64_t m = p.models;
  const bool centred = p.mode == kAnd;
  math_t xs[kTile], zs[kTile], e[kMaxModels][kTile], d[kMaxModels][kTile];
  math_t coef[kMaxModels];
  if (move_coef != nullptr) {
    for (int64_t i = 0; i < m; ++i) coef[i] = static_cast<math_t>(move_coef[i]);
  }
  const math_t noise_scale = static_cast<math_t>(p.sqrt_delta);
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t len = std::min(kTile, end - t0);
    math_t z[4][kBlock];
    normal_block(static_cast<uint32_t>(t0 / 4), static_cast<int>((len + 3) / 4), p.step, p.stage, p.stream, key, z);
    for (int64_t j = 0; j < kTile; ++j) {
      const bool valid = j < len;
      xs[j] = valid ? IO::load(x[row + t0 + j]) : math_t(0);
      zs[j] = valid ? z[j % 4][j / 4] : math_t(0);
    }
    for (int64_t i = 0; i < m; ++i) {
      const typename IO::storage_t* src = ds[i] + row + t0;
      for (int64_t j = 0; j < kTile; ++j) e[i][j] = j < len ? IO::load(src[j]) - xs[j] : math_t(0);
    }
    if (centred) {
      const math_t inv_m = math_t(1) / static_cast<math_t>(m);
      for (int64_t j = 0; j < kTile; ++j) {
        math_t mean = 0;
        for (int64_t i = 0; i < m; ++i) mean += e[i][j];
        mean *= inv_m;
        for (int64_t i = 0; i < m; ++i) d[i][j] = e[i][j] - mean;
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t k = i; k < m; ++k) {
        stats[i * m + k] += dot_lanes(e[i], e[k]);
        if (centred) stats[m * m + m + i * m + k] += dot_lanes(d[i], d[k]);
      }
      stats[m * m + i] += dot_lanes(zs, e[i]);
      if (centred) stats[2 * m * m + m + i] += dot_lanes(zs, d[i]);
    }
    if (move_coef != nullptr) {
      typename IO::storage_t* o = out + row + t0;
      for (int64_t j = 0; j < len; ++j) {
        math_t v = xs[j] + noise_scale * zs[j];
        for (int64_t i = 0; i < m; ++i) v += coef[i] * e[i][j];
        o[j] = IO::store(v);
      }
    }
  }
}

// AND's move over [begin, end) of the sample at `row`: x' = x + sum_i coef_i (D_i - x) + sqrt(Delta) z.
template <typename IO>
void move_part(const ItoParams& p, const typename IO::storage_t* x, const std::vector<const typename IO::storage_t*>& ds,
               uint64_t key, int64_t row, int64_t begin, int64_t end, const double* move_coef, typename IO::storage_t* out) {
  using math_t = typename IO::math_t;
  math_t coef[kMaxModels];
  for (int64_t i = 0; i < p.models; ++i) coef[i] = static_cast<math_t>(move_coef[i]);
  const math_t noise_scale = static_cast<math_t>(p.sqrt_delta);
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t len = std::min(kTile, end - t0);
    math_t z[4][kBlock];
    normal_block(static_cast<uint32_t>(t0 / 4), static_cast<int>((len + 3) / 4), p.step, p.stage, p.stream, key, z);
    math_t acc[kTile];
    const typename IO::storage_t* xs = x + row + t0;
    for (int64_t j = 0; j < len; ++j) acc[j] = IO::load(xs[j]) + noise_scale * z[j % 4][j / 4];
    for (int64_t i = 0; i < p.models; ++i) {
      const typename IO::storage_t* src = ds[i] + row + t0;
      for (int64_t j = 0; j < len; ++j) acc[j] += coef[i] * (IO::load(src[j]) - IO::load(xs[j]));
    }
    typename IO::storage_t* o = out + row + t0;
    for (int64_t j = 0; j < len; ++j) o[j] = IO::store(acc[j]);
  }
}

// fn(task, b, begin, end) for every part [begin, end) of every sample b (task = b parts + part), on OpenMP threads.
template <typename Fn>
void for_each_part(int64_t batch, int64_t per_sample, const ItoPartition& split, bool parallel, const Fn& fn) {
  const int64_t tasks = batch * split.parts;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / split.parts;
    const int64_t begin = (task - b * split.parts) * split.part_len;
    fn(task, b, begin, std::min(per_sample, begin + split.part_len));
  }
}

struct Checked {
  at::Tensor x, ell, keys;
  std::vector<at::Tensor> denoised;
  ItoParams params;
};

Checked check(const at::Tensor& x, at::TensorList denoised, double sigma, double sigma_next, const at::Tensor& ell,
              const at::Tensor& keys, at::IntArrayRef draw, int64_t mode, double temperature,
              at::ArrayRef<double> log_weights, at::ArrayRef<double> bias, double rcond) {
  check_float_dtype(x.scalar_type(), "ito_step", "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "ito_step: x must have shape [B, ...], got a 0-d tensor");
  TORCH_CHECK_VALUE(mode == kOr || mode == kAnd, "ito_step: mode must be 0 (or) or 1 (and), got ", mode);
  const auto m = static_cast<int64_t>(denoised.size());
  TORCH_CHECK_VALUE(m >= (mode == kAnd ? 2 : 1) && m <= kMaxModels, "ito_step: needs ", (mode == kAnd ? 2 : 1), " to ",
                    kMaxModels, " denoised tensors for this mode, got ", m);
  for (int64_t i = 0; i < m; ++i) {
    const at::Tensor& d = denoised[i];
    TORCH_CHECK_VALUE(d.sizes() == x.sizes(), "ito_step: denoised[", i, "] has shape ", d.sizes(), ", expected x's shape ",
                      x.sizes());
    TORCH_CHECK_VALUE(d.device() == x.device(), "ito_step: denoised[", i, "] is on ", d.device(), ", expected x's device ",
                      x.device());
    TORCH_CHECK_TYPE(d.scalar_type() == x.scalar_type(), "ito_step: denoised[", i, "] has dtype ", d.scalar_type(),
                     ", expected x's dtype ", x.scalar_type());
  }
  TORCH_CHECK_VALUE(std::isfinite(sigma) && std::isfinite(sigma_next) && sigma > sigma_next && sigma_next >= 0.0,
                    "ito_step: needs sigma > sigma_next >= 0, got sigma=", sigma, ", sigma_next=", sigma_next);
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t batch = x.size(0);
  TORCH_CHECK_TYPE(ell.scalar_type() == acc, "ito_step: ell must have dtype ", acc, " for x of dtype ", x.scalar_type(),
                   ", got ", ell.scalar_type());
  TORCH_CHECK_VALUE(ell.dim() == 2 && ell.size(0) == batch && ell.size(1) == m && ell.device() == x.device(),
                    "ito_step: ell must have shape [B, M] = [", batch, ", ", m, "] on x's device, got ", ell.sizes(), " on ",
                    ell.device());
  TORCH_CHECK_TYPE(keys.scalar_type() == at::kLong, "ito_step: keys must be int64 per-sample seeds, got dtype ",
                   keys.scalar_type());
  TORCH_CHECK_VALUE(keys.dim() == 1 && keys.size(0) == batch && keys.device() == x.device(), "ito_step: keys must have ",
                    "shape [B] = [", batch, "] on x's device, got ", keys.sizes(), " on ", keys.device());
  TORCH_CHECK_VALUE(draw.size() == 3, "ito_step: draw must be the (step, stage, stream) triple, got ", draw.size(), " ints");
  for (int64_t w : draw) {
    TORCH_CHECK_VALUE(w >= 0 && w < kCounterWords, "ito_step: draw entries are 32-bit counter words in [0, 2^32), got ", w);
  }
  TORCH_CHECK_VALUE(static_cast<int64_t>(log_weights.size()) == m && static_cast<int64_t>(bias.size()) == m,
                    "ito_step: log_weights and bias need one entry per model (", m, "), got ", log_weights.size(), " and ",
                    bias.size());
  TORCH_CHECK_VALUE(std::isfinite(temperature) && std::isfinite(rcond) && rcond >= 0.0,
                    "ito_step: temperature must be finite and rcond finite and >= 0, got ", temperature, " and ", rcond);
  const int64_t per_sample = batch == 0 ? 0 : x.numel() / batch;
  TORCH_CHECK_VALUE(per_sample <= kMaxNumel, "ito_step: at most 2^34 elements per sample (32-bit noise counter), got ",
                    per_sample);
  Checked out;
  out.x = x.contiguous();
  for (const at::Tensor& d : denoised) out.denoised.push_back(d.contiguous());
  out.ell = ell.contiguous();
  out.keys = keys.contiguous();
  ItoParams& p = out.params;
  p.models = static_cast<int>(m);
  p.mode = static_cast<int>(mode);
  p.delta = (sigma - sigma_next) * (sigma + sigma_next);
  p.sqrt_delta = std::sqrt(p.delta);
  p.inv_s2 = 1.0 / (sigma * sigma);
  p.temperature = temperature;
  p.rcond = rcond;
  p.step = static_cast<uint32_t>(draw[0]);
  p.stage = static_cast<uint32_t>(draw[1]);
  p.stream = static_cast<uint32_t>(draw[2]);
  for (int64_t i = 0; i < m; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(log_weights[i]) && std::isfinite(bias[i]), "ito_step: log_weights[", i, "] and bias[",
                      i, "] must be finite");
    p.denoised[i] = out.denoised[i].const_data_ptr();
    p.log_weights[i] = log_weights[i];
    p.bias[i] = bias[i];
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ito_step_cpu(const at::Tensor& x, at::TensorList denoised, double sigma,
                                                            double sigma_next, const at::Tensor& ell, const at::Tensor& keys,
                                                            at::IntArrayRef draw, int64_t mode, double temperature,
                                                            at::ArrayRef<double> log_weights, at::ArrayRef<double> bias,
                                                            double rcond) {
  const Checked c = check(x, denoised, sigma, sigma_next, ell, keys, draw, mode, temperature, log_weights, bias, rcond);
  const ItoParams& p = c.params;
  const int64_t batch = x.size(0);
  const int64_t m = p.models;
  const int64_t per_sample = batch == 0 ? 0 : x.numel() / batch;
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor ell_next = at::empty({batch, m}, ell.options());
  at::Tensor kappa_out = at::empty({batch, m}, ell.options());
  const ItoPartition split = ito_partition(per_sample, kTile);
  const int64_t r = ito_stat_count(m, mode == kAnd);
  std::vector<double> ell64(batch * m), kappa(batch * m), coefs(batch * m), stats(batch * split.parts * r, 0.0);
  dispatch_float(c.ell.scalar_type(), [&](auto io) {
    using T = typename decltype(io)::storage_t;
    const T* src = c.ell.const_data_ptr<T>();
    for (int64_t i = 0; i < batch * m; ++i) ell64[i] = static_cast<double>(src[i]);
  });
  if (mode == kOr) {
    for (int64_t b = 0; b < batch; ++b) {
      ito_or_weights<0>(p, &ell64[b * m], &kappa[b * m]);
      for (int64_t i = 0; i < m; ++i) coefs[b * m + i] = ito_move_coef(p, kappa[b * m + i]);
    }
  }
  const int64_t* key_ptr = c.keys.const_data_ptr<int64_t>();
  const bool parallel = batch * per_sample * (m + 1) > kParallelThreshold;
  dispatch_float(x.scalar_type(), [&](auto io) {
    using IO = decltype(io);
    using storage_t = typename IO::storage_t;
    const auto* xp = static_cast<const storage_t*>(c.x.const_data_ptr());
    std::vector<const storage_t*> ds;
    for (int64_t i = 0; i < m; ++i) ds.push_back(static_cast<const storage_t*>(p.denoised[i]));
    auto* op = static_cast<storage_t*>(out.data_ptr());
    for_each_part(batch, per_sample, split, parallel, [&](int64_t task, int64_t b, int64_t begin, int64_t end) {
      reduce_part<IO>(p, xp, ds, static_cast<uint64_t>(key_ptr[b]), b * per_sample, begin, end, &stats[task * r],
                      mode == kOr ? &coefs[b * m] : nullptr, op);
    });
    for (int64_t b = 0; b < batch; ++b) {
      double* sums = &stats[b * split.parts * r];
      for (int64_t q = 1; q < split.parts; ++q) {
        for (int64_t k = 0; k < r; ++k) sums[k] += sums[q * r + k];
      }
      double next[kMaxModels];
      if (mode == kAnd) {
        ito_finalize<0, true>(p, sums, &ell64[b * m], &kappa[b * m], next);
      } else {
        ito_finalize<0, false>(p, sums, &ell64[b * m], &kappa[b * m], next);
      }
      for (int64_t i = 0; i < m; ++i) {
        ell64[b * m + i] = next[i];
        coefs[b * m + i] = ito_move_coef(p, kappa[b * m + i]);
      }
    }
    if (mode == kAnd) {
      for_each_part(batch, per_sample, split, parallel, [&](int64_t, int64_t b, int64_t begin, int64_t end) {
        move_part<IO>(p, xp, ds, static_cast<uint64_t>(key_ptr[b]), b * per_sample, begin, end, &coefs[b * m], op);
      });
    }
  });
  dispatch_float(ell.scalar_type(), [&](auto io) {
    using T = typename decltype(io)::storage_t;
    T* e = ell_next.data_ptr<T>();
    T* k = kappa_out.data_ptr<T>();
    for (int64_t i = 0; i < batch * m; ++i) {
      e[i] = static_cast<T>(ell64[i]);
      k[i] = static_cast<T>(kappa[i]);
    }
  });
  return {out, ell_next, kappa_out};
}

#ifdef FASTDIFF_WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> ito_step_cuda(const at::Tensor& x, at::TensorList denoised, double sigma,
                                                             double sigma_next, const at::Tensor& ell, const at::Tensor& keys,
                                                             at::IntArrayRef draw, int64_t mode, double temperature,
                                                             at::ArrayRef<double> log_weights, at::ArrayRef<double> bias,
                                                             double rcond) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Checked c = check(x, denoised, sigma, sigma_next, ell, keys, draw, mode, temperature, log_weights, bias, rcond);
  const int64_t batch = x.size(0);
  const int64_t m = c.params.models;
  const int64_t per_sample = batch == 0 ? 0 : x.numel() / batch;
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor ell_next = at::empty({batch, m}, ell.options());
  at::Tensor kappa = at::empty({batch, m}, ell.options());
  const ItoPartition split = ito_step_partition(per_sample);
  at::Tensor workspace = at::empty({batch * split.parts * ito_stat_count(m, mode == kAnd)}, x.options().dtype(at::kDouble));
  C10_CUDA_CHECK(launch_ito_step(c.x.data_ptr(), c.params, c.ell.data_ptr(), c.keys.const_data_ptr<int64_t>(), batch,
                                 per_sample, launcher_dtype(x.scalar_type()), workspace.data_ptr<double>(), out.data_ptr(),
                                 ell_next.data_ptr(), kappa.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {out, ell_next, kappa};
}
#endif

}  // namespace
}  // namespace fastdiff

TORCH_LIBRARY_FRAGMENT(fastdiff, m) {
  // One superposed Itô step: (x', ell', kappa); mode 0 = OR, 1 = AND; draw = [step, stage, stream].
  m.set_python_module("fastdiff.ops.ito_step");
  m.def("ito_step(Tensor x, Tensor[] denoised, float sigma, float sigma_next, Tensor ell, Tensor keys, int[] draw, int mode, "
        "float temperature, float[] log_weights, float[] bias, float rcond) -> (Tensor, Tensor, Tensor)");
}

FASTDIFF_REGISTER_KERNELS(ito_step)
