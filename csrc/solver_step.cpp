// fastdiff::solver_step on CPU (and the CUDA registration that calls csrc/cuda/solver_step.cu):
// out = a x + sum_i bs[i] ks[i] + sum_d cs[d] z_d in x's dtype, one pass over memory, with the
// Gaussians z_d generated in the loop from the counter stream (keys[b], element, step, stage,
// stream) of csrc/philox.h and never stored. float16/bfloat16 are computed in float32, float64 in
// float64; terms with a zero coefficient are skipped (as in the reference), so they cost nothing
// and never propagate NaN.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "common.h"
#include "limits.h"
#include "normal_block.h"


namespace fastdiff {
namespace {

// Elements per accumulator chunk: the accumulator (4-8 KiB) stays in L1 while every operand
// streams through once. A multiple of 4 kBlock, so a chunk covers whole noise blocks.
constexpr int64_t kChunk = 1024;

// One Gaussian term c z of the step: the normals of (step, stage, stream) for every sample's key.
struct Draw {
  uint32_t step, stage, stream;
  double coef;
};

// The output and every operand with a nonzero coefficient, all dense in one shared layout, and
// the noise terms. With noise the layout is row-major: the Gaussians follow the element order.
struct Operands {
  at::Tensor out;
  at::Tensor x;
  std::vector<at::Tensor> terms;
  std::vector<double> coefs;
  at::Tensor keys;
  std::vector<Draw> draws;
  int64_t batch = 1;
  int64_t per_sample = 0;
};

void check_operand(const at::Tensor& t, const at::Tensor& x, size_t i) {
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), "solver_step: ks[", i, "] has shape ", t.sizes(), ", expected x's shape ", x.sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), "solver_step: ks[", i, "] is on ", t.device(), ", expected x's device ", x.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "solver_step: ks[", i, "] has dtype ", t.scalar_type(),
                   ", expected x's dtype ", x.scalar_type());
}

std::vector<Draw> check_draws(const at::Tensor& x, const std::optional<at::Tensor>& keys, at::IntArrayRef draws,
                              at::ArrayRef<double> cs) {
  TORCH_CHECK_VALUE(draws.size() == 3 * cs.size(), "solver_step: draws must hold one (step, stage, stream) triple per ",
                    "noise coefficient, got ", draws.size(), " ints for ", cs.size(), " coefficients in cs");
  TORCH_CHECK_VALUE(static_cast<int64_t>(cs.size()) <= kMaxDraws, "solver_step: at most ", kMaxDraws,
                    " noise draws per step, got ", cs.size());
  for (int64_t w : draws) {
    TORCH_CHECK_VALUE(w >= 0 && w < kCounterWords, "solver_step: draws entries are 32-bit counter words in [0, 2^32), got ", w);
  }
  if (cs.empty()) return {};
  TORCH_CHECK_VALUE(keys.has_value(), "solver_step: noise draws need keys, the per-sample seeds");
  const at::Tensor& k = *keys;
  TORCH_CHECK_TYPE(k.scalar_type() == at::kLong, "solver_step: keys must be int64 per-sample seeds, got dtype ", k.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1 && k.dim() == 1 && k.size(0) == x.size(0), "solver_step: keys must have shape [B] for x of ",
                    "shape [B, ...], got keys ", k.sizes(), " and x ", x.sizes());
  TORCH_CHECK_VALUE(k.device() == x.device(), "solver_step: keys are on ", k.device(), ", expected x's device ", x.device());
  std::vector<Draw> out;
  for (size_t d = 0; d < cs.size(); ++d) {
    if (cs[d] == 0.0) continue;
    out.push_back({static_cast<uint32_t>(draws[3 * d]), static_cast<uint32_t>(draws[3 * d + 1]),
                   static_cast<uint32_t>(draws[3 * d + 2]), cs[d]});
  }
  return out;
}

// t itself when it already has out's strides, else a copy in out's layout.
at::Tensor in_layout(const at::Tensor& t, const at::Tensor& out) {
  return t.strides() == out.strides() ? t : at::empty_like(out).copy_(t);
}

// Validates the arguments and lays every operand out like `out`: row-major when there is noise,
// else `empty_like(x)` (x's strides when x is dense, else its suggested memory format).
Operands prepare(const at::Tensor& x, at::TensorList ks, at::ArrayRef<double> bs, const std::optional<at::Tensor>& keys,
                 at::IntArrayRef draws, at::ArrayRef<double> cs) {
  check_float_dtype(x.scalar_type(), "solver_step", "x");
  TORCH_CHECK_VALUE(ks.size() == bs.size(), "solver_step: needs one coefficient per stage tensor, got ", ks.size(),
                    " tensors in ks and ", bs.size(), " coefficients in bs");
  for (size_t i = 0; i < ks.size(); ++i) check_operand(ks[i], x, i);
  Operands ops;
  ops.draws = check_draws(x, keys, draws, cs);
  ops.out = ops.draws.empty() ? at::empty_like(x) : at::empty(x.sizes(), x.options());
  ops.x = in_layout(x, ops.out);
  for (size_t i = 0; i < ks.size(); ++i) {
    if (bs[i] == 0.0) continue;
    ops.terms.push_back(in_layout(ks[i], ops.out));
    ops.coefs.push_back(bs[i]);
  }
  if (!ops.draws.empty()) {
    ops.keys = keys->contiguous();
    ops.batch = x.size(0);
  }
  ops.per_sample = ops.batch == 0 ? 0 : x.numel() / ops.batch;
  return ops;
}

