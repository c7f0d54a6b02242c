// Counter-based normals for a block of consecutive four-element groups of one sample, on the
// CPU: Philox words, then Box-Muller, each in a loop that vectorises. Shared by the philox_normal
// and solver_step kernels, so both produce the same Gaussians (csrc/philox.h has the layout).
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"
#include "fast_math.h"
#include "philox.h"

namespace fastdiff {
// Internal linkage: each op file gets its own copy (the multiversioned functions stay per file).
namespace {

// Groups of four elements per inner block; each block runs three loops that vectorise:
// Philox words, Box-Muller, interleaved store.
constexpr int kBlock = 64;
struct Block {
  uint32_t w[4][kBlock];
};

// Words of groups g0 .. g0 + count - 1 (32-bit counter arithmetic, so the loop vectorises).
FASTDIFF_MULTIVERSION void philox_block(uint32_t g0, int count, uint32_t step, uint32_t stage, uint32_t stream,
                                        uint32_t k0, uint32_t k1, Block& words) {
  for (int j = 0; j < count; ++j) {
    const PhiloxWords r = philox4x32_10(g0 + static_cast<uint32_t>(j), step, stage, stream, k0, k1);
    words.w[0][j] = r.r0;
    words.w[1][j] = r.r1;
    words.w[2][j] = r.r2;
    words.w[3][j] = r.r3;
  }
}

// z = sqrt(-2 log u0) (cos, sin)(2 pi u1), sqrt(-2 log u2) (cos, sin)(2 pi u3) in float32.
FASTDIFF_MULTIVERSION void box_muller_block(const Block& words, int count, float z[4][kBlock]) {
  for (int j = 0; j < count; ++j) {
    const float rad_a = std::sqrt(-2.0f * log_positive(uniform_float(words.w[0][j])));
    const float rad_b = std::sqrt(-2.0f * log_positive(uniform_float(words.w[2][j])));
    float sin_a, cos_a, sin_b, cos_b;
    sincos_turns(uniform_float(words.w[1][j]), &sin_a, &cos_a);
    sincos_turns(uniform_float(words.w[3][j]), &sin_b, &cos_b);
    z[0][j] = rad_a * cos_a;
    z[1][j] = rad_a * sin_a;
    z[2][j] = rad_b * cos_b;
    z[3][j] = rad_b * sin_b;
  }
}

// The same in float64 with libm, as the reference computes float64 output.
inline void box_muller_block(const Block& words, int count, double z[4][kBlock]) {
  constexpr double kTwoPi = 6.283185307179586;
  for (int j = 0; j < count; ++j) {
    const double rad_a = std::sqrt(-2.0 * std::log(uniform_double(words.w[0][j])));
    const double rad_b = std::sqrt(-2.0 * std::log(uniform_double(words.w[2][j])));
    const double ang_a = kTwoPi * uniform_double(words.w[1][j]);
    const double ang_b = kTwoPi * uniform_double(words.w[3][j]);
    z[0][j] = rad_a * std::cos(ang_a);
    z[1][j] = rad_a * std::sin(ang_a);
    z[2][j] = rad_b * std::cos(ang_b);
    z[3][j] = rad_b * std::sin(ang_b);
  }
}

// Elements [4 g0, 4 g0 + count 4) of the four-element groups: z[q][j] is element 4 (g0 + j) + q.
template <typename math_t>
void normal_block(uint32_t g0, int count, uint32_t step, uint32_t stage, uint32_t stream, uint64_t seed,
                  math_t z[4][kBlock]) {
  Block words;
  philox_block(g0, count, step, stage, stream, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), words);
  box_muller_block(words, count, z);
}

}  // namespace
}  // namespace fastdiff
