// Reading and writing the four floating dtypes as float32/float64 arithmetic, with float16 and
// bfloat16 conversions written without branches, so that loops converting arrays vectorise on
// any x86-64 or ARM target (c10::Half's portable conversion does not). float16 -> float32 is
// exact; float32 -> float16/bfloat16 rounds to nearest even, overflows to inf and keeps NaN a
// quiet NaN: bit for bit what c10::Half and c10::BFloat16 do (checked over all 2^32 floats).
#pragma once

#include <cstdint>

#include "fast_math.h"

namespace fastdiff {

// All ones when `cond` holds, else zero: a select that stays in vector registers.
inline uint32_t mask_if(bool cond) { return 0u - static_cast<uint32_t>(cond); }

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  // normal: rebias the exponent by 127 - 15; inf/NaN: rebias once more to reach exponent 255
  const uint32_t normal = (em << 13) + (112u << 23) + ((112u << 23) & mask_if(em >= 0x7c00u));
  // zero and subnormal: em 2^-24, exact in float32
  const uint32_t subnormal = float_to_bits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  const uint32_t is_sub = mask_if(em < 0x0400u);
  return bits_to_float(sign | (subnormal & is_sub) | (normal & ~is_sub));
}

// Round to nearest even. Adding 2^(e+...) shifted copies of the magnitude (the FP16 library's
// trick, Dukhan) lets float32 addition do the rounding for normal and subnormal results alike.
inline uint16_t float_to_half_bits(float f) {
  const uint32_t w = float_to_bits(f);
  const uint32_t sign = w & 0x80000000u;
  const uint32_t twice = w + w;  // magnitude shifted left, sign dropped
  // |f| 2^112 2^-110 = 4 |f|, computed in two steps so that huge values overflow to inf
  const float base = (bits_to_float(w & 0x7fffffffu) * 0x1p112f) * 0x1p-110f;
  uint32_t bias = twice & 0xff000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  const uint32_t rounded = float_to_bits(bits_to_float((bias >> 1) + 0x07800000u) + base);
  const uint32_t magnitude = ((rounded >> 13) & 0x7c00u) + (rounded & 0x0fffu);
  const uint32_t is_nan = mask_if(twice > 0xff000000u);
  return static_cast<uint16_t>((sign >> 16) | (0x7e00u & is_nan) | (magnitude & ~is_nan));
}

inline float bfloat16_bits_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// Round to nearest even on the upper 16 bits; NaN stays a quiet NaN.
inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t w = float_to_bits(f);
  const uint32_t rounded = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
  const uint32_t is_nan = mask_if((w & 0x7fffffffu) > 0x7f800000u);
  return static_cast<uint16_t>((0x7fc0u & is_nan) | (rounded & ~is_nan));
}

// Element types: how a buffer of `storage_t` is read into and written from `math_t` arithmetic.
struct Float32IO {
  using storage_t = float;
  using math_t = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};

struct Float64IO {
  using storage_t = double;
  using math_t = double;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
};

struct Float16IO {
  using storage_t = uint16_t;
  using math_t = float;
  static float load(uint16_t v) { return half_bits_to_float(v); }
  static uint16_t store(float v) { return float_to_half_bits(v); }
};

struct BFloat16IO {
  using storage_t = uint16_t;
  using math_t = float;
  static float load(uint16_t v) { return bfloat16_bits_to_float(v); }
  static uint16_t store(float v) { return float_to_bfloat16_bits(v); }
};

}  // namespace fastdiff
