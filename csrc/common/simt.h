// The CUDA spellings our kernel files use, for two compilers.
//
// nvcc: cuda_runtime.h, plus FASTCONV_LAUNCH (a <<<>>> launch) and FASTCONV_DYNAMIC_SHARED.
//
// g++ with FASTCONV_SIMT_EMU defined: a SIMT emulator, so that the very same .cu source runs on
// a machine without a GPU and can be checked against the CPU kernels and under sanitizers.
//   * Blocks run one after another; __shared__ becomes `static`, which is then exactly "one
//     copy per block, shared by its threads".
//   * Fiber backend (default): a block's threads are ucontext fibers on the calling thread. A
//     fiber runs until it reaches a barrier (__syncthreads, __syncwarp, a shuffle) or returns;
//     the scheduler releases a barrier once every thread that has not returned waits at it, as
//     the hardware does. A block where some threads wait at a barrier no other thread can
//     reach is reported as a launch failure (a divergent __syncthreads), not a hang.
//   * Threads backend (FASTCONV_SIMT_THREADS): one std::thread per CUDA thread, barriers on a
//     mutex and condition variable, atomics as real atomics, so ThreadSanitizer sees every
//     shared-memory access a missing barrier leaves unordered.
//   * Launch configuration is validated as the driver does (block size, grid limits, shared
//     memory); a bad one, a deadlock or an exception in a kernel sets the sticky error that
//     cudaGetLastError() returns.
// Both backends give every CUDA thread its own threadIdx through thread_local state.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(FASTCONV_SIMT_EMU)

#include <cuda_runtime_api.h>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define FASTCONV_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__)
#define FASTCONV_DYNAMIC_SHARED(T, name)                            \
  extern __shared__ __align__(16) unsigned char fastconv_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(fastconv_dynamic_smem_)
#endif

#else  // FASTCONV_SIMT_EMU

#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

namespace fastconv {
namespace simt {

// Device limits of the GPUs the wheel targets (sm_80 .. sm_90) that a kernel can get wrong.
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // beyond this a launch needs an opt-in attribute
constexpr unsigned kWarpSize = 32;

inline thread_local uint3 tl_thread_idx{0, 0, 0};
inline thread_local uint3 tl_block_idx{0, 0, 0};
inline thread_local dim3 tl_block_dim{1, 1, 1};
inline thread_local dim3 tl_grid_dim{1, 1, 1};
inline thread_local unsigned char* tl_dynamic_shared = nullptr;
inline thread_local cudaError_t tl_last_error = cudaSuccess;
inline thread_local std::string tl_last_message;

inline void set_error(cudaError_t e, const std::string& why) {
  if (tl_last_error == cudaSuccess) {
    tl_last_error = e;
    tl_last_message = why;
  }
}

inline unsigned linear_tid() {
  return tl_thread_idx.x + tl_block_dim.x * (tl_thread_idx.y + tl_block_dim.y * tl_thread_idx.z);
}

// A value crossing lanes in a shuffle, wide enough for double and int64.
using LaneWord = uint64_t;

// ----------------------------------------------------------------------------- fibers
#if !defined(FASTCONV_SIMT_THREADS)

class FiberBlock {
 public:
  enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

  // Runs one block: every thread executes `body`. Returns false (with a message) on deadlock
  // or an exception in a thread.
  bool run(const std::function<void()>& body, std::string* why) {
    const unsigned n = tl_block_dim.x * tl_block_dim.y * tl_block_dim.z;
    body_ = &body;
    failed_ = nullptr;
    if (fibers_.size() != n) {
      fibers_.assign(n, Fiber{});
      stacks_.reset(new unsigned char[size_t(n) * kStackBytes]);
    }
    const unsigned warps = (n + kWarpSize - 1) / kWarpSize;
    lanes_.assign(size_t(warps) * kWarpSize, 0);
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = fibers_[t];
      f.state = kRunnable;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = stacks_.get() + size_t(t) * kStackBytes;
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, &FiberBlock::entry, 0);
    }
    FiberBlock* const saved = current_block();
    current_block() = this;
    bool ok = true;
    for (;;) {
      for (unsigned t = 0; t < n; ++t) {
        if (fibers_[t].state != kRunnable) continue;
        current_ = t;
        set_thread_index(t);
        swapcontext(&scheduler_, &fibers_[t].ctx);
        if (failed_) break;
      }
      if (failed_) {
        *why = "a thread threw: " + describe(failed_);
        ok = false;
        break;
      }
      if (!release(n, why)) {
        ok = !why->empty() ? false : true;
        break;
      }
    }
    current_block() = saved;
    return ok;
  }

