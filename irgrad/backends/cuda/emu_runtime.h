// irgrad CUDA emulation runtime: compiles generated CUDA C as C++ for the CPU.
//
// - threadIdx/blockIdx/blockDim/gridDim are globals set by the scheduler;
// - blocks run one after another; the threads of a block run as fibers (ucontext) when the
//   kernel synchronizes, else one after another as plain calls;
// - __syncthreads() parks the fiber until every live thread of the block arrived;
// - warp shuffles: a lane writes its value to a per-thread slot, waits for every live lane
//   of its warp (a warp barrier), reads its source lane's slot, and waits again;
// - __shared__ variables are function-level statics (blocks never run concurrently);
// - atomicAdd is a plain read-modify-write (fibers never preempt each other);
// - a barrier that can never complete (threads of a block waiting at different barriers)
//   is reported as a deadlock instead of hanging.
// Not modelled: timing, memory-model races between blocks, warp divergence costs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <csetjmp>
#include <setjmp.h>
#include <ucontext.h>
#include <vector>

using std::max;
using std::min;
using std::signbit;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(16) longlong2 { long long x, y; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
static inline int4 make_int4(int a, int b, int c, int d) { return {a, b, c, d}; }
static inline uchar4 make_uchar4(unsigned char a, unsigned char b, unsigned char c, unsigned char d) {
  return {a, b, c, d};
}
static inline float2 make_float2(float a, float b) { return {a, b}; }
static inline double2 make_double2(double a, double b) { return {a, b}; }
static inline longlong2 make_longlong2(long long a, long long b) { return {a, b}; }

static inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
static inline float __int_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }

static inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
static inline int atomicAdd(int* p, int v) {
  int o = *p; *p = (int)((unsigned)o + (unsigned)v); return o;
}
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  unsigned long long o = *p; *p = o + v; return o;
}

namespace emu {
enum State { RUNNABLE = 0, AT_BARRIER = 1, AT_WARP = 2, DONE = 3 };
// A fiber starts on its own stack through makecontext/setcontext; after that, switches
// are _setjmp/_longjmp (no signal-mask system calls: ~100x cheaper than swapcontext).
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  char* stack = nullptr;
  State state = RUNNABLE;
  bool started = false;
};
static const size_t STACK_BYTES = 256 * 1024;
static jmp_buf sched_jb;
static std::vector<Fiber> fibers;
static int current = -1;
static bool in_fiber = false;
static const std::function<void()>* body = nullptr;
static uint64_t xchg[1024];
static char error[512];

static void set_thread(int i) {
  threadIdx.x = i % blockDim.x;
  threadIdx.y = (i / blockDim.x) % blockDim.y;
  threadIdx.z = i / (blockDim.x * blockDim.y);
}
static inline int linear_tid() {
  return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
static void fiber_entry() {
  (*body)();
  fibers[current].state = DONE;
  _longjmp(sched_jb, 1);
}
static void park(State s) {
  if (!in_fiber) {
    std::snprintf(error, sizeof error, "a barrier or warp shuffle in a kernel launched without sync");
    std::fprintf(stderr, "emu: %s\n", error);
    std::abort();
  }
  fibers[current].state = s;
  if (_setjmp(fibers[current].jb) == 0) _longjmp(sched_jb, 1);
}

// Runs one block of n threads as fibers; returns false on a deadlock.
static bool run_block_fibers(int n) {
  if ((int)fibers.size() < n) fibers.resize(n);
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers[i];
    if (!f.stack) f.stack = (char*)std::malloc(STACK_BYTES);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = RUNNABLE;
    f.started = false;
  }
  in_fiber = true;
  for (;;) {
    bool ran = false;
    for (int i = 0; i < n; ++i) {
      if (fibers[i].state != RUNNABLE) continue;
      current = i;
      set_thread(i);
      if (_setjmp(sched_jb) == 0) {
        if (!fibers[i].started) {
          fibers[i].started = true;
          setcontext(&fibers[i].ctx);
        }
        _longjmp(fibers[i].jb, 1);
      }
      ran = true;
    }
    int live = 0, barrier = 0;
    for (int i = 0; i < n; ++i) {
      live += fibers[i].state != DONE;
      barrier += fibers[i].state == AT_BARRIER;
    }
    if (live == 0) break;
    bool released = false;
    if (barrier == live) {
      for (int i = 0; i < n; ++i)
        if (fibers[i].state == AT_BARRIER) fibers[i].state = RUNNABLE;
      released = true;
    }
    for (int w = 0; w < n && !released; w += 32) {
      int wl = 0, ww = 0;
      for (int i = w; i < std::min(n, w + 32); ++i) {
        wl += fibers[i].state != DONE;
        ww += fibers[i].state == AT_WARP;
      }
      if (wl > 0 && ww == wl) {
        for (int i = w; i < std::min(n, w + 32); ++i) fibers[i].state = RUNNABLE;
        released = true;
      }
    }
    if (!released && !ran) {
      std::snprintf(error, sizeof error,
                    "deadlock in block (%u,%u,%u): %d live threads, %d at __syncthreads",
                    blockIdx.x, blockIdx.y, blockIdx.z, live, barrier);
      in_fiber = false;
      return false;
    }
  }
  in_fiber = false;
  return true;
}

