// fastdiff::philox_normal on CPU (and the CUDA registration that calls csrc/cuda/philox.cu).
// Standard normals [B, numel]: element e of row b comes from Philox4x32-10 keyed by keys[b] with
// counter (e // 4, step, stage, stream), then Box-Muller (csrc/philox.h). float64 output is
// computed in float64 with libm, every other dtype in float32 with the vectorisable functions of
// csrc/fast_math.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.h"
#include "limits.h"
#include "normal_block.h"


namespace fastdiff {
namespace {

// Box-Muller runs in IO::math_t: float64 for float64 output, float32 otherwise.
template <typename IO>
void philox_normal_kernel(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage,
                          uint32_t stream, typename IO::storage_t* out) {
  using math_t = typename IO::math_t;
  const int64_t groups = (numel + 3) / 4;
  const int64_t blocks_per_row = (groups + kBlock - 1) / kBlock;
  const int64_t tasks = batch * blocks_per_row;
#pragma omp parallel for schedule(static) if (batch * numel > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / blocks_per_row;
    const int64_t g0 = (task - b * blocks_per_row) * kBlock;
    const int count = static_cast<int>(std::min<int64_t>(kBlock, groups - g0));
    math_t z[4][kBlock];
    normal_block(static_cast<uint32_t>(g0), count, step, stage, stream, static_cast<uint64_t>(keys[b]), z);
    typename IO::storage_t* dst = out + b * numel + 4 * g0;
    const int64_t valid = std::min<int64_t>(4 * static_cast<int64_t>(count), numel - 4 * g0);
    const int64_t full = valid / 4;
    for (int64_t j = 0; j < full; ++j) {
      dst[4 * j] = IO::store(z[0][j]);
      dst[4 * j + 1] = IO::store(z[1][j]);
      dst[4 * j + 2] = IO::store(z[2][j]);
      dst[4 * j + 3] = IO::store(z[3][j]);
    }
    for (int64_t e = 4 * full; e < valid; ++e) dst[e] = IO::store(z[e % 4][e / 4]);
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
  dispatch_float(dtype, [&](auto io) {
    using IO = decltype(io);
    auto* dst = static_cast<typename IO::storage_t*>(out.data_ptr());
    philox_normal_kernel<IO>(k, batch, numel, step32, stage32, stream32, dst);
  });
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

FASTDIFF_REGISTER_KERNELS(philox_normal)