  // Called from a fiber: wait at a block (warp == false) or warp barrier.
  void wait(bool warp) {
    fibers_[current_].state = warp ? kAtWarpBarrier : kAtBlockBarrier;
    swapcontext(&fibers_[current_].ctx, &scheduler_);
    set_thread_index(current_);
  }

  LaneWord* lane_words(unsigned tid) { return &lanes_[size_t(tid / kWarpSize) * kWarpSize]; }

  static FiberBlock*& current_block() {
    static thread_local FiberBlock* block = nullptr;
    return block;
  }

 private:
  struct Fiber {
    ucontext_t ctx;
    State state = kDone;
  };
  static constexpr size_t kStackBytes = 256 * 1024;

  static void entry() {
    FiberBlock* self = current_block();
    try {
      (*self->body_)();
    } catch (...) {
      self->failed_ = std::current_exception();
    }
    self->fibers_[self->current_].state = kDone;
    setcontext(&self->scheduler_);
  }

  static std::string describe(std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      return ex.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  void set_thread_index(unsigned t) {
    const unsigned bx = tl_block_dim.x, by = tl_block_dim.y;
    tl_thread_idx = {t % bx, (t / bx) % by, t / (bx * by)};
  }

  // Releases every barrier that all live threads of its scope have reached. Returns false
  // when the block is finished (why empty) or deadlocked (why set).
  bool release(unsigned n, std::string* why) {
    bool released = false;
    unsigned done = 0, at_block = 0;
    for (unsigned t = 0; t < n; ++t) {
      done += fibers_[t].state == kDone;
      at_block += fibers_[t].state == kAtBlockBarrier;
    }
    if (done == n) {
      why->clear();
      return false;
    }
    for (unsigned w = 0; w * kWarpSize < n; ++w) {
      const unsigned lo = w * kWarpSize, hi = std::min(n, lo + kWarpSize);
      unsigned waiting = 0, live = 0;
      for (unsigned t = lo; t < hi; ++t) {
        live += fibers_[t].state != kDone;
        waiting += fibers_[t].state == kAtWarpBarrier;
      }
      if (waiting > 0 && waiting == live) {
        for (unsigned t = lo; t < hi; ++t)
          if (fibers_[t].state == kAtWarpBarrier) fibers_[t].state = kRunnable;
        released = true;
      }
    }
    if (!released && at_block > 0 && at_block + done == n) {
      for (unsigned t = 0; t < n; ++t)
        if (fibers_[t].state == kAtBlockBarrier) fibers_[t].state = kRunnable;
      released = true;
    }
    if (!released) {
      *why = "deadlock: " + std::to_string(at_block) + " of " + std::to_string(n - done) +
             " live threads wait at __syncthreads and the others at a warp barrier none of their "
             "lanes can reach (a barrier in divergent code)";
      return false;
    }
    return true;
  }

  std::vector<Fiber> fibers_;
  std::unique_ptr<unsigned char[]> stacks_;
  std::vector<LaneWord> lanes_;
  ucontext_t scheduler_;
  const std::function<void()>* body_ = nullptr;
  std::exception_ptr failed_;
  unsigned current_ = 0;
};

inline void block_barrier() { FiberBlock::current_block()->wait(false); }
inline void warp_barrier() { FiberBlock::current_block()->wait(true); }
inline LaneWord* warp_lane_words() { return FiberBlock::current_block()->lane_words(linear_tid()); }

inline bool run_grid(dim3 grid, const std::function<void()>& body, std::string* why) {
  static thread_local FiberBlock block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        tl_block_idx = {x, y, z};
        if (!block.run(body, why)) {
          *why = "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "): " + *why;
          return false;
        }
      }
  return true;
}

