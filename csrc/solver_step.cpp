// fastdiff::solver_step on CPU (and the CUDA registration that calls csrc/cuda/solver_step.cu):
// out = a x + sum_i bs[i] ks[i] + sum_j cs[j] zs[j] in x's dtype, one pass over memory.
// float16/bfloat16 are computed in float32, float64 in float64; terms with a zero coefficient
// are skipped (as in the reference), so they cost nothing and never propagate NaN.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

#ifdef FASTDIFF_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fastdiff {
namespace {

// Elements per accumulator chunk: the float32 accumulator (4 KiB) stays in L1 while every
// operand streams through once.
constexpr int64_t kChunk = 1024;

// The output and every operand with a nonzero coefficient, all dense in one shared layout.
struct Operands {
  at::Tensor out;
  at::Tensor x;
  std::vector<at::Tensor> terms;
  std::vector<double> coefs;
};

void check_operand(const at::Tensor& t, const at::Tensor& x, const char* name, size_t i) {
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), "solver_step: ", name, "[", i, "] has shape ", t.sizes(), ", expected x's shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), "solver_step: ", name, "[", i, "] is on ", t.device(), ", expected x's device ",
                    x.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "solver_step: ", name, "[", i, "] has dtype ", t.scalar_type(),
                   ", expected x's dtype ", x.scalar_type());
}

// t itself when it already has out's strides, else a copy in out's layout.
at::Tensor in_layout(const at::Tensor& t, const at::Tensor& out) {
  return t.strides() == out.strides() ? t : at::empty_like(out).copy_(t);
}

// Validates the arguments and lays every operand out like `out = empty_like(x)` (x's strides
// when x is dense, else its suggested memory format).
Operands prepare(const at::Tensor& x, at::TensorList ks, at::ArrayRef<double> bs, at::TensorList zs,
                 at::ArrayRef<double> cs) {
  check_float_dtype(x.scalar_type(), "solver_step", "x");
  TORCH_CHECK_VALUE(ks.size() == bs.size(), "solver_step: needs one coefficient per stage tensor, got ", ks.size(),
                    " tensors in ks and ", bs.size(), " coefficients in bs");
  TORCH_CHECK_VALUE(zs.size() == cs.size(), "solver_step: needs one coefficient per noise tensor, got ", zs.size(),
                    " tensors in zs and ", cs.size(), " coefficients in cs");
  Operands ops;
  ops.out = at::empty_like(x);
  ops.x = in_layout(x, ops.out);
  const auto add = [&](at::TensorList ts, at::ArrayRef<double> coefs, const char* name) {
    for (size_t i = 0; i < ts.size(); ++i) {
      check_operand(ts[i], x, name, i);
      if (coefs[i] != 0.0) {
        ops.terms.push_back(in_layout(ts[i], ops.out));
        ops.coefs.push_back(coefs[i]);
      }
    }
  };
  add(ks, bs, "ks");
  add(zs, cs, "zs");
  return ops;
}

template <typename IO>
void solver_step_kernel(const typename IO::storage_t* x, typename IO::math_t a,
                        const std::vector<const typename IO::storage_t*>& terms,
                        const std::vector<typename IO::math_t>& coefs, int64_t n, typename IO::storage_t* out) {
  using storage_t = typename IO::storage_t;
  using math_t = typename IO::math_t;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const auto num_terms = static_cast<int64_t>(terms.size());
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    const int64_t len = std::min(kChunk, n - begin);
    math_t acc[kChunk];
    const storage_t* xs = x + begin;
    for (int64_t i = 0; i < len; ++i) acc[i] = a * IO::load(xs[i]);
    for (int64_t t = 0; t < num_terms; ++t) {
      const storage_t* p = terms[t] + begin;
      const math_t b = coefs[t];
      for (int64_t i = 0; i < len; ++i) acc[i] += b * IO::load(p[i]);
    }
    storage_t* o = out + begin;
    for (int64_t i = 0; i < len; ++i) o[i] = IO::store(acc[i]);
  }
}

at::Tensor solver_step_cpu(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs, at::TensorList zs,
                           at::ArrayRef<double> cs) {
  const Operands ops = prepare(x, ks, bs, zs, cs);
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
    solver_step_kernel<IO>(static_cast<const storage_t*>(ops.x.const_data_ptr()), static_cast<math_t>(a), ptrs, coefs,
                           ops.out.numel(), static_cast<storage_t*>(ops.out.data_ptr()));
  });
  return ops.out;
}

#ifdef FASTDIFF_WITH_CUDA
at::Tensor solver_step_cuda(const at::Tensor& x, at::TensorList ks, double a, at::ArrayRef<double> bs, at::TensorList zs,
                            at::ArrayRef<double> cs) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Operands ops = prepare(x, ks, bs, zs, cs);
  std::vector<const void*> ptrs;
  for (const at::Tensor& t : ops.terms) ptrs.push_back(t.data_ptr());
  C10_CUDA_CHECK(launch_solver_step(ops.x.data_ptr(), a, ptrs.data(), ops.coefs.data(), static_cast<int>(ptrs.size()),
                                    ops.out.numel(), launcher_dtype(x.scalar_type()), ops.out.data_ptr(),
                                    c10::cuda::getCurrentCUDAStream()));
  return ops.out;
}
#endif

}  // namespace
}  // namespace fastdiff

TORCH_LIBRARY_IMPL(fastdiff, CPU, m) {
  m.impl("solver_step", &fastdiff::solver_step_cpu);
}

#ifdef FASTDIFF_WITH_CUDA
TORCH_LIBRARY_IMPL(fastdiff, CUDA, m) {
  m.impl("solver_step", &fastdiff::solver_step_cuda);
}
#endif
