// Groups of four consecutive elements read and written in one 8- or 16-byte access (two for float64) where the
// buffer is aligned and the group whole, element by element otherwise; used by the CUDA kernels of ito_step and
// trace_step, whose threads each take groups of four elements (one Philox block per group).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "element_io.cuh"

namespace fastdiff {

// Four consecutive elements, aligned for one vector access.
template <typename T>
struct alignas(4 * sizeof(T) < 16 ? 4 * sizeof(T) : 16) ElementGroup {
  T v[4];
};

template <typename T>
bool group_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(ElementGroup<T>) == 0;
}

// v[j] = p[j] for the group's len elements, zero past len; one vector load when `vec` (every buffer of the launch
// aligned and each sample's size a multiple of four) and the group is whole.
template <typename T, typename acc_t>
__device__ __forceinline__ void load_four(const T* p, int len, bool vec, acc_t (&v)[4]) {
  if (vec && len == 4) {
    const ElementGroup<T> q = *reinterpret_cast<const ElementGroup<T>*>(p);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = load(q.v + j);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = j < len ? static_cast<acc_t>(load(p + j)) : acc_t(0);
  }
}

template <typename T, typename acc_t>
__device__ __forceinline__ void store_four(T* p, int len, bool vec, const acc_t (&v)[4]) {
  if (vec && len == 4) {
    ElementGroup<T> q;
#pragma unroll
    for (int j = 0; j < 4; ++j) store(q.v + j, v[j]);
    *reinterpret_cast<ElementGroup<T>*>(p) = q;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < len) store(p + j, v[j]);
    }
  }
}

}  // namespace fastdiff
