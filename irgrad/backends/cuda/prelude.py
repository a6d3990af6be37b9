"""The fixed part of every generated CUDA translation unit: scalar helpers with the CPU
renderer's semantics, warp/block reductions, and the tiled GEMM templates.

Semantics (mirroring backends/cpu/llvm_renderer.py):
- `irg_max`/`irg_min` on floats are numpy's maximum/minimum: NaN propagates, otherwise
  `a > b ? a : b` (so of two zeros the second wins, as in numpy); on integers plain
  signed max/min;
- integer add/sub/mul/neg wrap (two's complement), like LLVM's plain `add`/`mul`;
- `irg_floordiv`/`irg_mod` are floor division / modulo for possibly negative indices;
- `irg_clamp_index` wraps a negative gather index once (numpy's negative indices) and
  clamps it into [0, n);
- booleans live in registers as `bool`, in memory as one byte (`unsigned char`).

The GEMM templates compute C = alpha * A @ B + beta * C for one matrix (the caller offsets
the pointers per batch); `beta == 0` never reads C (as BLAS). Each block computes a BM x BN
tile of C with (BM/TM) x (BN/TN) threads, each thread a TM x TN micro-tile held in
registers; A and B tiles go through shared memory (padded against bank conflicts), the
next tile is prefetched into registers while the current one is multiplied.
"""

from __future__ import annotations

