// Branch-free float32 log and sincos for the CPU Box-Muller loop: plain arithmetic and bit
// operations only, so that the compiler vectorises the loop that calls them (libm calls would
// keep it scalar). Accuracy over all 2^23 uniform levels u = (m + 1/2) 2^-23 of csrc/philox.h:
// log within 1.4 ulp, sin/cos(2 pi u) within 1e-7 absolute.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdiff {

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// log(u) for a positive normal float u. u = 2^e m with m in [sqrt(1/2), sqrt(2)) read off the
// bits (as musl's logf does), then log m = x - x^2/2 + x^3 P(x), x = m - 1, with Cephes' logf
// polynomial, and e log 2 added in two parts.
inline float log_positive(float u) {
  const uint32_t ix = float_to_bits(u) - 0x3f3504f3u;
  const int32_t e = static_cast<int32_t>(ix) >> 23;
  const float x = bits_to_float((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  const float y = p * x * z - 2.12194440e-4f * fe - 0.5f * z;
  return x + y + 0.693359375f * fe;
}

// (sin, cos)(2 pi u) for u in [0, 1): 4u = q + f with integer q and |f| <= 1/2 is exact in
// float32, so the reduction adds no error; Cephes' sinf/cosf kernels on (pi/2) f in [-pi/4, pi/4],
// then the quarter turn q swaps and negates them.
inline void sincos_turns(float u, float* sin_out, float* cos_out) {
  const float t = 4.0f * u;
  const int32_t q = static_cast<int32_t>(t + 0.5f);
  const float x = (t - static_cast<float>(q)) * 1.57079632679489662f;
  const float z = x * x;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  // odd quarter: sin <-> cos; quarters 2, 3 negate sin; quarters 1, 2 negate cos
  const uint32_t odd = 0u - static_cast<uint32_t>(q & 1);
  const uint32_t s_bits = float_to_bits(s);
  const uint32_t c_bits = float_to_bits(c);
  const uint32_t sin_bits = (s_bits & ~odd) | (c_bits & odd);
  const uint32_t cos_bits = (c_bits & ~odd) | (s_bits & odd);
  *sin_out = bits_to_float(sin_bits ^ (static_cast<uint32_t>(q & 2) << 30));
  *cos_out = bits_to_float(cos_bits ^ (static_cast<uint32_t>((q + 1) & 2) << 30));
}

}  // namespace fastdiff
