// The numbers every implementation of the fused ops shares: the counter layout (fastdiff/noise.py) and the
// kernels' limits (kernels/limits.py). Those Python modules are the source; tests/test_constants.py fails when a
// value here differs. Plain C++, so the CPU files and the CUDA files (nvcc alone) both include it.
#pragma once

#include <cstdint>

namespace fastdiff {

// Counter layout.
constexpr uint32_t kStreamProbe = 1;  // STREAM_PROBE: stream word of the Hutchinson probes
constexpr int64_t kMaxNumel = int64_t(4) << 32;  // MAX_NUMEL: 2^32 groups of four elements per sample
constexpr int64_t kCounterWords = int64_t(1) << 32;  // a 32-bit counter word takes values in [0, 2^32)
constexpr uint32_t kProbeStride = 1u << 16;  // PROBE_STRIDE: probe p of stage s has third word s + kProbeStride p

// Kernel limits.
constexpr int kMaxDraws = 64;    // MAX_DRAWS: counter draws inside one fused solver step
constexpr int kMaxTerms = 8;     // MAX_TERMS: stage tensors per kernel pass
constexpr int kMaxModels = 8;    // MAX_MODELS: denoised tensors of one ito_step
constexpr int64_t kPartMin = 4096;  // PART_MIN: elements of an ito_step part at least
constexpr int64_t kMaxParts = 64;   // MAX_PARTS: ito_step parts per sample at most

}  // namespace fastdiff
