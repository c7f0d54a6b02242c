// Box-Muller on one Philox4x32-10 block, shared by the CUDA kernels that draw counter-based
// Gaussians (philox.cu, solver_step.cu, trace_step.cu, ito_step.cu); csrc/philox.h has the counter layout and the uniforms.
#pragma once

#include <cuda_runtime.h>

#include "../philox.h"

namespace fastdiff {

// The two halves of Box-Muller for a uniform u of csrc/philox.h: sqrt(-2 log u) and (sin, cos)(2 pi u), in float32
// or float64 by the overload.
__device__ __forceinline__ float uniform_of(uint32_t r, float) { return uniform_float(r); }
__device__ __forceinline__ double uniform_of(uint32_t r, double) { return uniform_double(r); }
__device__ __forceinline__ float radius(float u) { return sqrtf(-2.0f * logf(u)); }
__device__ __forceinline__ double radius(double u) { return sqrt(-2.0 * log(u)); }
__device__ __forceinline__ void sincos_turn(float u, float* s, float* c) { sincospif(2.0f * u, s, c); }
__device__ __forceinline__ void sincos_turn(double u, double* s, double* c) { sincospi(2.0 * u, s, c); }

// z0..z3 = sqrt(-2 log u0) (cos, sin)(2 pi u1), sqrt(-2 log u2) (cos, sin)(2 pi u3); T is float or double.
template <typename T>
__device__ __forceinline__ void box_muller(const PhiloxWords& w, T z[4]) {
  const T rad_a = radius(uniform_of(w.r0, T()));
  const T rad_b = radius(uniform_of(w.r2, T()));
  T sin_a, cos_a, sin_b, cos_b;
  sincos_turn(uniform_of(w.r1, T()), &sin_a, &cos_a);
  sincos_turn(uniform_of(w.r3, T()), &sin_b, &cos_b);
  z[0] = rad_a * cos_a;
  z[1] = rad_a * sin_a;
  z[2] = rad_b * cos_b;
  z[3] = rad_b * sin_b;
}

}  // namespace fastdiff
