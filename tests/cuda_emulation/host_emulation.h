// Host emulation of the CUDA subset that csrc/cuda/*.cu uses, so their device code compiles unchanged as plain C++
// (g++) and runs on CPU buffers: tests/test_cuda_emulation.py builds it and compares with the references.
//
// Execution model: the blocks of a grid run one after another; the threads of a block run as cooperative
// coroutines (ucontext) on one OS thread, switched at every barrier, so __syncthreads() and the warp collectives
// (__syncwarp, __shfl_*_sync, through a per-warp exchange buffer) keep CUDA's semantics, and a barrier not reached
// by every thread is reported (the launch aborts) rather than hanging. Resuming the threads last to first
// (reverse_order) exposes shared-memory reads that no barrier orders after the write. __shared__ variables become
// function statics: one copy per kernel instance, shared by the block's threads. A launch
// kernel<<<grid, block, smem, stream>>>(args...) is spelt fastdiff_emulation::launch(kernel, grid, block, smem,
// stream)(args...) (the test rewrites the chevrons, the only CUDA syntax C++ cannot parse); it checks the launch
// configuration as the driver does and sets the error cudaGetLastError() returns. float16/bfloat16 conversions
// are those of csrc/float_io.h (round to nearest even, the CUDA _rn intrinsics).
#pragma once

#ifdef __CUDACC__
#error "host_emulation.h is the host stand-in for the CUDA headers; nvcc uses the real ones"
#endif

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "../../csrc/float_io.h"

// Qualifiers and attributes.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __grid_constant__