// ----------------------------------------------------------------------------- threads
#else

// A reusable barrier whose party count shrinks as threads return (CUDA does not wait for
// exited threads at __syncthreads).
class Barrier {
 public:
  explicit Barrier(unsigned parties) : parties_(parties) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const unsigned long gen = generation_;
    if (++arrived_ == parties_) {
      open();
      return;
    }
    // A barrier some thread can never reach would hang the test run; fail it loudly instead.
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != gen; })) {
      std::fprintf(stderr, "fastconv SIMT emulator: deadlock, %u of %u threads waited 60 s at a barrier\n",
                   arrived_, parties_);
      std::abort();
    }
  }
  void drop() {
    std::lock_guard<std::mutex> lock(mu_);
    --parties_;
    if (parties_ > 0 && arrived_ == parties_) open();
  }

 private:
  void open() {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned parties_;
  unsigned arrived_ = 0;
  unsigned long generation_ = 0;
};

struct ThreadBlock {
  std::unique_ptr<Barrier> block;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<LaneWord> lanes;
};
inline thread_local ThreadBlock* tl_thread_block = nullptr;

inline void block_barrier() { tl_thread_block->block->arrive_and_wait(); }
inline void warp_barrier() { tl_thread_block->warps[linear_tid() / kWarpSize]->arrive_and_wait(); }
inline LaneWord* warp_lane_words() {
  return &tl_thread_block->lanes[size_t(linear_tid() / kWarpSize) * kWarpSize];
}

// One team of blockDim threads runs the whole grid, block after block: a thread finishing a
// block leaves that block's barriers (exited threads do not count at __syncthreads), then
// waits at the team barrier, which orders each block's shared-memory traffic before the
// next block's.
inline bool run_grid(dim3 grid, const std::function<void()>& body, std::string* why) {
  const dim3 block_dim = tl_block_dim, grid_dim = tl_grid_dim;
  const unsigned n = block_dim.x * block_dim.y * block_dim.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<ThreadBlock> per_block(blocks);
  for (auto& tb : per_block) {
    tb.block.reset(new Barrier(n));
    for (unsigned lo = 0; lo < n; lo += kWarpSize) tb.warps.emplace_back(new Barrier(std::min(kWarpSize, n - lo)));
    tb.lanes.assign(tb.warps.size() * kWarpSize, 0);
  }
  Barrier team(n);
  unsigned char* const dyn = tl_dynamic_shared;
  std::mutex error_mu;
  std::string error;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (unsigned t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      tl_block_dim = block_dim;
      tl_grid_dim = grid_dim;
      tl_dynamic_shared = dyn;
      tl_thread_idx = {t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
      uint64_t b = 0;
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x, ++b) {
            ThreadBlock& tb = per_block[b];
            tl_thread_block = &tb;
            tl_block_idx = {x, y, z};
            try {
              body();
            } catch (const std::exception& e) {
              std::lock_guard<std::mutex> lock(error_mu);
              error = "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) +
                      "): a thread threw: " + e.what();
            }
            tb.warps[t / kWarpSize]->drop();
            tb.block->drop();
            team.arrive_and_wait();
          }
    });
  }
  for (auto& th : threads) th.join();
  *why = error;
  return error.empty();
}

#endif  // backends

