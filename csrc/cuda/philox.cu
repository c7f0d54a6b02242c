// CUDA kernel of fastdiff::philox_normal: one thread per group of four elements, one
// Philox4x32-10 block per thread, Box-Muller on its four words (csrc/philox.h has the layout).
// Host side: launch_philox_normal in launchers.h; no torch headers here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../philox.h"
#include "box_muller.cuh"
#include "element_io.cuh"
#include "launchers.h"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

// math_t is float for every output type except double.
template <typename out_t, typename math_t>
__global__ void philox_normal_kernel(const int64_t* __restrict__ keys, int64_t numel, int64_t groups, int64_t total,
                                     uint32_t step, uint32_t stage, uint32_t stream, out_t* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t b = i / groups;
    const int64_t g = i - b * groups;
    const uint64_t seed = static_cast<uint64_t>(keys[b]);
    const PhiloxWords w = philox4x32_10(static_cast<uint32_t>(g), step, stage, stream, static_cast<uint32_t>(seed),
                                        static_cast<uint32_t>(seed >> 32));
    math_t z[4];
    box_muller(w, z);
    out_t* row = out + b * numel;
    const int64_t e = 4 * g;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (e + j < numel) store(row + e + j, z[j]);
    }
  }
}

template <typename out_t, typename math_t>
cudaError_t launch(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage, uint32_t stream,
                   void* out, cudaStream_t cuda_stream) {
  const int64_t groups = (numel + 3) / 4;
  const int64_t total = batch * groups;
  if (total == 0) return cudaSuccess;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  philox_normal_kernel<out_t, math_t><<<static_cast<unsigned>(blocks), kThreads, 0, cuda_stream>>>(
      keys, numel, groups, total, step, stage, stream, static_cast<out_t*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_philox_normal(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage,
                                 uint32_t stream, DType dtype, void* out, cudaStream_t cuda_stream) {
  return dispatch_dtype(dtype, [&](auto types) {
    using Types = decltype(types);
    return launch<typename Types::storage_t, typename Types::acc_t>(keys, batch, numel, step, stage, stream, out, cuda_stream);
  });
}

}  // namespace fastdiff