PRELUDE = r"""
// ---- irgrad CUDA prelude ----------------------------------------------------------------
#define IRG_DEV __device__ __forceinline__

IRG_DEV float irg_max(float a, float b) { return (a != a) ? a : (a > b ? a : b); }
IRG_DEV float irg_min(float a, float b) { return (a != a) ? a : (a < b ? a : b); }
IRG_DEV double irg_max(double a, double b) { return (a != a) ? a : (a > b ? a : b); }
IRG_DEV double irg_min(double a, double b) { return (a != a) ? a : (a < b ? a : b); }
IRG_DEV int irg_max(int a, int b) { return a > b ? a : b; }
IRG_DEV int irg_min(int a, int b) { return a < b ? a : b; }
IRG_DEV long long irg_max(long long a, long long b) { return a > b ? a : b; }
IRG_DEV long long irg_min(long long a, long long b) { return a < b ? a : b; }

IRG_DEV float irg_add(float a, float b) { return a + b; }
IRG_DEV double irg_add(double a, double b) { return a + b; }
IRG_DEV int irg_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
IRG_DEV long long irg_add(long long a, long long b) {
  return (long long)((unsigned long long)a + (unsigned long long)b);
}
IRG_DEV int irg_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
IRG_DEV long long irg_sub(long long a, long long b) {
  return (long long)((unsigned long long)a - (unsigned long long)b);
}
IRG_DEV int irg_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
IRG_DEV long long irg_mul(long long a, long long b) {
  return (long long)((unsigned long long)a * (unsigned long long)b);
}
IRG_DEV int irg_neg(int a) { return (int)(0u - (unsigned)a); }
IRG_DEV long long irg_neg(long long a) { return (long long)(0ull - (unsigned long long)a); }
IRG_DEV int irg_abs(int a) { return a < 0 ? irg_neg(a) : a; }
IRG_DEV long long irg_abs(long long a) { return a < 0 ? irg_neg(a) : a; }

IRG_DEV int irg_floordiv(int x, int d) { int q = x / d; return (x % d < 0) ? q - 1 : q; }
IRG_DEV long long irg_floordiv(long long x, long long d) {
  long long q = x / d; return (x % d < 0) ? q - 1 : q;
}
IRG_DEV int irg_mod(int x, int d) { int r = x % d; return r < 0 ? r + d : r; }
IRG_DEV long long irg_mod(long long x, long long d) { long long r = x % d; return r < 0 ? r + d : r; }
IRG_DEV int irg_clip(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }
IRG_DEV long long irg_clip(long long x, long long lo, long long hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}
IRG_DEV long long irg_clamp_index(long long v, long long n) {
  if (v < 0) v += n;
  return v < 0 ? 0 : (v > n - 1 ? n - 1 : v);
}

struct IrgAdd { template <class T> IRG_DEV T operator()(T a, T b) const { return irg_add(a, b); } };
struct IrgMax { template <class T> IRG_DEV T operator()(T a, T b) const { return irg_max(a, b); } };
struct IrgMin { template <class T> IRG_DEV T operator()(T a, T b) const { return irg_min(a, b); } };

// every lane of the warp ends with the combination of all 32 values
template <class T, class Op> IRG_DEV T irg_warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// the block's threads (NT of them, a multiple of 32) combine v; thread 0 gets the result.
// `smem` holds NT/32 values; the trailing barrier lets the caller reuse it.
template <int NT, class T, class Op> IRG_DEV T irg_block_reduce(T v, T* smem, T init, Op op) {
  v = irg_warp_reduce(v, op);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) smem[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < NT / 32 ? smem[lane] : init;
    v = irg_warp_reduce(v, op);
  }
  __syncthreads();
  return v;
}

// ---- tiled GEMM: C = alpha * A @ B + beta * C (one matrix; views may be transposed) -----
template <class T, int V> struct IrgVec { using type = T; };
template <> struct IrgVec<float, 2> { using type = float2; };
template <> struct IrgVec<float, 4> { using type = float4; };
template <> struct IrgVec<double, 2> { using type = double2; };
// V adjacent elements of shared memory (aligned to V * sizeof(T)) in one access
template <class T, int V> IRG_DEV void irg_lds(const T* p, T* out) {
  using VT = typename IrgVec<T, V>::type;
  static_assert(sizeof(VT) == V * sizeof(T), "no vector type of this width");
  const VT v = *reinterpret_cast<const VT*>(p);
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int q = 0; q < V; ++q) out[q] = e[q];
}

// Not inlined: one instantiation per (type, tile, transposes, index type) is compiled once
// and shared by every GEMM of that shape class (compile time grows with distinct shapes,
// not with the number of GEMMs); sizes, strides and scalars are runtime arguments.
template <class T, int BM, int BN, int BK, int TM, int TN, bool TA, bool TB, class I>
__device__ __noinline__ void irg_gemm(const T* __restrict__ A, const T* __restrict__ B,
                                      T* __restrict__ C, const int M, const int N, const int K,
                                      const I lda, const I ldb, const I ldc, const T alpha,
                                      const T beta) {
  constexpr int NTX = BN / TN, NTY = BM / TM, NT = NTX * NTY;
  constexpr int LA = BM * BK / NT, LB = BK * BN / NT;
  // a thread's rows (columns) come in groups of VM (VN) adjacent ones, read from shared
  // memory as one 8- or 16-byte vector: row of element a = (a/VM)*NTY*VM + ty*VM + a%VM
  constexpr int VM = TM * (int)sizeof(T) >= 16 ? 16 / (int)sizeof(T) : TM;
  constexpr int VN = TN * (int)sizeof(T) >= 16 ? 16 / (int)sizeof(T) : TN;
  static_assert(LA * NT == BM * BK && LB * NT == BK * BN, "tile loads must divide evenly");
  static_assert(TM % VM == 0 && TN % VN == 0, "micro-tile must split into vectors");
  __shared__ __align__(16) T As[BK][BM + 4];
  __shared__ __align__(16) T Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % NTX, ty = tid / NTX;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  T acc[TM][TN];
#pragma unroll
  for (int a = 0; a < TM; ++a)
#pragma unroll
    for (int b = 0; b < TN; ++b) acc[a][b] = T(0);
  T ra[LA], rb[LB];
#define IRG_GEMM_FETCH(k0)                                                                   \
  _Pragma("unroll") for (int l = 0; l < LA; ++l) {                                           \
    const int e = tid + l * NT;                                                              \
    const int i = TA ? e % BM : e / BK, kk = TA ? e / BM : e % BK;                           \
    const int gi = m0 + i, gk = (k0) + kk;                                                   \
    ra[l] = (gi < M && gk < K) ? (TA ? A[(I)gk * lda + gi] : A[(I)gi * lda + gk]) : T(0);    \
  }                                                                                          \
  _Pragma("unroll") for (int l = 0; l < LB; ++l) {                                           \
    const int e = tid + l * NT;                                                              \
    const int j = TB ? e / BK : e % BN, kk = TB ? e % BK : e / BN;                           \
    const int gj = n0 + j, gk = (k0) + kk;                                                   \
    rb[l] = (gj < N && gk < K) ? (TB ? B[(I)gj * ldb + gk] : B[(I)gk * ldb + gj]) : T(0);    \
  }
  IRG_GEMM_FETCH(0)
  for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int l = 0; l < LA; ++l) {
      const int e = tid + l * NT;
      const int i = TA ? e % BM : e / BK, kk = TA ? e / BM : e % BK;
      As[kk][i] = ra[l];
    }
#pragma unroll
    for (int l = 0; l < LB; ++l) {
      const int e = tid + l * NT;
      const int j = TB ? e / BK : e % BN, kk = TB ? e % BK : e / BN;
      Bs[kk][j] = rb[l];
    }
    __syncthreads();
    if (k0 + BK < K) { IRG_GEMM_FETCH(k0 + BK) }
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[TM], bv[TN];
#pragma unroll
      for (int c = 0; c < TM / VM; ++c) irg_lds<T, VM>(&As[kk][c * NTY * VM + ty * VM], av + c * VM);
#pragma unroll
      for (int c = 0; c < TN / VN; ++c) irg_lds<T, VN>(&Bs[kk][c * NTX * VN + tx * VN], bv + c * VN);
#pragma unroll
      for (int a = 0; a < TM; ++a)
#pragma unroll
        for (int b = 0; b < TN; ++b) acc[a][b] += av[a] * bv[b];
    }
    __syncthreads();
  }
#undef IRG_GEMM_FETCH
#pragma unroll
  for (int a = 0; a < TM; ++a) {
    const int i = m0 + (a / VM) * NTY * VM + ty * VM + a % VM;
    if (i >= M) continue;
#pragma unroll
    for (int b = 0; b < TN; ++b) {
      const int j = n0 + (b / VN) * NTX * VN + tx * VN + b % VN;
      if (j >= N) continue;
      T v = alpha * acc[a][b];
      if (beta != T(0)) v += beta * C[(I)i * ldc + j];
      C[(I)i * ldc + j] = v;
    }
  }
}
"""