// Runs kernel `body` over the grid, after checking the configuration as the driver would.
inline cudaError_t launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ ||
      grid.x > 0x7fffffffu) {
    set_error(cudaErrorInvalidConfiguration, "grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
                                                 ", " + std::to_string(grid.z) + ") outside the device limits");
    return cudaErrorInvalidConfiguration;
  }
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.z > kMaxBlockZ) {
    set_error(cudaErrorInvalidConfiguration, "block of " + std::to_string(threads) + " threads outside the limits");
    return cudaErrorInvalidConfiguration;
  }
  if (shared_bytes > kMaxDynamicShared) {
    set_error(cudaErrorInvalidValue, "dynamic shared memory of " + std::to_string(shared_bytes) + " bytes");
    return cudaErrorInvalidValue;
  }
  std::unique_ptr<unsigned char[]> dyn(new unsigned char[shared_bytes + 16]());
  const uint3 saved_block = tl_block_idx;
  const dim3 saved_bdim = tl_block_dim, saved_gdim = tl_grid_dim;
  unsigned char* const saved_dyn = tl_dynamic_shared;
  tl_block_dim = block;
  tl_grid_dim = grid;
  tl_dynamic_shared = dyn.get();
  cudaError_t result = cudaSuccess;
  std::string why;
  if (!run_grid(grid, body, &why)) {
    set_error(cudaErrorLaunchFailure, why);
    result = cudaErrorLaunchFailure;
  }
  tl_block_idx = saved_block;
  tl_block_dim = saved_bdim;
  tl_grid_dim = saved_gdim;
  tl_dynamic_shared = saved_dyn;
  return result;
}

// Lane exchange behind the shuffles: publish, wait for the warp, read, wait again so that no
// lane overwrites its word before every lane has read.
template <class T>
inline T shuffle_from(T v, int src_lane, bool valid) {
  static_assert(sizeof(T) <= sizeof(LaneWord), "shuffle of a value wider than 8 bytes");
  LaneWord* words = warp_lane_words();
  const unsigned lane = linear_tid() % kWarpSize;
  LaneWord w = 0;
  std::memcpy(&w, &v, sizeof(T));
  words[lane] = w;
  warp_barrier();
  T out = v;
  if (valid) std::memcpy(&out, &words[src_lane], sizeof(T));
  warp_barrier();
  return out;
}

}  // namespace simt
}  // namespace fastconv

#define threadIdx (::fastconv::simt::tl_thread_idx)
#define blockIdx (::fastconv::simt::tl_block_idx)
#define blockDim (::fastconv::simt::tl_block_dim)
#define gridDim (::fastconv::simt::tl_grid_dim)
#define warpSize 32

inline void __syncthreads() { ::fastconv::simt::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::fastconv::simt::warp_barrier(); }

template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = int(::fastconv::simt::linear_tid() % 32u);
  const int src = lane + int(delta);
  return ::fastconv::simt::shuffle_from(v, src, src / width == lane / width);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = int(::fastconv::simt::linear_tid() % 32u);
  const int src = lane - int(delta);
  return ::fastconv::simt::shuffle_from(v, src, src >= (lane / width) * width);
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = int(::fastconv::simt::linear_tid() % 32u);
  const int src = lane ^ mask;
  return ::fastconv::simt::shuffle_from(v, src, src / width == lane / width);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  const int lane = int(::fastconv::simt::linear_tid() % 32u);
  return ::fastconv::simt::shuffle_from(v, (lane / width) * width + src_lane % width, true);
}

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// Real atomics (a compare-and-swap loop for floating point), so the threads backend is race-free
// exactly where the GPU is.
template <class T>
inline T atomicAdd(T* address, T value) {
  if constexpr (std::is_floating_point<T>::value) {
    using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    Bits* bits = reinterpret_cast<Bits*>(address);
    Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
      T old_value;
      std::memcpy(&old_value, &expected, sizeof(T));
      const T new_value = old_value + value;
      Bits desired;
      std::memcpy(&desired, &new_value, sizeof(T));
      if (__atomic_compare_exchange_n(bits, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return old_value;
    }
  } else {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
  }
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::fastconv::simt::tl_last_error;
  ::fastconv::simt::tl_last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
// The detail behind the last error (the emulator knows why a launch failed; a GPU does not say).
inline const char* fastconv_simt_last_message() { return ::fastconv::simt::tl_last_message.c_str(); }

#define FASTCONV_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  ((void)(stream), ::fastconv::simt::launch((grid), (block), (shared_bytes), [&]() { kernel(__VA_ARGS__); }))
#define FASTCONV_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::fastconv::simt::tl_dynamic_shared)

#endif  // FASTCONV_SIMT_EMU
