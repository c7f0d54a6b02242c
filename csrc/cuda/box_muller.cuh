// Box-Muller on one Philox4x32-10 block, shared by the CUDA kernels that draw counter-based
// Gaussians (philox.cu, solver_step.cu); csrc/philox.h has the counter layout and the uniforms.
#pragma once

#include <cuda_runtime.h>

#include "../philox.h"

namespace fastdiff {

// z0..z3 = sqrt(-2 log u0) (cos, sin)(2 pi u1), sqrt(-2 log u2) (cos, sin)(2 pi u3).
__device__ __forceinline__ void box_muller(const PhiloxWords& w, float z[4]) {
  const float rad_a = sqrtf(-2.0f * logf(uniform_float(w.r0)));
  const float rad_b = sqrtf(-2.0f * logf(uniform_float(w.r2)));
  float sin_a, cos_a, sin_b, cos_b;
  sincospif(2.0f * uniform_float(w.r1), &sin_a, &cos_a);
  sincospif(2.0f * uniform_float(w.r3), &sin_b, &cos_b);
  z[0] = rad_a * cos_a;
  z[1] = rad_a * sin_a;
  z[2] = rad_b * cos_b;
  z[3] = rad_b * sin_b;
}

__device__ __forceinline__ void box_muller(const PhiloxWords& w, double z[4]) {
  const double rad_a = sqrt(-2.0 * log(uniform_double(w.r0)));
  const double rad_b = sqrt(-2.0 * log(uniform_double(w.r2)));
  double sin_a, cos_a, sin_b, cos_b;
  sincospi(2.0 * uniform_double(w.r1), &sin_a, &cos_a);
  sincospi(2.0 * uniform_double(w.r3), &sin_b, &cos_b);
  z[0] = rad_a * cos_a;
  z[1] = rad_a * sin_a;
  z[2] = rad_b * cos_b;
  z[3] = rad_b * sin_b;
}

}  // namespace fastdiff
