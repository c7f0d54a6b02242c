// fastdiff::trace_step on CPU (and the CUDA registration that calls csrc/cuda/trace_step.cu):
//   x_out     = a x + sum_i bs[i] ks[i]                         (x's dtype, row-major)
//   total_out = total + c + w (1/P) sum_p <u[p], v_p>            (float64 [B])
// with v_p the probes of fastdiff.reference.trace_step, generated in the loop from the counter stream
// (keys[b], element, step, stage + 2^16 p, STREAM_PROBE) and never stored: Rademacher from the top
// bit of each Philox word, Gaussian from Box-Muller (csrc/normal_block.h). One pass over x, the
// ks and u. Each sample is cut into fixed chunks whose dots (float64 sums) are added in chunk
// order, so the result depends neither on the thread count nor on the batch around a sample.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "limits.h"
#include "normal_block.h"

#ifdef FASTDIFF_WITH_CUDA
#include "cuda/trace_step_launchers.h"
#endif

TORCH_LIBRARY_FRAGMENT(fastdiff, m) {
  // (a x + sum_i bs[i] ks[i], total + c + w mean_p <u[p], v_p>), v_p the probe (0 Rademacher,
  // 1 Gaussian) of (keys[b], element, step, stage + 2^16 p, STREAM_PROBE); u is [P, *x.shape].
  m.set_python_module("fastdiff.ops.trace_step");
  m.def(
      "trace_step(Tensor x, Tensor[] ks, float a, float[] bs, Tensor u, Tensor keys, int step, int stage, int probe, "
      "Tensor total, float c, float w) -> (Tensor, Tensor)");
}