# TF32 tensor-core GEMM (optional, `tf32=True`): float32 in and out, products of operands
# rounded to TF32 (10-bit mantissa), accumulated in float32 by WMMA m16n16k8. Each block
# of 4 warps computes a 64 x 64 tile (each warp 32 x 32 = 2 x 2 fragments); the tiles of A
# and B are staged in shared memory as float32 and rounded when loaded into fragments.
# Relative error of a dot product of length K is about 2^-11 * sqrt(K) (worse than the
# float32 SIMT path's 2^-24 * sqrt(K)): fine for training, not for 1e-4 agreement checks.
PRELUDE_TF32 = r"""
#include <mma.h>
template <bool TA, bool TB, class I>
__device__ __noinline__ void irg_gemm_tf32(const float* __restrict__ A, const float* __restrict__ B,
                                           float* __restrict__ C, const int M, const int N,
                                           const int K, const I lda, const I ldb, const I ldc,
                                           const float alpha, const float beta) {
  using namespace nvcuda;
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ __align__(32) float As[BM][BK + 4];   // row-major A tile (i, k)
  __shared__ __align__(32) float Bs[BK][BN + 4];   // row-major B tile (k, j)
  __shared__ __align__(32) float Cs[4][32][32 + 4];
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc[a][b], 0.0f);
  for (int k0 = 0; k0 < K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += 128) {
      const int i = TA ? e % BM : e / BK, kk = TA ? e / BM : e % BK;
      const int gi = m0 + i, gk = k0 + kk;
      As[i][kk] = (gi < M && gk < K) ? (TA ? A[(I)gk * lda + gi] : A[(I)gi * lda + gk]) : 0.0f;
    }
    for (int e = tid; e < BK * BN; e += 128) {
      const int j = TB ? e / BK : e % BN, kk = TB ? e % BK : e / BN;
      const int gj = n0 + j, gk = k0 + kk;
      Bs[kk][j] = (gj < N && gk < K) ? (TB ? B[(I)gj * ldb + gk] : B[(I)gk * ldb + gj]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[2];
#pragma unroll
      for (int a = 0; a < 2; ++a) {
        wmma::load_matrix_sync(fa[a], &As[wm + a * 16][kk], BK + 4);
#pragma unroll
        for (int t = 0; t < fa[a].num_elements; ++t) fa[a].x[t] = wmma::__float_to_tf32(fa[a].x[t]);
      }
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        wmma::load_matrix_sync(fb[b], &Bs[kk][wn + b * 16], BN + 4);
#pragma unroll
        for (int t = 0; t < fb[b].num_elements; ++t) fb[b].x[t] = wmma::__float_to_tf32(fb[b].x[t]);
      }
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) wmma::mma_sync(acc[a][b], fa[a], fb[b], acc[a][b]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int b = 0; b < 2; ++b)
      wmma::store_matrix_sync(&Cs[warp][a * 16][b * 16], acc[a][b], 32 + 4, wmma::mem_row_major);
  __syncwarp();
  const int lane = tid & 31;
  for (int r = 0; r < 32; ++r) {
    const int i = m0 + wm + r, j = n0 + wn + lane;
    if (i < M && j < N) {
      float v = alpha * Cs[warp][r][lane];
      if (beta != 0.0f) v += beta * C[(I)i * ldc + j];
      C[(I)i * ldc + j] = v;
    }
  }
}
"""
