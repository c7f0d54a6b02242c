// FASTDIFF_HOST_DEVICE: a function compiled for the host and, under nvcc, for the device too, so the CPU and
// CUDA kernels share one definition of their scalar math.
#pragma once

#if defined(__CUDACC__)
#define FASTDIFF_HOST_DEVICE __host__ __device__ __forceinline__
#define FASTDIFF_UNROLL _Pragma("unroll")
#else
#define FASTDIFF_HOST_DEVICE inline
#define FASTDIFF_UNROLL
#endif