namespace fastdiff {
namespace {

constexpr int64_t kChunk = 1024;  // elements per task; a multiple of 4 kBlock

struct Operands {
  at::Tensor x, u, keys, total, out, total_out;
  std::vector<at::Tensor> terms;
  std::vector<double> coefs;
  int64_t batch = 0, per_sample = 0, probes = 0;
};

Operands prepare(const at::Tensor& x, at::TensorList ks, at::ArrayRef<double> bs, const at::Tensor& u,
                 const at::Tensor& keys, int64_t step, int64_t stage, int64_t probe, const at::Tensor& total) {
  check_float_dtype(x.scalar_type(), "trace_step", "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "trace_step: x must have shape [B, ...], got ", x.sizes());
  TORCH_CHECK_VALUE(ks.size() == bs.size(), "trace_step: needs one coefficient per stage tensor, got ", ks.size(),
                    " tensors in ks and ", bs.size(), " coefficients in bs");
  TORCH_CHECK_VALUE(static_cast<int64_t>(ks.size()) <= kMaxTerms, "trace_step: at most ", kMaxTerms,
                    " stage tensors, got ", ks.size());
  for (size_t i = 0; i < ks.size(); ++i) {
    TORCH_CHECK_VALUE(ks[i].sizes() == x.sizes(), "trace_step: ks[", i, "] has shape ", ks[i].sizes(), ", expected ", x.sizes());
    TORCH_CHECK_VALUE(ks[i].device() == x.device(), "trace_step: ks[", i, "] is on ", ks[i].device(), ", expected ", x.device());
    TORCH_CHECK_TYPE(ks[i].scalar_type() == x.scalar_type(), "trace_step: ks[", i, "] has dtype ", ks[i].scalar_type(),
                     ", expected x's dtype ", x.scalar_type());
  }
  TORCH_CHECK_VALUE(u.dim() == x.dim() + 1 && u.size(0) >= 1 && u.size(0) <= int64_t(kProbeStride) && u.sizes().slice(1) == x.sizes(),
                    "trace_step: u must have shape [P, *x.shape] with 1 <= P <= 2^16, got ", u.sizes(), " for x ", x.sizes());
  TORCH_CHECK_VALUE(u.device() == x.device(), "trace_step: u is on ", u.device(), ", expected ", x.device());
  TORCH_CHECK_TYPE(u.scalar_type() == x.scalar_type(), "trace_step: u has dtype ", u.scalar_type(), ", expected ",
                   x.scalar_type());
  TORCH_CHECK_TYPE(keys.scalar_type() == at::kLong, "trace_step: keys must be int64 per-sample seeds, got ", keys.scalar_type());
  TORCH_CHECK_VALUE(keys.dim() == 1 && keys.size(0) == x.size(0) && keys.device() == x.device(),
                    "trace_step: keys must have shape [B] on x's device, got ", keys.sizes(), " on ", keys.device());
  TORCH_CHECK_TYPE(total.scalar_type() == at::kDouble, "trace_step: total must be float64, got ", total.scalar_type());
  TORCH_CHECK_VALUE(total.dim() == 1 && total.size(0) == x.size(0) && total.device() == x.device(),
                    "trace_step: total must have shape [B] on x's device, got ", total.sizes(), " on ", total.device());
  TORCH_CHECK_VALUE(step >= 0 && step < kCounterWords, "trace_step: step must be in [0, 2^32), got ", step);
  TORCH_CHECK_VALUE(stage >= 0 && stage < int64_t(kProbeStride), "trace_step: stage must be in [0, 2^16), got ", stage);
  TORCH_CHECK_VALUE(probe == 0 || probe == 1, "trace_step: probe must be 0 (Rademacher) or 1 (Gaussian), got ", probe);
  Operands ops;
  ops.x = x.contiguous();
  ops.u = u.contiguous();
  ops.keys = keys.contiguous();
  ops.total = total.contiguous();
  for (size_t i = 0; i < ks.size(); ++i) {
    if (bs[i] == 0.0) continue;
    ops.terms.push_back(ks[i].contiguous());
    ops.coefs.push_back(bs[i]);
  }
  ops.out = at::empty(x.sizes(), x.options());
  ops.total_out = at::empty({x.size(0)}, total.options());
  ops.batch = x.size(0);
  ops.per_sample = ops.batch == 0 ? 0 : x.numel() / ops.batch;
  TORCH_CHECK_VALUE(ops.per_sample <= kMaxNumel,
                    "trace_step: at most 2^34 elements per sample (32-bit probe counter), got ", ops.per_sample);
  ops.probes = u.size(0);
  return ops;
}

// The probe values of groups g0 .. g0 + count - 1: z[q][j] is element 4 (g0 + j) + q.
template <typename math_t>
void probe_block(bool gaussian, uint32_t g0, int count, uint32_t step, uint32_t stage_word, uint64_t seed,
                 math_t z[4][kBlock]) {
  if (gaussian) {
    normal_block(g0, count, step, stage_word, kStreamProbe, seed, z);
    return;
  }
  Block words;
  philox_block(g0, count, step, stage_word, kStreamProbe, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
               words);
  for (int q = 0; q < 4; ++q) {
    for (int j = 0; j < count; ++j) z[q][j] = math_t(1) - math_t(2) * static_cast<math_t>(words.w[q][j] >> 31);
  }
}

// Task (b, chunk): the step on the chunk's elements, and sum_p <u[p], v_p> over them (float64)
// into partial[task]. Sample b's total is then the in-order sum of its chunks' partials.
template <typename IO>
void trace_step_kernel(const Operands& ops, double a, uint32_t step, uint32_t stage, bool gaussian, double c, double w) {
  using storage_t = typename IO::storage_t;
  using math_t = typename IO::math_t;
  const int64_t batch = ops.batch, per_sample = ops.per_sample, probes = ops.probes;
  const int64_t chunks_per_row = (per_sample + kChunk - 1) / kChunk;
  const int64_t tasks = batch * chunks_per_row;
  const auto* x = static_cast<const storage_t*>(ops.x.const_data_ptr());
  const auto* u = static_cast<const storage_t*>(ops.u.const_data_ptr());
  const int64_t* keys = ops.keys.const_data_ptr<int64_t>();
  auto* out = static_cast<storage_t*>(ops.out.data_ptr());
  std::vector<const storage_t*> terms;
  std::vector<math_t> coefs;
  for (size_t t = 0; t < ops.terms.size(); ++t) {
    terms.push_back(static_cast<const storage_t*>(ops.terms[t].const_data_ptr()));
    coefs.push_back(static_cast<math_t>(ops.coefs[t]));
  }
  const math_t scale = static_cast<math_t>(a);
  const auto num_terms = static_cast<int64_t>(terms.size());
  const int64_t plane = batch * per_sample;  // elements of one probe's u
  std::vector<double> partial(static_cast<size_t>(tasks), 0.0);
#pragma omp parallel for schedule(static) if (plane * (probes + num_terms) > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / chunks_per_row;
    const int64_t begin = (task - b * chunks_per_row) * kChunk;
    const int64_t len = std::min(kChunk, per_sample - begin);
    const int64_t offset = b * per_sample + begin;
    math_t acc[kChunk];
    for (int64_t i = 0; i < len; ++i) acc[i] = scale * IO::load(x[offset + i]);
    for (int64_t t = 0; t < num_terms; ++t) {
      const storage_t* p = terms[t] + offset;
      const math_t coef = coefs[t];
      for (int64_t i = 0; i < len; ++i) acc[i] += coef * IO::load(p[i]);
    }
    for (int64_t i = 0; i < len; ++i) out[offset + i] = IO::store(acc[i]);
    double dot = 0.0;
    for (int64_t p = 0; p < probes; ++p) {
      const uint32_t stage_word = stage + static_cast<uint32_t>(p) * kProbeStride;
      const storage_t* up = u + p * plane + offset;
      for (int64_t j0 = 0; j0 < len; j0 += 4 * kBlock) {
        const int64_t valid = std::min<int64_t>(4 * kBlock, len - j0);
        const int count = static_cast<int>((valid + 3) / 4);
        math_t z[4][kBlock];
        probe_block(gaussian, static_cast<uint32_t>((begin + j0) / 4), count, step, stage_word, static_cast<uint64_t>(keys[b]), z);
        // One float64 accumulator per lane of the four-element groups (a loop that vectorises),
        // then the partial group at the end of the sample.
        const storage_t* src = up + j0;
        const int64_t full = valid / 4;
        double lane[4] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t j = 0; j < full; ++j) {
          for (int q = 0; q < 4; ++q) lane[q] += static_cast<double>(IO::load(src[4 * j + q])) * static_cast<double>(z[q][j]);
        }
        for (int64_t e = 4 * full; e < valid; ++e) lane[e % 4] += static_cast<double>(IO::load(src[e])) * static_cast<double>(z[e % 4][e / 4]);
        dot += (lane[0] + lane[1]) + (lane[2] + lane[3]);
      }
    }
    partial[static_cast<size_t>(task)] = dot;
  }
  const double* total = ops.total.const_data_ptr<double>();
  double* total_out = ops.total_out.data_ptr<double>();
  for (int64_t b = 0; b < batch; ++b) {
    double sum = 0.0;
    for (int64_t k = 0; k < chunks_per_row; ++k) sum += partial[static_cast<size_t>(b * chunks_per_row + k)];
    total_out[b] = total[b] + c + w * (sum / static_cast<double>(probes));
  }
}

std::tuple<at::Tensor, at::Tensor> trace_step_cpu(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs,
                                                  const at::Tensor& u, const at::Tensor& keys, int64_t step, int64_t stage,
                                                  int64_t probe, const at::Tensor& total, double c, double w) {
  const Operands ops = prepare(x, ks, bs, u, keys, step, stage, probe, total);
  dispatch_float(x.scalar_type(), [&](auto io) {
    trace_step_kernel<decltype(io)>(ops, a, static_cast<uint32_t>(step), static_cast<uint32_t>(stage), probe == 1, c, w);
  });
  return {ops.out, ops.total_out};
}

#ifdef FASTDIFF_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> trace_step_cuda(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs,
                                                   const at::Tensor& u, const at::Tensor& keys, int64_t step, int64_t stage,
                                                   int64_t probe, const at::Tensor& total, double c, double w) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Operands ops = prepare(x, ks, bs, u, keys, step, stage, probe, total);
  TraceStepArgs args{};
  args.num_terms = static_cast<int>(ops.terms.size());
  for (size_t t = 0; t < ops.terms.size(); ++t) {
    args.terms[t] = ops.terms[t].const_data_ptr();
    args.coefs[t] = ops.coefs[t];
  }
  args.x = ops.x.const_data_ptr();
  args.a = a;
  args.u = ops.u.const_data_ptr();
  args.probes = ops.probes;
  args.keys = ops.keys.const_data_ptr<int64_t>();
  args.step = static_cast<uint32_t>(step);
  args.stage = static_cast<uint32_t>(stage);
  args.gaussian = probe == 1;
  args.total = ops.total.const_data_ptr<double>();
  args.c = c;
  args.w = w;
  args.batch = ops.batch;
  args.per_sample = ops.per_sample;
  args.out = ops.out.data_ptr();
  args.total_out = ops.total_out.data_ptr<double>();
  const int64_t parts = trace_step_partition(ops.per_sample).parts;
  at::Tensor workspace;
  if (parts > 1) {
    workspace = at::empty({ops.batch * parts}, ops.total.options());
    args.workspace = workspace.data_ptr<double>();
  }
  C10_CUDA_CHECK(launch_trace_step(args, launcher_dtype(x.scalar_type()), c10::cuda::getCurrentCUDAStream()));
  return {ops.out, ops.total_out};
}
#endif

}  // namespace
}  // namespace fastdiff

FASTDIFF_REGISTER_KERNELS(trace_step)
