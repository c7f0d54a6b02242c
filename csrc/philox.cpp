// fastdiff::philox_normal on CPU (and the CUDA registration that calls csrc/cuda/philox.cu).
// Standard normals [B, numel]: element e of row b comes from Philox4x32-10 keyed by keys[b] with
// counter (e // 4, step, stage, stream), then Box-Muller (csrc/philox.h). float64 output is
// computed in float64, every other dtype in float32.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.h"
#include "philox.h"

#ifdef FASTDIFF_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fastdiff {
namespace {

// Groups of four elements per inner block: the Philox loop over a block vectorises.
constexpr int64_t kBlock = 64;
// The counter's element word is 32 bits: at most 2^32 groups of four per sample.
constexpr int64_t kMaxNumel = int64_t(4) << 32;

inline void box_muller(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, float z[4]) {
  constexpr float kTwoPi = 6.283185307179586f;
  const float rad_a = std::sqrt(-2.0f * std::log(uniform_float(r0)));
  const float rad_b = std::sqrt(-2.0f * std::log(uniform_float(r2)));
  const float ang_a = kTwoPi * uniform_float(r1);
  const float ang_b = kTwoPi * uniform_float(r3);
  z[0] = rad_a * std::cos(ang_a);
  z[1] = rad_a * std::sin(ang_a);
  z[2] = rad_b * std::cos(ang_b);
  z[3] = rad_b * std::sin(ang_b);
}

inline void box_muller(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, double z[4]) {
  constexpr double kTwoPi = 6.283185307179586;
  const double rad_a = std::sqrt(-2.0 * std::log(uniform_double(r0)));
  const double rad_b = std::sqrt(-2.0 * std::log(uniform_double(r2)));
  const double ang_a = kTwoPi * uniform_double(r1);
  const double ang_b = kTwoPi * uniform_double(r3);
  z[0] = rad_a * std::cos(ang_a);
  z[1] = rad_a * std::sin(ang_a);
  z[2] = rad_b * std::cos(ang_b);
  z[3] = rad_b * std::sin(ang_b);
}

// math_t is float for every output type except double.
template <typename out_t, typename math_t>
void philox_normal_kernel(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage,
                          uint32_t stream, out_t* out) {
  const int64_t groups = (numel + 3) / 4;
  const int64_t blocks_per_row = (groups + kBlock - 1) / kBlock;
  const int64_t tasks = batch * blocks_per_row;
#pragma omp parallel for schedule(static) if (batch * numel > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / blocks_per_row;
    const int64_t g0 = (task - b * blocks_per_row) * kBlock;
    const int64_t count = std::min(kBlock, groups - g0);
    const uint64_t seed = static_cast<uint64_t>(keys[b]);
    const uint32_t k0 = static_cast<uint32_t>(seed);
    const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
    uint32_t w0[kBlock], w1[kBlock], w2[kBlock], w3[kBlock];
    for (int64_t j = 0; j < count; ++j) {
      const PhiloxWords w = philox4x32_10(static_cast<uint32_t>(g0 + j), step, stage, stream, k0, k1);
      w0[j] = w.r0;
      w1[j] = w.r1;
      w2[j] = w.r2;
      w3[j] = w.r3;
    }
    out_t* row = out + b * numel;
    for (int64_t j = 0; j < count; ++j) {
      math_t z[4];
      box_muller(w0[j], w1[j], w2[j], w3[j], z);
      const int64_t e = 4 * (g0 + j);
      const int64_t valid = std::min<int64_t>(4, numel - e);
      for (int64_t q = 0; q < valid; ++q) row[e + q] = static_cast<out_t>(z[q]);
    }
  }
}

void check_args(const at::Tensor& keys, int64_t numel, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(keys.scalar_type() == at::kLong, "philox_normal: keys must be an int64 tensor of per-sample seeds, got dtype ",
                   keys.scalar_type());
  TORCH_CHECK_VALUE(keys.dim() == 1, "philox_normal: keys must be 1-D [B], got shape ", keys.sizes());
  TORCH_CHECK_VALUE(numel >= 0 && numel <= kMaxNumel, "philox_normal: numel must be in [0, 2^34] (the element counter is 32-bit ",
                    "over groups of four), got ", numel);
  check_float_dtype(dtype, "philox_normal", "dtype");
}

at::Tensor philox_normal_cpu(const at::Tensor& keys, int64_t numel, int64_t step, int64_t stage, int64_t stream,
                             at::ScalarType dtype) {
  check_args(keys, numel, dtype);
  const at::Tensor keys_c = keys.contiguous();
  const int64_t batch = keys_c.size(0);
  at::Tensor out = at::empty({batch, numel}, keys_c.options().dtype(dtype));
  // Step, stage and stream enter the counter modulo 2^32, as in the reference.
  const auto step32 = static_cast<uint32_t>(step);
  const auto stage32 = static_cast<uint32_t>(stage);
  const auto stream32 = static_cast<uint32_t>(stream);
  const int64_t* k = keys_c.data_ptr<int64_t>();
  switch (dtype) {
    case at::kFloat:
      philox_normal_kernel<float, float>(k, batch, numel, step32, stage32, stream32, out.data_ptr<float>());
      break;
    case at::kDouble:
      philox_normal_kernel<double, double>(k, batch, numel, step32, stage32, stream32, out.data_ptr<double>());
      break;
    case at::kHalf:
      philox_normal_kernel<at::Half, float>(k, batch, numel, step32, stage32, stream32, out.data_ptr<at::Half>());
      break;
    default:  // bfloat16, the last dtype check_args lets through
      philox_normal_kernel<at::BFloat16, float>(k, batch, numel, step32, stage32, stream32, out.data_ptr<at::BFloat16>());
  }
  return out;
}

#ifdef FASTDIFF_WITH_CUDA
at::Tensor philox_normal_cuda(const at::Tensor& keys, int64_t numel, int64_t step, int64_t stage, int64_t stream,
                              at::ScalarType dtype) {
  check_args(keys, numel, dtype);
  const c10::cuda::CUDAGuard guard(keys.device());
  const at::Tensor keys_c = keys.contiguous();
  at::Tensor out = at::empty({keys_c.size(0), numel}, keys_c.options().dtype(dtype));
  C10_CUDA_CHECK(launch_philox_normal(keys_c.data_ptr<int64_t>(), keys_c.size(0), numel, static_cast<uint32_t>(step),
                                      static_cast<uint32_t>(stage), static_cast<uint32_t>(stream), launcher_dtype(dtype),
                                      out.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return out;
}
#endif

}  // namespace
}  // namespace fastdiff

TORCH_LIBRARY_IMPL(fastdiff, CPU, m) {
  m.impl("philox_normal", &fastdiff::philox_normal_cpu);
}

#ifdef FASTDIFF_WITH_CUDA
TORCH_LIBRARY_IMPL(fastdiff, CUDA, m) {
  m.impl("philox_normal", &fastdiff::philox_normal_cuda);
}
#endif