// Row b of the [batch, per_sample] layout in chunks of kChunk elements: acc = a x + sum_t coef_t
// term_t, then per draw the Gaussians of the chunk's four-element groups, a block at a time.
template <typename IO>
void solver_step_kernel(const typename IO::storage_t* x, typename IO::math_t a,
                        const std::vector<const typename IO::storage_t*>& terms,
                        const std::vector<typename IO::math_t>& coefs, const int64_t* keys, const std::vector<Draw>& draws,
                        int64_t batch, int64_t per_sample, typename IO::storage_t* out) {
  using storage_t = typename IO::storage_t;
  using math_t = typename IO::math_t;
  const int64_t chunks_per_row = (per_sample + kChunk - 1) / kChunk;
  const int64_t tasks = batch * chunks_per_row;
  const auto num_terms = static_cast<int64_t>(terms.size());
#pragma omp parallel for schedule(static) if (batch * per_sample > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / chunks_per_row;
    const int64_t begin = (task - b * chunks_per_row) * kChunk;  // within the row
    const int64_t len = std::min(kChunk, per_sample - begin);
    const int64_t offset = b * per_sample + begin;
    math_t acc[kChunk];
    const storage_t* xs = x + offset;
    for (int64_t i = 0; i < len; ++i) acc[i] = a * IO::load(xs[i]);
    for (int64_t t = 0; t < num_terms; ++t) {
      const storage_t* p = terms[t] + offset;
      const math_t c = coefs[t];
      for (int64_t i = 0; i < len; ++i) acc[i] += c * IO::load(p[i]);
    }
    for (const Draw& d : draws) {
      const math_t c = static_cast<math_t>(d.coef);
      for (int64_t j0 = 0; j0 < len; j0 += 4 * kBlock) {
        const int64_t valid = std::min<int64_t>(4 * kBlock, len - j0);
        const int count = static_cast<int>((valid + 3) / 4);
        math_t z[4][kBlock];
        normal_block(static_cast<uint32_t>((begin + j0) / 4), count, d.step, d.stage, d.stream, static_cast<uint64_t>(keys[b]), z);
        math_t* dst = acc + j0;
        const int64_t full = valid / 4;
        for (int64_t j = 0; j < full; ++j) {
          dst[4 * j] += c * z[0][j];
          dst[4 * j + 1] += c * z[1][j];
          dst[4 * j + 2] += c * z[2][j];
          dst[4 * j + 3] += c * z[3][j];
        }
        for (int64_t e = 4 * full; e < valid; ++e) dst[e] += c * z[e % 4][e / 4];
      }
    }
    storage_t* o = out + offset;
    for (int64_t i = 0; i < len; ++i) o[i] = IO::store(acc[i]);
  }
}

at::Tensor solver_step_cpu(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs,
                           const std::optional<at::Tensor>& keys, at::IntArrayRef draws, at::ArrayRef<double> cs) {
  const Operands ops = prepare(x, ks, bs, keys, draws, cs);
  dispatch_float(x.scalar_type(), [&](auto io) {
    using IO = decltype(io);
    using storage_t = typename IO::storage_t;
    using math_t = typename IO::math_t;
    std::vector<const storage_t*> ptrs;
    std::vector<math_t> coefs;
    for (size_t t = 0; t < ops.terms.size(); ++t) {
      ptrs.push_back(static_cast<const storage_t*>(ops.terms[t].const_data_ptr()));
      coefs.push_back(static_cast<math_t>(ops.coefs[t]));
    }
    const int64_t* key_ptr = ops.draws.empty() ? nullptr : ops.keys.const_data_ptr<int64_t>();
    solver_step_kernel<IO>(static_cast<const storage_t*>(ops.x.const_data_ptr()), static_cast<math_t>(a), ptrs, coefs, key_ptr,
                           ops.draws, ops.batch, ops.per_sample, static_cast<storage_t*>(ops.out.data_ptr()));
  });
  return ops.out;
}

#ifdef FASTDIFF_WITH_CUDA
at::Tensor solver_step_cuda(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs,
                            const std::optional<at::Tensor>& keys, at::IntArrayRef draws, at::ArrayRef<double> cs) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Operands ops = prepare(x, ks, bs, keys, draws, cs);
  std::vector<const void*> ptrs;
  for (const at::Tensor& t : ops.terms) ptrs.push_back(t.data_ptr());
  NoiseDraws noise{};
  noise.count = static_cast<int>(ops.draws.size());
  for (size_t d = 0; d < ops.draws.size(); ++d) {
    noise.step[d] = ops.draws[d].step;
    noise.stage[d] = ops.draws[d].stage;
    noise.stream[d] = ops.draws[d].stream;
    noise.coef[d] = ops.draws[d].coef;
  }
  const int64_t* key_ptr = ops.draws.empty() ? nullptr : ops.keys.const_data_ptr<int64_t>();
  C10_CUDA_CHECK(launch_solver_step(ops.x.data_ptr(), a, ptrs.data(), ops.coefs.data(), static_cast<int>(ptrs.size()), key_ptr,
                                    noise, ops.batch, ops.per_sample, launcher_dtype(x.scalar_type()), ops.out.data_ptr(),
                                    c10::cuda::getCurrentCUDAStream()));
  return ops.out;
}
#endif

}  // namespace
}  // namespace fastdiff

FASTDIFF_REGISTER_KERNELS(solver_step)
