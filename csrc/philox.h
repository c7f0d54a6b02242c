// Philox4x32-10 (Salmon et al., SC 2011), shared by the CPU kernel and the CUDA kernel.
// Plain C++ (no torch headers) so that csrc/cuda/philox.cu compiles with nvcc alone.
//
// Counter layout, the contract of fastdiff.reference.philox:
//   key = (seed mod 2^32, seed >> 32), counter = (element // 4, step, stage, stream),
//   u_j = (r_j >> 9) 2^-23 + 2^-24, and Box-Muller pairs (u0, u1) and (u2, u3).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastdiff {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

struct PhiloxWords {
  uint32_t r0, r1, r2, r3;
};

// hi and lo 32-bit halves of the 64-bit product a * m.
FASTDIFF_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t m) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, m);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * m) >> 32);
#endif
}

// One Philox4x32-10 block: 10 rounds of (c0, c1, c2, c3) <- (hi1^c1^k0, lo1, hi0^c3^k1, lo0),
// with hi0/lo0 = mulhilo(M0, c0), hi1/lo1 = mulhilo(M1, c2), and the key bumped by the Weyl
// constants (W0, W1) between rounds.
FASTDIFF_HOST_DEVICE PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                               uint32_t k1) {
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint32_t hi0 = mulhi32(c0, kPhiloxM0);
    const uint32_t lo0 = c0 * kPhiloxM0;
    const uint32_t hi1 = mulhi32(c2, kPhiloxM1);
    const uint32_t lo1 = c2 * kPhiloxM1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {c0, c1, c2, c3};
}

// u = (r >> 9) 2^-23 + 2^-24: 2^23 levels strictly inside (0, 1), exact in float32.
FASTDIFF_HOST_DEVICE float uniform_float(uint32_t r) {
  return static_cast<float>(r >> 9) * 0x1p-23f + 0x1p-24f;
}

FASTDIFF_HOST_DEVICE double uniform_double(uint32_t r) {
  return static_cast<double>(r >> 9) * 0x1p-23 + 0x1p-24;
}

}  // namespace fastdiff