// Runs a whole grid; `sync` says whether the kernel needs fibers.
static int run(dim3 grid, dim3 block, bool sync, const std::function<void()>& fn) {
  gridDim = grid;
  blockDim = block;
  body = &fn;
  error[0] = 0;
  const int n = (int)(block.x * block.y * block.z);
  if (n > 1024) {
    std::snprintf(error, sizeof error, "block of %d threads (more than 1024)", n);
    return 1;
  }
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
        if (sync) {
          if (!run_block_fibers(n)) return 2;
        } else {
          for (int i = 0; i < n; ++i) { set_thread(i); fn(); }
        }
      }
  return 0;
}
}  // namespace emu

static inline void __syncthreads() { emu::park(emu::AT_BARRIER); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; emu::park(emu::AT_WARP); }

template <class T> static inline T emu_shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  const int tid = emu::linear_tid();
  uint64_t slot = 0;
  std::memcpy(&slot, &v, sizeof(T));
  emu::xchg[tid] = slot;
  emu::park(emu::AT_WARP);
  T r = v;
  if (src_lane >= 0 && src_lane < 32) std::memcpy(&r, &emu::xchg[(tid & ~31) + src_lane], sizeof(T));
  emu::park(emu::AT_WARP);
  return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int mask) {
  return emu_shuffle(v, (emu::linear_tid() & 31) ^ mask);
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, int delta) {
  const int lane = emu::linear_tid() & 31;
  return emu_shuffle(v, lane + delta < 32 ? lane + delta : lane);
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, int delta) {
  const int lane = emu::linear_tid() & 31;
  return emu_shuffle(v, lane - delta >= 0 ? lane - delta : lane);
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src) { return emu_shuffle(v, src & 31); }

// --- WMMA (TF32 m16n16k8), emulated: every lane holds the whole tile -----------------------
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  float x[num_elements];
};
static inline float __float_to_tf32(float f) {
  // round to nearest (ties away from zero) keeping 10 mantissa bits, as cvt.rna.tf32.f32
  uint32_t u; std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) { u += 0x1000u; u &= 0xffffe000u; }
  std::memcpy(&f, &u, 4);
  return f;
}
template <class Use, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, L>;
  const bool colmajor = std::is_same<L, col_major>::value;
  for (int i = 0; i < F::rows; ++i)
    for (int j = 0; j < F::cols; ++j) f.x[i * F::cols + j] = colmajor ? p[j * ldm + i] : p[i * ldm + j];
}
template <class Use, int M, int N, int K, class T, class L>
static inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}
template <int M, int N, int K, class TA, class LA, class TB, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                            const fragment<matrix_a, M, N, K, TA, LA>& a,
                            const fragment<matrix_b, M, N, K, TB, LB>& b,
                            const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = s;
    }
  std::memcpy(d.x, out, sizeof out);
}
template <int M, int N, int K>
static inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f,
                                     unsigned ldm, layout_t l) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      if (l == mem_row_major) p[i * ldm + j] = f.x[i * N + j];
      else p[j * ldm + i] = f.x[i * N + j];
    }
}
}  // namespace wmma
}  // namespace nvcuda