// Runtime types and errors (the enumerators keep the CUDA runtime's values).
enum cudaError_t : int { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
typedef struct CUstream_st* cudaStream_t;

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

// Vector types with CUDA's alignment.
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

// 16-bit floats: the bits, converted by csrc/float_io.h.
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return fastdiff::half_bits_to_float(h.bits); }
inline __half __float2half_rn(float f) { return {fastdiff::float_to_half_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return fastdiff::bfloat16_bits_to_float(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {fastdiff::float_to_bfloat16_bits(f)}; }

// Math and load intrinsics: sin/cos(pi x) through float64 (within an ulp of CUDA's float32 results).
inline void sincospif(float x, float* s, float* c) {
  const double a = M_PI * static_cast<double>(x);
  *s = static_cast<float>(std::sin(a));
  *c = static_cast<float>(std::cos(a));
}
inline void sincospi(double x, double* s, double* c) {
  const long double a = 3.141592653589793238462643383279502884L * static_cast<long double>(x);
  *s = static_cast<double>(std::sin(a));
  *c = static_cast<double>(std::cos(a));
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32); }

namespace fastdiff_emulation {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = size_t(256) << 10;

struct Barrier {
  int expected = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Thread {
  ucontext_t context;
  uint3 index;
  int linear = 0;
  bool done = false;
  std::unique_ptr<char[]> stack;  // kStackBytes, left uninitialised
};

// The block being run: its threads, the block barrier, one barrier and exchange buffer per warp.
struct Block {
  dim3 grid, dims;
  uint3 block_index;
  std::vector<Thread> threads;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<uint64_t> exchange;
  ucontext_t scheduler;
  int current = 0;
  uint64_t progress = 0;  // barrier arrivals and thread exits: a round of the scheduler without any is a deadlock
  const std::function<void()>* body = nullptr;
};

inline thread_local Block* active = nullptr;
// Resume a block's threads from the last to the first (else first to last): code that reads what another thread
// wrote without a barrier between gives different results in the two orders.
inline bool reverse_order = false;
inline thread_local cudaError_t last_error = cudaSuccess;

inline Block& block() { return *active; }
inline Thread& self() { return active->threads[active->current]; }

inline void yield() { swapcontext(&self().context, &block().scheduler); }

inline void wait(Barrier& b) {
  ++block().progress;
  const uint64_t generation = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

// An exited thread no longer takes part in its block's and its warp's barriers.
inline void leave(Barrier& b) {
  --b.expected;
  if (b.arrived > 0 && b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
  }
}

inline void thread_entry() {
  Block& blk = block();
  (*blk.body)();
  Thread& t = self();
  t.done = true;
  ++blk.progress;
  leave(blk.block_barrier);
  leave(blk.warp_barriers[t.linear / kWarpSize]);
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda emulation: %s\n", what);
  std::abort();
}

// Every thread of one block runs `body` to its end; threads switch only at barriers.
inline void run_block(Block& blk) {
  const int n = static_cast<int>(blk.dims.x * blk.dims.y * blk.dims.z);
  const int warps = (n + kWarpSize - 1) / kWarpSize;
  blk.block_barrier = Barrier{n, 0, 0};
  for (int w = 0; w < warps; ++w) blk.warp_barriers[w] = Barrier{std::min(kWarpSize, n - w * kWarpSize), 0, 0};
  for (int i = 0; i < n; ++i) {
    Thread& t = blk.threads[i];
    t.linear = i;
    t.index = {i % blk.dims.x, (i / blk.dims.x) % blk.dims.y, i / (blk.dims.x * blk.dims.y)};
    t.done = false;
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack.get();
    t.context.uc_stack.ss_size = kStackBytes;
    t.context.uc_link = &blk.scheduler;
    makecontext(&t.context, thread_entry, 0);
  }
  for (int left = n; left > 0;) {
    const uint64_t before = blk.progress;
    for (int step = 0; step < n; ++step) {
      const int i = reverse_order ? n - 1 - step : step;
      if (blk.threads[i].done) continue;
      blk.current = i;
      swapcontext(&blk.scheduler, &blk.threads[i].context);
      if (blk.threads[i].done) --left;
    }
    if (left > 0 && blk.progress == before) fail("deadlock: a barrier is not reached by every thread of the block");
  }
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Runs `body` for every thread of every block of the grid (blocks in order x, then y, then z).
inline void run_grid(dim3 grid, dim3 dims, const std::function<void()>& body) {
  const std::lock_guard<std::mutex> lock(launch_mutex());
  static thread_local Block blk;
  const size_t n = size_t(dims.x) * dims.y * dims.z;
  if (blk.threads.size() < n) {
    blk.threads.resize(n);
    for (Thread& t : blk.threads) {
      if (!t.stack) t.stack.reset(new char[kStackBytes]);
    }
  }
  blk.warp_barriers.resize((n + kWarpSize - 1) / kWarpSize);
  blk.exchange.resize(blk.warp_barriers.size() * kWarpSize);
  blk.grid = grid;
  blk.dims = dims;
  blk.body = &body;
  active = &blk;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blk.block_index = {x, y, z};
        run_block(blk);
      }
    }
  }
  active = nullptr;
}

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, dims;
  size_t shared_bytes;

  void operator()(P... args) const {
    const uint64_t threads = uint64_t(dims.x) * dims.y * dims.z;
    const bool valid = threads >= 1 && threads <= 1024 && dims.z <= 64 && grid.x >= 1 && grid.x <= 0x7fffffffu &&
                       grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535 && shared_bytes <= 48 * 1024;
    if (!valid) {
      last_error = cudaErrorInvalidConfiguration;
      return;
    }
    const auto kernel_fn = kernel;
    run_grid(grid, dims, [&] { kernel_fn(args...); });
  }
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 dims, size_t shared_bytes = 0, cudaStream_t = nullptr) {
  return Launch<P...>{kernel, grid, dims, shared_bytes};
}

inline int lane() { return self().linear % kWarpSize; }

// value of lane `src` of the calling warp: every lane writes, the warp meets, reads, and meets again (so that the
// buffer is not overwritten before every lane has read it).
template <typename T>
T exchange(unsigned mask, T value, int src) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp shuffles move at most 8 bytes");
  Block& blk = block();
  const int warp = self().linear / kWarpSize;
  if (mask != 0xffffffffu || blk.warp_barriers[warp].expected != kWarpSize) fail("warp shuffles need all 32 lanes");
  uint64_t* slots = &blk.exchange[warp * kWarpSize];
  std::memcpy(&slots[lane()], &value, sizeof(T));
  wait(blk.warp_barriers[warp]);
  T out;
  std::memcpy(&out, &slots[src], sizeof(T));
  wait(blk.warp_barriers[warp]);
  return out;
}

}  // namespace fastdiff_emulation

#define threadIdx (::fastdiff_emulation::self().index)
#define blockIdx (::fastdiff_emulation::block().block_index)
#define blockDim (::fastdiff_emulation::block().dims)
#define gridDim (::fastdiff_emulation::block().grid)
#define warpSize ::fastdiff_emulation::kWarpSize

inline void __syncthreads() { fastdiff_emulation::wait(fastdiff_emulation::block().block_barrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) fastdiff_emulation::fail("__syncwarp needs the full mask");
  fastdiff_emulation::wait(fastdiff_emulation::block().warp_barriers[fastdiff_emulation::self().linear / 32]);
}

// Lanes outside the caller's segment of `width` lanes read the caller's own value, as on the device.
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  const int lane = fastdiff_emulation::lane();
  const int src = lane ^ lane_mask;
  return fastdiff_emulation::exchange(mask, value, src / width == lane / width ? src : lane);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  const int lane = fastdiff_emulation::lane();
  const int src = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return fastdiff_emulation::exchange(mask, value, src);
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  const int lane = fastdiff_emulation::lane();
  return fastdiff_emulation::exchange(mask, value, lane - lane % width + src_lane % width);
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = fastdiff_emulation::last_error;
  fastdiff_emulation::last_error = cudaSuccess;
  return e;
}
