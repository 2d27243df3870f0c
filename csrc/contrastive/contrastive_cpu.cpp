// CPU kernels of the contrastive family: tiled similarity with online log-sum-exp statistics
// (InfoNCE, NT-Xent, CLIP, MoCo) and SigLIP's pairwise sigmoid loss. No N x M matrix is held.
//
// Structure. s = scale * q k^T is cut into kBM x kBN tiles. A tile's dot products are one small
// GEMM into a per-thread buffer (GEMM1, 2 D flops per pair). The forward turns the tile into
// row and column (max, sum exp) partials; the backward turns it into G in place and runs two
// more GEMMs from the same tile: dq += G k (GEMM2) and dk += G^T q (GEMM3), 6 D flops per pair.
// With more columns than rows the entry points run the transposed problem (see there).
//
// Operands are converted once to float32 (double for float64) and packed: qf [N][Dp] row-major
// (GEMM1's A; q itself when it is float32 with D = Dp), kb [Mp/16][D][16] column strips of k^T
// (GEMM1's B), kr [Dp/16][M][16] and qr [Dp/16][N][16] (GEMM2's and GEMM3's B; qr is qf read
// row-major when M is small), where Dp and Mp round D and M up to 16. Every GEMM is
// C[m x 16v] (+)= A(m x k) B(k x 16v), A read by broadcasts through two strides (so G serves as
// A both row-major and transposed) and B from 16-wide strips; a register-blocked micro-kernel
// does the work: 8 x 32 with AVX-512 intrinsics, or the portable C++ one (GCC vector
// extensions), compiled for the baseline ISA and again, inlined, for AVX2 + FMA. The ISA is
// picked at run time (set_isa, PYSSL_FORCE_PORTABLE); the build needs no -march flag.
//
// Determinism. The row tiles are grouped into A chunks and the column tiles into B chunks, from
// the shape alone. Task (a, b) covers one chunk pair and writes its own partials: row statistics
// and dq rows into slot b, column statistics and dk rows into slot a, one scalar partial per
// task. Partials are merged in slot order. Tasks are scheduled dynamically (a busy core does not
// stall the others), but what a task computes and the merge order never depend on the threads.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (SSE: the x86-64 baseline)
#endif

// The portable kernels are written once and compiled twice: as they are (baseline ISA), and
// inlined into wrappers compiled for AVX2 + FMA. GCC inlines a callee into a caller whose
// target is a superset of its own; always_inline makes sure it does.
#define PYSSL_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_ps(), which -W(maybe-)uninitialized
// reports once they are inlined (a known false positive); the warnings stay on elsewhere in the
// build.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define PYSSL_X86_KERNELS 1
#define PYSSL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define PYSSL_AVX2 __attribute__((target("avx2,fma")))
#else
#define PYSSL_X86_KERNELS 0
#endif

#include "contrastive/contrastive.h"
#include "contrastive/contrastive_checks.h"
#include "contrastive/contrastive_tiles.h"
#include "pyssl/parallel.h"

namespace pyssl::contrastive::cpu {
namespace {

constexpr int64_t kTasks = 16;    // chunk pairs aimed at (fixed: results follow the shape only)
constexpr int64_t kChunkMax = 4;  // chunks per side before the other side is split further

template <typename I>
I round_up(I v, I m) {
  return (v + m - 1) / m * m;
}

// ---------------------------------------------------------------------------------------------
// Scratch memory. Blocks of 1 MiB and more are cached between calls: a fresh multi-megabyte
// allocation is a fresh mmap whose first touch faults every 4 KiB page (measured: 14% of the
// NT-Xent backward at 2N = 8192). At most kPoolIdle bytes stay cached while unused.

constexpr size_t kPoolMin = size_t(1) << 20;
constexpr size_t kPoolIdle = size_t(512) << 20;
constexpr size_t kHuge = size_t(2) << 20;

struct Pool {
  std::mutex mu;
  std::vector<std::pair<size_t, void*>> idle;  // (bytes, block), oldest first
  size_t idle_bytes = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: blocks may be returned during static teardown
  return *p;
}

void* raw_alloc(size_t bytes) {
  const size_t align = bytes >= kHuge ? kHuge : 64;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= 2 * kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only; failure is harmless
#endif
  return p;
}

// A block of at least `bytes` (rounded up); best fit among the idle ones, else a new one.
void* pool_get(size_t& bytes) {
  bytes = bytes >= kHuge ? round_up(bytes, kHuge) : round_up<size_t>(bytes, 64);
  if (bytes < kPoolMin) return raw_alloc(bytes);
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> lock(P.mu);
    size_t best = P.idle.size();
    for (size_t i = 0; i < P.idle.size(); ++i) {
      const size_t b = P.idle[i].first;
      if (b >= bytes && b <= 2 * bytes && (best == P.idle.size() || b < P.idle[best].first))
        best = i;
    }
    if (best < P.idle.size()) {
      bytes = P.idle[best].first;
      void* p = P.idle[best].second;
      P.idle.erase(P.idle.begin() + static_cast<std::ptrdiff_t>(best));
      P.idle_bytes -= bytes;
      return p;
    }
  }
  return raw_alloc(bytes);
}

void pool_put(void* p, size_t bytes) {
  if (!p) return;
  if (bytes < kPoolMin) return std::free(p);
  Pool& P = pool();
  std::vector<void*> drop;
  {
    std::lock_guard<std::mutex> lock(P.mu);
    P.idle.emplace_back(bytes, p);
    P.idle_bytes += bytes;
    while (P.idle_bytes > kPoolIdle) {
      drop.push_back(P.idle.front().second);
      P.idle_bytes -= P.idle.front().first;
      P.idle.erase(P.idle.begin());
    }
  }
  for (void* d : drop) std::free(d);
}

// Uninitialised scratch of n elements (never a null pointer, even for n = 0).
template <typename A>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t n) {
    bytes_ = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(A);
    p_ = static_cast<A*>(pool_get(bytes_));
  }
  Buffer(Buffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { pool_put(p_, bytes_); }
  A* get() const { return p_; }

 private:
  A* p_ = nullptr;
  size_t bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The instruction set of the float32 kernels.

enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2 };

bool cpu_has(Isa isa) {
#if PYSSL_X86_KERNELS
  __builtin_cpu_init();
  if (isa == Isa::avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::avx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return true;
#else
  return isa == Isa::portable;
#endif
}

Isa best_isa() {
  const char* env = std::getenv("PYSSL_FORCE_PORTABLE");
  if (env && env[0] && std::string(env) != "0") return Isa::portable;
  return cpu_has(Isa::avx512) ? Isa::avx512 : cpu_has(Isa::avx2) ? Isa::avx2 : Isa::portable;
}

std::atomic<int>& isa_state() {
  static std::atomic<int> state{static_cast<int>(best_isa())};
  return state;
}

Isa current_isa() { return static_cast<Isa>(isa_state().load(std::memory_order_relaxed)); }

// ---------------------------------------------------------------------------------------------
// Portable kernels (plain C++; any x86-64, any compiler; float and double).

// Minimax polynomial of 2^f on [-1/2, 1/2] (relative error 1.9e-9; coefficient 0 is 1).
constexpr float kExp2C[7] = {1.0f,
                             0.6931472057374937f,
                             0.24022646890593305f,
                             0.0555032877646512f,
                             0.009618488959711548f,
                             0.0013399931422712948f,
                             0.0001534581178628203f};

// y 2^n for y in [1/2, 2] and n <= 254 (n >= -252 where the result is kept): two
// multiplications by normal powers of two, so that the result is correctly rounded into the
// subnormals and overflows to inf only when it should.
PYSSL_INLINE float scale_pow2_portable(float y, int32_t n) {
  const int32_t h = n >> 1;
  return y * bits_to_float(static_cast<uint32_t>(h + 127) << 23) *
         bits_to_float(static_cast<uint32_t>(n - h + 127) << 23);
}

// n = round(v) (as float and, clamped to <= 254, as int) for |v| < 2^22 via the 1.5 * 2^23
// trick: no float -> int conversion of a NaN or inf.
PYSSL_INLINE float round_portable(float v, int32_t* n) {
  const float magic = 12582912.0f;
  const float t = v + magic;
  *n = std::min(static_cast<int32_t>(float_to_bits(t) & 0x7fffffu) - 0x400000, 254);
  return t - magic;
}

// r, or +0 where x < lo (NaN stays). A bit mask, not a select: GCC splits the loop path of a
// select whose result is a constant, and then does not vectorise the loop.
PYSSL_INLINE float zero_below(float r, float x, float lo) {
  const uint32_t keep = 0u - static_cast<uint32_t>(!(x < lo));
  return bits_to_float(float_to_bits(r) & keep);
}

// 2^x: exact reduction x = n + f, |f| <= 1/2, and the polynomial. About 1 ulp; 0 below -200
// (and for -inf), inf above 128, NaN for NaN and +inf. Branch-free, so loops vectorise.
PYSSL_INLINE float exp2_portable(float x) {
  int32_t n;
  const float f = x - round_portable(x, &n);
  float p = kExp2C[6];
  p = p * f + kExp2C[5];
  p = p * f + kExp2C[4];
  p = p * f + kExp2C[3];
  p = p * f + kExp2C[2];
  p = p * f + kExp2C[1];
  p = p * f + kExp2C[0];
  return zero_below(scale_pow2_portable(p, n), x, -200.0f);
}

// e^x: Cody-Waite reduction by ln 2 in two parts and Cephes' degree-5 polynomial. About 1 ulp;
// limits as exp2_portable (0 below -150).
PYSSL_INLINE float exp_portable(float x) {
  int32_t n;
  const float nf = round_portable(x * 1.44269504088896341f, &n);
  float r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return zero_below(scale_pow2_portable(p * (r * r) + r + 1.0f, n), x, -150.0f);
}

// log(w) for w in [1, 2] (Cephes' logf polynomial).
PYSSL_INLINE float log_1_2_portable(float w) {
  float m = w, e = 0.0f;
  if (m > 1.41421356f) {
    m *= 0.5f;
    e = 1.0f;
  }
  const float f = m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

// log1p(t) for t in [0, 1] (Goldberg's correction keeps small t accurate).
PYSSL_INLINE float log1p_01_portable(float t) {
  const float w = 1.0f + t;
  const float d = w - 1.0f;
  return d == 0.0f ? t : log_1_2_portable(w) * (t / d);
}

template <typename A>
struct Math;
// softplus(u) = log(1 + exp(u)) = max(u, 0) + log1p(exp(-|u|)) = -log_sigmoid(-u), vectorisable.
PYSSL_INLINE float softplus_portable(float u) {
  const float au = u < 0.0f ? -u : u;
  return (u > 0.0f ? u : 0.0f) + log1p_01_portable(exp_portable(-au));
}

// sigmoid(x) for either sign, vectorisable.
PYSSL_INLINE float sigmoid_portable(float x) {
  const float t = exp_portable(x < 0.0f ? x : -x);  // exp(-|x|)
  return (x >= 0.0f ? 1.0f : t) / (1.0f + t);
}

// The scalar math of the portable kernels: vectorisable float32 approximations, and the shared
// (libm) formulas of contrastive.h for float64.
template <typename A>
struct Math;
template <>
struct Math<float> {
  // e^t for a difference t (see Kernels): one multiplication and an exp2.
  static PYSSL_INLINE float expd(float t) { return exp2_portable(t * 1.44269504088896341f); }
  static PYSSL_INLINE float softplus(float u) { return softplus_portable(u); }
  static PYSSL_INLINE float sigmoid(float x) { return sigmoid_portable(x); }
};
template <>
struct Math<double> {
  static double expd(double t) { return std::exp(t); }
  static double softplus(double u) { return -log_sigmoid(-u); }
  static double sigmoid(double x) { return contrastive::sigmoid(x); }
};

// VB-byte vectors through GCC/Clang's vector extension (16: SSE2, the x86-64 baseline, or NEON;
// 32: AVX2): plain loops over small accumulator arrays are not reliably kept in registers.
template <typename A, int VB>
struct Vec {
  typedef A type __attribute__((vector_size(VB)));
};

template <typename A, int VB, int MR, int NV>
PYSSL_INLINE void uk_portable(int64_t k, const A* a, int64_t ars, int64_t acs, const A* b,
                              int64_t bks, A* c, int64_t ldc, bool accumulate) {
  using V = typename Vec<A, VB>::type;
  constexpr int W = VB / sizeof(A);
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      if (accumulate)
        std::memcpy(&acc[r][v], c + r * ldc + v * W, VB);
      else
        acc[r][v] = V{};
    }
  for (int64_t kk = 0; kk < k; ++kk) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + kk * bks + v * W, VB);
    for (int r = 0; r < MR; ++r) {
      const A x = a[r * ars + kk * acs];
      for (int v = 0; v < NV; ++v) acc[r][v] += x * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) std::memcpy(c + r * ldc + v * W, &acc[r][v], VB);
}

template <typename A, int VB = 16>
PYSSL_INLINE void gemm_portable(const Gemm<A>& g) {
  constexpr int MR = VB == 16 ? 4 : 6;                       // rows per micro-tile
  constexpr int NR = VB == 16 ? 8 : 16;                      // columns per micro-tile
  constexpr int NV = NR / static_cast<int>(VB / sizeof(A));  // vectors per row
  if (g.k == 0) {
    if (!g.accumulate)
      for (int64_t i = 0; i < g.m; ++i)
        std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.nstrips * kLanes, A(0));
    return;
  }
  for (int64_t k0 = 0; k0 < g.k; k0 += kKC) {
    const int64_t kk = std::min(kKC, g.k - k0);
    const bool acc = g.accumulate || k0 > 0;
    for (int64_t v = 0; v < g.nstrips; ++v) {
      for (int64_t j0 = 0; j0 < kLanes; j0 += NR) {
        const A* b = g.b + v * g.bvs + k0 * g.bks + j0;
        int64_t i = 0;
        for (; i + MR <= g.m; i += MR)
          uk_portable<A, VB, MR, NV>(kk, g.a + i * g.ars + k0 * g.acs, g.ars, g.acs, b, g.bks,
                                     g.c + i * g.ldc + v * kLanes + j0, g.ldc, acc);
        for (; i < g.m; ++i)
          uk_portable<A, VB, 1, NV>(kk, g.a + i * g.ars + k0 * g.acs, g.ars, g.acs, b, g.bks,
                                    g.c + i * g.ldc + v * kLanes + j0, g.ldc, acc);
      }
    }
  }
}

// The loops below run over 16 contiguous lanes or carry an `omp simd` reduction, so that the
// compiler vectorises them (exp2_portable is branch-free).
template <typename A>
PYSSL_INLINE void lse_fwd_tile_portable(A* s, int64_t nr, int64_t nc, A scale, int64_t mark0, A* lm,
                                        A* ll, A* cm, A* cl) {
  const A ninf = -std::numeric_limits<A>::infinity();
  const int64_t ncp = round_up(nc, kLanes);
  for (int64_t i = 0; i < nr; ++i) {
    A* x = s + i * kBN;
    const int64_t mark = mark0 + i;
    for (int64_t j = 0; j < ncp; ++j) x[j] = j < nc && j != mark ? scale * x[j] : ninf;
    if (!lm) continue;
    A* m = lm + i * kLanes;
    A* l = ll + i * kLanes;
    A mx[kLanes], ref[kLanes], sum[kLanes];
    for (int64_t lane = 0; lane < kLanes; ++lane) mx[lane] = m[lane], sum[lane] = 0;
    for (int64_t j0 = 0; j0 < ncp; j0 += kLanes)
      for (int64_t lane = 0; lane < kLanes; ++lane)
        mx[lane] = x[j0 + lane] > mx[lane] ? x[j0 + lane] : mx[lane];
    for (int64_t lane = 0; lane < kLanes; ++lane) ref[lane] = lse_ref(mx[lane]);
    for (int64_t j0 = 0; j0 < ncp; j0 += kLanes)
      for (int64_t lane = 0; lane < kLanes; ++lane)
        sum[lane] += Math<A>::expd(x[j0 + lane] - ref[lane]);
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      l[lane] = l[lane] * Math<A>::expd(m[lane] - ref[lane]) + sum[lane];
      m[lane] = mx[lane];
    }
  }
  if (!cm) return;
  for (int64_t j0 = 0; j0 < nc; j0 += kLanes) {  // the padding lanes hold -inf: harmless
    A mx[kLanes], ref[kLanes], sum[kLanes];
    for (int64_t lane = 0; lane < kLanes; ++lane)
      mx[lane] = j0 + lane < nc ? cm[j0 + lane] : ninf, sum[lane] = 0;
    for (int64_t i = 0; i < nr; ++i)
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        const A v = s[i * kBN + j0 + lane];
        mx[lane] = v > mx[lane] ? v : mx[lane];
      }
    for (int64_t lane = 0; lane < kLanes; ++lane) ref[lane] = lse_ref(mx[lane]);
    for (int64_t i = 0; i < nr; ++i)
      for (int64_t lane = 0; lane < kLanes; ++lane)
        sum[lane] += Math<A>::expd(s[i * kBN + j0 + lane] - ref[lane]);
    for (int64_t lane = 0; lane < kLanes && j0 + lane < nc; ++lane) {
      cl[j0 + lane] = cl[j0 + lane] * Math<A>::expd(cm[j0 + lane] - ref[lane]) + sum[lane];
      cm[j0 + lane] = mx[lane];
    }
  }
}

template <typename A>
PYSSL_INLINE void fold_lanes_portable(const A* lm, const A* ll, int64_t n, A* m, A* l) {
  for (int64_t i = 0; i < n; ++i) {
    A mx = -std::numeric_limits<A>::infinity();
    for (int64_t lane = 0; lane < kLanes; ++lane) mx = std::max(mx, lm[i * kLanes + lane]);
    const A ref = lse_ref(mx);
    A sum = 0;
    for (int64_t lane = 0; lane < kLanes; ++lane)
      sum += ll[i * kLanes + lane] * Math<A>::expd(lm[i * kLanes + lane] - ref);
    m[i] = mx;
    l[i] = sum;
  }
}

template <typename A>
PYSSL_INLINE double lse_bwd_tile_portable(A* s, int64_t nr, int64_t nc, A scale, int64_t mark0,
                                          const A* rl, const A* rw, const A* cl, const A* cw) {
  double gd = 0;
  const double sc = scale;
  for (int64_t i = 0; i < nr; ++i) {
    A* row = s + i * kBN;
    const int64_t mark = mark0 + i;
    const double rli = rl ? static_cast<double>(rl[i]) : 0.0;
    const A rwi = rl ? rw[i] : A(0);
    double rgd = 0;
    // s - lse in double, rounded once (as the AVX-512 kernel's fused multiply-subtract)
    if (rl && cl) {
#pragma omp simd reduction(+ : rgd)
      for (int64_t j = 0; j < nc; ++j) {
        const A d = row[j];
        const double x = sc * static_cast<double>(d);
        A g = rwi * Math<A>::expd(static_cast<A>(x - rli)) +
              cw[j] * Math<A>::expd(static_cast<A>(x - static_cast<double>(cl[j])));
        g = j == mark ? A(0) : g;
        rgd += static_cast<double>(g * d);
        row[j] = g;
      }
    } else if (rl) {
#pragma omp simd reduction(+ : rgd)
      for (int64_t j = 0; j < nc; ++j) {
        const A d = row[j];
        A g = rwi * Math<A>::expd(static_cast<A>(sc * static_cast<double>(d) - rli));
        g = j == mark ? A(0) : g;
        rgd += static_cast<double>(g * d);
        row[j] = g;
      }
    } else {
#pragma omp simd reduction(+ : rgd)
      for (int64_t j = 0; j < nc; ++j) {
        const A d = row[j];
        A g = cw[j] * Math<A>::expd(
                          static_cast<A>(sc * static_cast<double>(d) - static_cast<double>(cl[j])));
        g = j == mark ? A(0) : g;
        rgd += static_cast<double>(g * d);
        row[j] = g;
      }
    }
    gd += rgd;
  }
  return gd;
}

template <typename A>
PYSSL_INLINE double sig_fwd_tile_portable(const A* s, int64_t nr, int64_t nc, A scale, A bias,
                                          int64_t mark0) {
  double sum = 0;
  for (int64_t i = 0; i < nr; ++i) {
    double rsum = 0;
#pragma omp simd reduction(+ : rsum)
    for (int64_t j = 0; j < nc; ++j) {
      const A z = scale * s[i * kBN + j] + bias;
      rsum += static_cast<double>(Math<A>::softplus(j == mark0 + i ? -z : z));  // of -y z
    }
    sum += rsum;
  }
  return sum;
}

template <typename A>
PYSSL_INLINE void sig_bwd_tile_portable(A* s, int64_t nr, int64_t nc, A scale, A bias, A grad,
                                        int64_t mark0, double* gdot, double* gsum) {
  double gd = 0, gs = 0;
  for (int64_t i = 0; i < nr; ++i) {
    A* row = s + i * kBN;
    double rgd = 0, rgs = 0;
#pragma omp simd reduction(+ : rgd, rgs)
    for (int64_t j = 0; j < nc; ++j) {
      const bool pos = j == mark0 + i;
      const A d = row[j];
      const A z = scale * d + bias;
      const A sig = Math<A>::sigmoid(pos ? -z : z);  // sigmoid(-y z)
      const A g = grad * (pos ? -sig : sig);
      rgd += static_cast<double>(g * d);
      rgs += static_cast<double>(g);
      row[j] = g;
    }
    gd += rgd;
    gs += rgs;
  }
  *gdot += gd;
  *gsum += gs;
}

template <typename A>
Kernels<A> portable_kernels() {
  return {&gemm_portable<A>,         &lse_fwd_tile_portable<A>, &fold_lanes_portable<A>,
          &lse_bwd_tile_portable<A>, &sig_fwd_tile_portable<A>, &sig_bwd_tile_portable<A>};
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA kernels (float32): the portable code, inlined into wrappers compiled for AVX2 and
// FMA (32-byte vectors in the GEMM; fused multiply-adds wherever the compiler contracts).

#if PYSSL_X86_KERNELS

PYSSL_AVX2 void gemm_avx2(const Gemm<float>& g) { gemm_portable<float, 32>(g); }
PYSSL_AVX2 void lse_fwd_tile_avx2(float* s, int64_t nr, int64_t nc, float scale, int64_t mark0,
                                  float* lm, float* ll, float* cm, float* cl) {
  lse_fwd_tile_portable<float>(s, nr, nc, scale, mark0, lm, ll, cm, cl);
}
PYSSL_AVX2 void fold_lanes_avx2(const float* lm, const float* ll, int64_t n, float* m, float* l) {
  fold_lanes_portable<float>(lm, ll, n, m, l);
}
PYSSL_AVX2 double lse_bwd_tile_avx2(float* s, int64_t nr, int64_t nc, float scale, int64_t mark0,
                                    const float* rl, const float* rw, const float* cl,
                                    const float* cw) {
  return lse_bwd_tile_portable<float>(s, nr, nc, scale, mark0, rl, rw, cl, cw);
}
PYSSL_AVX2 double sig_fwd_tile_avx2(const float* s, int64_t nr, int64_t nc, float scale, float bias,
                                    int64_t mark0) {
  return sig_fwd_tile_portable<float>(s, nr, nc, scale, bias, mark0);
}
PYSSL_AVX2 void sig_bwd_tile_avx2(float* s, int64_t nr, int64_t nc, float scale, float bias,
                                  float grad, int64_t mark0, double* gdot, double* gsum) {
  sig_bwd_tile_portable<float>(s, nr, nc, scale, bias, grad, mark0, gdot, gsum);
}
PYSSL_AVX2 void vector_math_avx2(int fn, const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = fn == 0 ? exp_portable(x[i]) : fn == 1 ? exp2_portable(x[i]) : softplus_portable(x[i]);
}

Kernels<float> avx2_kernels() {
  return {&gemm_avx2,         &lse_fwd_tile_avx2, &fold_lanes_avx2,
          &lse_bwd_tile_avx2, &sig_fwd_tile_avx2, &sig_bwd_tile_avx2};
}
#endif  // PYSSL_X86_KERNELS

// ---------------------------------------------------------------------------------------------
// AVX-512 kernels (float32). Compiled for AVX-512 whatever the build flags; called only when the
// CPU has it.

#if PYSSL_X86_KERNELS

// 2^x, as exp2_portable; scalef does the 2^n scaling (and the overflow and underflow).
PYSSL_AVX512 inline __m512 exp2_512(__m512 x) {
  // -inf (a masked pair) -> 2^-200 -> 0; NaN passes (max returns its second operand on NaN).
  // Large x need no clamp: scalef overflows to inf.
  x = _mm512_max_ps(_mm512_set1_ps(-200.0f), x);
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(kExp2C[6]);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[5]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[4]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[3]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[2]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[1]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// e^x, as exp_portable.
PYSSL_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-150.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// log(w) for w in [1, 2].
PYSSL_AVX512 inline __m512 log_1_2_512(__m512 w) {
  const __mmask16 big = _mm512_cmp_ps_mask(w, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  const __m512 m = _mm512_mask_mul_ps(w, big, w, _mm512_set1_ps(0.5f));
  const __m512 e = _mm512_maskz_mov_ps(big, _mm512_set1_ps(1.0f));
  const __m512 f = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
  const __m512 z = _mm512_mul_ps(f, f);
  __m512 y = _mm512_set1_ps(7.0376836292e-2f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.1514610310e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.1676998740e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.2420140846e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.4249322787e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.6668057665e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.0000714765e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-2.4999993993e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(3.3333331174e-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), _mm512_add_ps(f, y));
}

PYSSL_AVX512 inline __m512 abs512(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

// softplus(u) = max(u, 0) + log1p(exp(-|u|)).
PYSSL_AVX512 inline __m512 softplus512(__m512 u) {
  const __m512 t = exp512(_mm512_sub_ps(_mm512_setzero_ps(), abs512(u)));
  const __m512 w = _mm512_add_ps(_mm512_set1_ps(1.0f), t);
  const __m512 d = _mm512_sub_ps(w, _mm512_set1_ps(1.0f));
  const __mmask16 exact = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_EQ_OQ);
  const __m512 l1p =
      _mm512_mask_mov_ps(_mm512_mul_ps(log_1_2_512(w), _mm512_div_ps(t, d)), exact, t);
  return _mm512_add_ps(_mm512_max_ps(u, _mm512_setzero_ps()), l1p);
}

// Lanes of columns [j0, j0 + 16) that are below n.
PYSSL_AVX512 inline __mmask16 tail_mask(int64_t j0, int64_t n) {
  const int64_t left = n - j0;
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
}

// The lane of column `mark` within the vector at j0, as a mask (empty if elsewhere).
PYSSL_AVX512 inline __mmask16 mark_mask(int64_t j0, int64_t mark) {
  return (mark >= j0 && mark < j0 + 16) ? __mmask16(1u << (mark - j0)) : __mmask16(0);
}

// The register-blocked micro-kernel: MR rows x NV strips of 16 columns, k steps.
template <int MR, int NV, bool ACOL>
PYSSL_AVX512 void uk512(int64_t k, const float* a, int64_t as, const float* b, int64_t bvs,
                        int64_t bks, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm512_loadu_ps(c + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t kk = 0; kk < k; ++kk) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + v * bvs + kk * bks);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(ACOL ? a[kk * as + r] : a[r * as + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

constexpr int kMR = 8;  // micro-kernel rows
constexpr int kNV = 2;  // micro-kernel strips (kNV * 16 columns)

using UkFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, int64_t, float*,
                      int64_t, bool);

template <int NV, bool ACOL, int... R>
constexpr std::array<UkFn, sizeof...(R)> uk_rows(std::integer_sequence<int, R...>) {
  return {&uk512<R + 1, NV, ACOL>...};
}

// [ACOL][NV - 1][MR - 1]
const std::array<std::array<std::array<UkFn, kMR>, kNV>, 2> kUk = {{
    {{uk_rows<1, false>(std::make_integer_sequence<int, kMR>{}),
      uk_rows<2, false>(std::make_integer_sequence<int, kMR>{})}},
    {{uk_rows<1, true>(std::make_integer_sequence<int, kMR>{}),
      uk_rows<2, true>(std::make_integer_sequence<int, kMR>{})}},
}};

void gemm512(const Gemm<float>& g) {
  if (g.k == 0) {
    if (!g.accumulate)
      for (int64_t i = 0; i < g.m; ++i)
        std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.nstrips * kLanes, 0.0f);
    return;
  }
  const bool acol = g.acs != 1;  // A column-major (ars == 1), else row-major (acs == 1)
  const int64_t as = acol ? g.acs : g.ars;
  for (int64_t k0 = 0; k0 < g.k; k0 += kKC) {
    const int64_t kk = std::min(kKC, g.k - k0);
    const bool acc = g.accumulate || k0 > 0;
    for (int64_t v = 0; v < g.nstrips; v += kNV) {
      const int64_t nv = std::min<int64_t>(kNV, g.nstrips - v);
      const auto& row = kUk[acol][nv - 1];
      const float* b = g.b + v * g.bvs + k0 * g.bks;
      for (int64_t i = 0; i < g.m; i += kMR) {
        const int64_t mr = std::min<int64_t>(kMR, g.m - i);
        row[mr - 1](kk, g.a + i * g.ars + k0 * g.acs, as, b, g.bvs, g.bks,
                    g.c + i * g.ldc + v * kLanes, g.ldc, acc);
      }
    }
  }
}

// The -inf-safe reference of a lane-wise running max (0 where the max is still -inf).
PYSSL_AVX512 inline __m512 lane_ref(__m512 m) {
  return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ),
                            _mm512_setzero_ps());
}

// e^t for a difference t (see Kernels).
PYSSL_AVX512 inline __m512 expd512(__m512 t) {
  return exp2_512(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)));
}

// Adds the 16 floats of v to the 16 doubles of (lo, hi).
PYSSL_AVX512 inline void add_pd(__m512 v, __m512d& lo, __m512d& hi) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

PYSSL_AVX512 inline double reduce_pd(__m512d lo, __m512d hi) {
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

PYSSL_AVX512 void lse_fwd_tile512(float* s, int64_t nr, int64_t nc, float scale, int64_t mark0,
                                  float* lm, float* ll, float* cm, float* cl) {
  const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < nr; ++i) {
    float* x = s + i * kBN;
    const int64_t mark = mark0 + i;
    __m512 mx0 = ninf, mx1 = ninf;
    int64_t j0 = 0;
    for (; j0 < nc; j0 += 16) {  // scale, mask, store; two max chains
      const __mmask16 keep = tail_mask(j0, nc) & ~mark_mask(j0, mark);
      const __m512 v = _mm512_mask_mul_ps(ninf, keep, sc, _mm512_loadu_ps(x + j0));
      _mm512_storeu_ps(x + j0, v);
      if ((j0 & 16) == 0)
        mx0 = _mm512_max_ps(mx0, v);
      else
        mx1 = _mm512_max_ps(mx1, v);
    }
    if (!lm) continue;
    const int64_t ncp = j0;
    const __m512 mo = _mm512_loadu_ps(lm + i * kLanes);
    const __m512 mn = _mm512_max_ps(mo, _mm512_max_ps(mx0, mx1));
    const __m512 ref = lane_ref(mn);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (j0 = 0; j0 + 32 <= ncp; j0 += 32) {
      s0 = _mm512_add_ps(s0, expd512(_mm512_sub_ps(_mm512_loadu_ps(x + j0), ref)));
      s1 = _mm512_add_ps(s1, expd512(_mm512_sub_ps(_mm512_loadu_ps(x + j0 + 16), ref)));
    }
    if (j0 < ncp) s0 = _mm512_add_ps(s0, expd512(_mm512_sub_ps(_mm512_loadu_ps(x + j0), ref)));
    const __m512 lo = _mm512_loadu_ps(ll + i * kLanes);
    _mm512_storeu_ps(ll + i * kLanes,
                     _mm512_fmadd_ps(lo, expd512(_mm512_sub_ps(mo, ref)), _mm512_add_ps(s0, s1)));
    _mm512_storeu_ps(lm + i * kLanes, mn);
  }
  if (!cm) return;
  for (int64_t j0 = 0; j0 < nc; j0 += 16) {
    const __mmask16 t = tail_mask(j0, nc);
    __m512 mx = ninf;
    for (int64_t i = 0; i < nr; ++i) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + i * kBN + j0));
    const __m512 mo = _mm512_mask_loadu_ps(ninf, t, cm + j0);
    const __m512 mn = _mm512_max_ps(mo, mx);
    const __m512 ref = lane_ref(mn);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < nr; ++i)
      sum = _mm512_add_ps(sum, expd512(_mm512_sub_ps(_mm512_loadu_ps(s + i * kBN + j0), ref)));
    const __m512 lo = _mm512_maskz_loadu_ps(t, cl + j0);
    _mm512_mask_storeu_ps(cl + j0, t, _mm512_fmadd_ps(lo, expd512(_mm512_sub_ps(mo, ref)), sum));
    _mm512_mask_storeu_ps(cm + j0, t, mn);
  }
}

PYSSL_AVX512 void fold_lanes512(const float* lm, const float* ll, int64_t n, float* m, float* l) {
  for (int64_t i = 0; i < n; ++i) {
    const __m512 mv = _mm512_loadu_ps(lm + i * kLanes);
    const float mx = _mm512_reduce_max_ps(mv);
    const __m512 ref = _mm512_set1_ps(lse_ref(mx));
    m[i] = mx;
    l[i] = _mm512_reduce_add_ps(
        _mm512_mul_ps(_mm512_loadu_ps(ll + i * kLanes), expd512(_mm512_sub_ps(mv, ref))));
  }
}

PYSSL_AVX512 double lse_bwd_tile512(float* s, int64_t nr, int64_t nc, float scale, int64_t mark0,
                                    const float* rl, const float* rw, const float* cl,
                                    const float* cw) {
  const __m512 sc = _mm512_set1_ps(scale);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < nr; ++i) {
    float* row = s + i * kBN;
    const int64_t mark = mark0 + i;
    const __m512 rlv = _mm512_set1_ps(rl ? rl[i] : 0.0f), rwv = _mm512_set1_ps(rl ? rw[i] : 0.0f);
    __m512 gd0 = _mm512_setzero_ps(), gd1 = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < nc; j0 += 16) {
      const __mmask16 keep = tail_mask(j0, nc) & ~mark_mask(j0, mark);
      const __m512 d = _mm512_loadu_ps(row + j0);
      __m512 g = _mm512_setzero_ps();
      if (rl) g = _mm512_mul_ps(rwv, expd512(_mm512_fmsub_ps(d, sc, rlv)));
      if (cl)
        g = _mm512_fmadd_ps(_mm512_loadu_ps(cw + j0),
                            expd512(_mm512_fmsub_ps(d, sc, _mm512_loadu_ps(cl + j0))), g);
      g = _mm512_maskz_mov_ps(keep, g);
      if ((j0 & 16) == 0)
        gd0 = _mm512_fmadd_ps(g, d, gd0);
      else
        gd1 = _mm512_fmadd_ps(g, d, gd1);
      _mm512_storeu_ps(row + j0, g);
    }
    add_pd(_mm512_add_ps(gd0, gd1), lo, hi);
  }
  return reduce_pd(lo, hi);
}

PYSSL_AVX512 double sig_fwd_tile512(const float* s, int64_t nr, int64_t nc, float scale, float bias,
                                    int64_t mark0) {
  const __m512 sc = _mm512_set1_ps(scale), bv = _mm512_set1_ps(bias);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < nr; ++i) {
    const float* row = s + i * kBN;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < nc; j0 += 16) {
      const __mmask16 t = tail_mask(j0, nc);
      const __m512 z = _mm512_fmadd_ps(sc, _mm512_loadu_ps(row + j0), bv);
      // softplus(-y z): z off the positive pair, -z on it
      const __m512 u = _mm512_mask_sub_ps(z, mark_mask(j0, mark0 + i), _mm512_setzero_ps(), z);
      sum = _mm512_mask_add_ps(sum, t, sum, softplus512(u));
    }
    add_pd(sum, lo, hi);
  }
  return reduce_pd(lo, hi);
}

PYSSL_AVX512 void sig_bwd_tile512(float* s, int64_t nr, int64_t nc, float scale, float bias,
                                  float grad, int64_t mark0, double* gdot, double* gsum) {
  const __m512 sc = _mm512_set1_ps(scale), bv = _mm512_set1_ps(bias);
  const __m512 gr = _mm512_set1_ps(grad), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  __m512d dlo = _mm512_setzero_pd(), dhi = _mm512_setzero_pd();
  __m512d slo = _mm512_setzero_pd(), shi = _mm512_setzero_pd();
  for (int64_t i = 0; i < nr; ++i) {
    float* row = s + i * kBN;
    __m512 gd = zero, gs = zero;
    for (int64_t j0 = 0; j0 < nc; j0 += 16) {
      const __mmask16 t = tail_mask(j0, nc), pos = mark_mask(j0, mark0 + i);
      const __m512 d = _mm512_loadu_ps(row + j0);
      const __m512 z = _mm512_fmadd_ps(sc, d, bv);
      const __m512 x = _mm512_mask_sub_ps(z, __mmask16(~pos), zero, z);  // y z
      const __m512 e = exp512(_mm512_sub_ps(zero, abs512(x)));
      const __mmask16 nonneg = _mm512_cmp_ps_mask(x, zero, _CMP_GE_OQ);
      const __m512 sig = _mm512_div_ps(_mm512_mask_mov_ps(one, nonneg, e), _mm512_add_ps(one, e));
      __m512 g = _mm512_mul_ps(gr, sig);        // grad * (-y) * sigmoid(-y z) ...
      g = _mm512_mask_sub_ps(g, pos, zero, g);  // ... negated on the positive pair
      g = _mm512_maskz_mov_ps(t, g);
      gd = _mm512_fmadd_ps(g, d, gd);
      gs = _mm512_add_ps(gs, g);
      _mm512_storeu_ps(row + j0, g);
    }
    add_pd(gd, dlo, dhi);
    add_pd(gs, slo, shi);
  }
  *gdot += reduce_pd(dlo, dhi);
  *gsum += reduce_pd(slo, shi);
}

PYSSL_AVX512 void vector_math512(int fn, const float* x, float* out, int64_t n) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const __mmask16 t = tail_mask(j0, n);
    const __m512 v = _mm512_maskz_loadu_ps(t, x + j0);
    const __m512 r = fn == 0 ? exp512(v) : fn == 1 ? exp2_512(v) : softplus512(v);
    _mm512_mask_storeu_ps(out + j0, t, r);
  }
}

Kernels<float> avx512_kernels() {
  return {&gemm512,         &lse_fwd_tile512, &fold_lanes512,
          &lse_bwd_tile512, &sig_fwd_tile512, &sig_bwd_tile512};
}
#endif  // PYSSL_X86_KERNELS

template <typename A>
Kernels<A> kernels();
template <>
Kernels<double> kernels<double>() {
  return portable_kernels<double>();
}
template <>
Kernels<float> kernels<float>() {
#if PYSSL_X86_KERNELS
  if (current_isa() == Isa::avx512) return avx512_kernels();
  if (current_isa() == Isa::avx2) return avx2_kernels();
#endif
  return portable_kernels<float>();
}

// ---------------------------------------------------------------------------------------------
// The tiling plan, the packed operands and the task loop.

struct Plan {
  int64_t N, M, D, Dp, Mp;
  int64_t R, C;  // row / column tiles
  int64_t A, B;  // row / column chunks

  Plan(int64_t n, int64_t m, int64_t d)
      : N(n), M(m), D(d), Dp(round_up(d, kLanes)), Mp(round_up(m, kLanes)) {
    R = (N + kBM - 1) / kBM;
    C = (M + kBN - 1) / kBN;
    A = std::min(R, kChunkMax);
    B = std::min(C, kChunkMax);
    if (A > 0 && B > 0) {
      if (A < kChunkMax) B = std::min(C, std::max(B, kTasks / A));
      if (B < kChunkMax) A = std::min(R, std::max(A, kTasks / B));
    }
  }
  int64_t row_tile(int64_t a) const { return R * a / A; }  // first row tile of chunk a
  int64_t col_tile(int64_t b) const { return C * b / B; }
  int64_t rows(int64_t rt) const { return std::min(kBM, N - rt * kBM); }
  int64_t cols(int64_t ct) const { return std::min(kBN, M - ct * kBN); }
};

// q and k converted to A and packed for the three GEMMs (see the top of the file).
template <typename A>
struct Packed {
  Buffer<A> qf_buf, kb, kr, qr_buf;
  const A* qf = nullptr;  // qf_buf, or q itself when it is already A with D = Dp
  // GEMM3's B: qr_buf (strips), kr when q and k are the same tensor, or qf read row-major (for
  // few columns, where a strip's reuse does not pay for packing q).
  const A* qr = nullptr;
  int64_t qr_vs = 0, qr_ks = 0;
};

// Up to this many columns (M), GEMM3 reads q row-major instead of packing it into strips.
constexpr int64_t kRowMajorQ = 64;

template <typename T, typename A>
Packed<A> pack(const Plan& P, const View& q, const View& k, bool need_kr, bool need_qr) {
  const int64_t N = P.N, M = P.M, D = P.D, Dp = P.Dp, Mp = P.Mp;
  const T* qs = q.data<T>();
  const T* ks = k.data<T>();
  Packed<A> out;
  const bool alias = std::is_same<T, A>::value && D == Dp;
  const bool same = q.ptr == k.ptr && N == M;
  const bool qr_rows = need_qr && !same && M <= kRowMajorQ;
  if (!alias) out.qf_buf = Buffer<A>(N * Dp);
  out.kb = Buffer<A>(Mp * D);
  if (need_kr || (need_qr && same)) out.kr = Buffer<A>(Dp * M);
  if (need_qr && !same && !qr_rows) out.qr_buf = Buffer<A>(Dp * N);
  A* qf = alias ? nullptr : out.qf_buf.get();
  A* kb = out.kb.get();
  A* kr = out.kr.get();
  A* qr = need_qr && !same && !qr_rows ? out.qr_buf.get() : nullptr;
  out.qf = alias ? reinterpret_cast<const A*>(qs) : qf;
  constexpr int64_t rows_per_task = 64;
  if (qf || qr) {
    parallel_chunks(N, rows_per_task, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        if (qf) {
          for (int64_t d = 0; d < D; ++d) qf[i * Dp + d] = load(qs + i * D + d);
          for (int64_t d = D; d < Dp; ++d) qf[i * Dp + d] = A(0);
        }
        if (qr)
          for (int64_t d = 0; d < Dp; ++d)
            qr[(d / kLanes) * N * kLanes + i * kLanes + d % kLanes] = out.qf[i * Dp + d];
      }
    });
  }
  // kb: strips of 16 columns of k^T, zero beyond M.
  parallel_for(Mp / kLanes, [&](int64_t js) {
    A* dst = kb + js * D * kLanes;
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      const int64_t j = js * kLanes + lane;
      if (j < M) {
        for (int64_t d = 0; d < D; ++d) dst[d * kLanes + lane] = load(ks + j * D + d);
      } else {
        for (int64_t d = 0; d < D; ++d) dst[d * kLanes + lane] = A(0);
      }
    }
  });
  if (kr) {
    parallel_chunks(M, rows_per_task, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t d = 0; d < Dp; ++d)
          kr[(d / kLanes) * M * kLanes + j * kLanes + d % kLanes] =
              d < D ? A(load(ks + j * D + d)) : A(0);
    });
  }
  if (same) {
    out.qr = kr, out.qr_vs = M * kLanes, out.qr_ks = kLanes;
  } else if (qr_rows) {
    out.qr = out.qf, out.qr_vs = kLanes, out.qr_ks = Dp;
  } else {
    out.qr = qr, out.qr_vs = N * kLanes, out.qr_ks = kLanes;
  }
  return out;
}

// Per-thread scratch: a kBM x kBN tile and kBM x 16 lane-wise row statistics (m, l).
template <typename A>
struct Scratch {
  A* tile;
  A* lm;
  A* ll;
};
constexpr int64_t kScratch = kBM * kBN + 2 * kBM * kLanes;

// Runs task(a, b, scratch) for every chunk pair, dynamically scheduled (a task's result does not
// depend on the thread that runs it). The task must not throw.
template <typename A, typename F>
void run_tasks(const Plan& P, F&& task) {
  const int64_t tasks = P.A * P.B;
  if (tasks == 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), tasks));
  Buffer<A> scratch(threads * kScratch);
  A* base = scratch.get();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (int64_t t = 0; t < tasks; ++t) {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    A* mine = base + tid * kScratch;
    const FlushDenormals ftz;
    task(t / P.B, t % P.B, Scratch<A>{mine, mine + kBM * kBN, mine + kBM * kBN + kBM * kLanes});
  }
}

// mark0 of a tile: row i's marked pair is column i + offset, i.e. tile column mark0 + i.
inline int64_t tile_mark0(bool has, int64_t r0, int64_t offset, int64_t c0) {
  return has ? r0 + offset - c0 : kNoMark;
}

// GEMM1: the raw dot products of row tile rt and column tile ct into buf (ld kBN).
template <typename A>
void tile_dots(const Kernels<A>& K, const Plan& P, const Packed<A>& op, int64_t rt, int64_t ct,
               A* buf) {
  const int64_t r0 = rt * kBM, c0 = ct * kBN;
  const int64_t nstrips = (P.cols(ct) + kLanes - 1) / kLanes;
  K.gemm({P.rows(rt), nstrips, P.D, op.qf + r0 * P.Dp, P.Dp, 1,
          op.kb.get() + (c0 / kLanes) * P.D * kLanes, P.D * kLanes, kLanes, buf, kBN, false});
}

// GEMM2 and GEMM3 from the G tile in buf: dq rows of the tile += G k, dk rows += G^T q.
template <typename A>
void tile_grads(const Kernels<A>& K, const Plan& P, const Packed<A>& op, int64_t rt, int64_t ct,
                const A* buf, A* dq_rows, bool dq_acc, A* dk_rows, bool dk_acc) {
  const int64_t r0 = rt * kBM, c0 = ct * kBN, nr = P.rows(rt), nc = P.cols(ct);
  const int64_t nstrips = P.Dp / kLanes;
  if (dq_rows)
    K.gemm({nr, nstrips, nc, buf, kBN, 1, op.kr.get() + c0 * kLanes, P.M * kLanes, kLanes, dq_rows,
            P.Dp, dq_acc});
  if (dk_rows)
    K.gemm({nc, nstrips, nr, buf, 1, kBN, op.qr + r0 * op.qr_ks, op.qr_vs, op.qr_ks, dk_rows, P.Dp,
            dk_acc});
}

// out[i] = scale * sum_s part_s[i] over `slots` partials of [rows][Dp], stored as T [rows][D]:
// slot 0 at `first` (which may be `out` itself, see direct_slot), slots 1.. at `rest`.
template <typename T, typename A>
void merge_grad(const A* first, const A* rest, int64_t slots, int64_t rows, int64_t D, int64_t Dp,
                A scale, const View& out) {
  T* o = out.data<T>();
  if (static_cast<const void*>(first) != static_cast<const void*>(o)) prepare_output(out);
  parallel_chunks(rows, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t d = 0; d < D; ++d) {
        A v = first[i * Dp + d];
        for (int64_t s = 1; s < slots; ++s) v += rest[((s - 1) * rows + i) * Dp + d];
        store(o + i * D + d, scale * v);
      }
  });
}

// The output itself as slot 0 of a gradient's partials when it already is A [rows][Dp]: one
// [rows, D] partial less (8 MiB of the NT-Xent backward at 2N = 8192, D = 128), and the same
// summation order, so the same bits. Null when the output cannot serve.
template <typename T, typename A>
A* direct_slot(const Plan& P, const View& out) {
  if (!std::is_same<T, A>::value || P.D != P.Dp || !out.contiguous()) return nullptr;
  prepare_output(out);  // before its first touch, as merge_grad would have
  return reinterpret_cast<A*>(out.data<T>());
}

template <typename T>
void fill_zero(const View& out) {
  T* o = out.data<T>();
  const int64_t n = out.numel();
  using A = typename Acc<T>::type;
  for (int64_t i = 0; i < n; ++i) store(o + i, A(0));
}

// Merges `slots` partials (m, l) (slot stride ld) of n entries into lse = m + log(l), in double.
template <typename A>
void merge_lse(const A* m, const A* l, int64_t slots, int64_t n, int64_t ld, A* out) {
  for (int64_t i = 0; i < n; ++i) {
    double mm = m[i], ll = l[i];
    for (int64_t s = 1; s < slots; ++s) lse_merge<double>(mm, ll, m[s * ld + i], l[s * ld + i]);
    out[i] = static_cast<A>(lse_value(mm, ll));
  }
}

// An exclusion offset that can never hit a pair is no exclusion (and keeps i + offset in range).
bool effective_exclude(bool has, int64_t offset, int64_t N, int64_t M) {
  return has && offset < M && offset > -N;
}

template <typename T>
void lse_forward_impl(const View& q, const View& k, double scale_d, int64_t offset, bool has_ex,
                      const View& row_lse, const View& col_lse) {
  using A = typename Acc<T>::type;
  const Plan P(q.size(0), k.size(0), q.size(1));
  const bool rows = !row_lse.none(), cols = !col_lse.none();
  if (!rows && !cols) return;
  const A ninf = -std::numeric_limits<A>::infinity();
  // An empty side (M = 0 for rows, N = 0 for columns) runs no task: logsumexp of nothing.
  if (rows && P.M == 0) std::fill(row_lse.data<A>(), row_lse.data<A>() + P.N, ninf);
  if (cols && P.N == 0) std::fill(col_lse.data<A>(), col_lse.data<A>() + P.M, ninf);
  if (P.N == 0 || P.M == 0) return;
  const Kernels<A> K = kernels<A>();
  const A scale = static_cast<A>(scale_d);
  has_ex = effective_exclude(has_ex, offset, P.N, P.M);
  const Packed<A> op = pack<T, A>(P, q, k, false, false);
  Buffer<A> rm(rows ? P.B * P.N : 0), rl(rows ? P.B * P.N : 0);
  Buffer<A> cm(cols ? P.A * P.Mp : 0), cl(cols ? P.A * P.Mp : 0);
  run_tasks<A>(P, [&](int64_t a, int64_t b, Scratch<A> w) {
    const int64_t rt0 = P.row_tile(a), rt1 = P.row_tile(a + 1);
    const int64_t ct0 = P.col_tile(b), ct1 = P.col_tile(b + 1);
    A* um = cols ? cm.get() + a * P.Mp : nullptr;
    A* ul = cols ? cl.get() + a * P.Mp : nullptr;
    if (cols) {
      std::fill(um + ct0 * kBN, um + std::min(P.Mp, ct1 * kBN), ninf);
      std::fill(ul + ct0 * kBN, ul + std::min(P.Mp, ct1 * kBN), A(0));
    }
    for (int64_t rt = rt0; rt < rt1; ++rt) {
      const int64_t r0 = rt * kBM, nr = P.rows(rt);
      if (rows) {
        std::fill(w.lm, w.lm + nr * kLanes, ninf);
        std::fill(w.ll, w.ll + nr * kLanes, A(0));
      }
      for (int64_t ct = ct0; ct < ct1; ++ct) {
        const int64_t c0 = ct * kBN;
        tile_dots(K, P, op, rt, ct, w.tile);
        K.lse_fwd_tile(w.tile, nr, P.cols(ct), scale, tile_mark0(has_ex, r0, offset, c0),
                       rows ? w.lm : nullptr, rows ? w.ll : nullptr, cols ? um + c0 : nullptr,
                       cols ? ul + c0 : nullptr);
      }
      if (rows) K.fold_lanes(w.lm, w.ll, nr, rm.get() + b * P.N + r0, rl.get() + b * P.N + r0);
    }
  });
  if (rows) merge_lse(rm.get(), rl.get(), P.B, P.N, P.N, row_lse.data<A>());
  if (cols) merge_lse(cm.get(), cl.get(), P.A, P.M, P.Mp, col_lse.data<A>());
}

// The backward of both families: G from each tile (by `make_g`, which adds the tile's sum G dot
// and sum G to its last two arguments), then dq, dk and the two sums.
template <typename T, typename A, typename MakeG>
void backward_driver(const Plan& P, const Kernels<A>& K, const View& q, const View& k, A scale,
                     const View& dq, const View& dk, A* sums_out, MakeG&& make_g) {
  sums_out[0] = sums_out[1] = A(0);
  const bool empty = P.N == 0 || P.M == 0;
  const bool want_dq = !dq.none() && P.D > 0 && !empty;
  const bool want_dk = !dk.none() && P.D > 0 && !empty;
  if (!dq.none() && !want_dq) fill_zero<T>(dq);
  if (!dk.none() && !want_dk) fill_zero<T>(dk);
  if (empty) return;
  const Packed<A> op = pack<T, A>(P, q, k, want_dq, want_dk);
  A* dq0 = want_dq ? direct_slot<T, A>(P, dq) : nullptr;
  A* dk0 = want_dk ? direct_slot<T, A>(P, dk) : nullptr;
  Buffer<A> dqp(want_dq ? (P.B - (dq0 ? 1 : 0)) * P.N * P.Dp : 0);
  Buffer<A> dkp(want_dk ? (P.A - (dk0 ? 1 : 0)) * P.M * P.Dp : 0);
  // Slot s of the dq partials (one per column chunk) and of the dk partials (one per row chunk).
  auto dq_slot = [&](int64_t s) -> A* {
    return dq0 ? (s == 0 ? dq0 : dqp.get() + (s - 1) * P.N * P.Dp) : dqp.get() + s * P.N * P.Dp;
  };
  auto dk_slot = [&](int64_t s) -> A* {
    return dk0 ? (s == 0 ? dk0 : dkp.get() + (s - 1) * P.M * P.Dp) : dkp.get() + s * P.M * P.Dp;
  };
  std::vector<double> sums(static_cast<size_t>(2 * P.A * P.B), 0.0);
  run_tasks<A>(P, [&](int64_t a, int64_t b, Scratch<A> w) {
    const int64_t rt0 = P.row_tile(a), rt1 = P.row_tile(a + 1);
    const int64_t ct0 = P.col_tile(b), ct1 = P.col_tile(b + 1);
    double gd = 0, gs = 0;
    for (int64_t rt = rt0; rt < rt1; ++rt) {
      for (int64_t ct = ct0; ct < ct1; ++ct) {
        tile_dots(K, P, op, rt, ct, w.tile);
        make_g(rt, ct, w.tile, gd, gs);
        tile_grads(K, P, op, rt, ct, w.tile, want_dq ? dq_slot(b) + rt * kBM * P.Dp : nullptr,
                   ct != ct0, want_dk ? dk_slot(a) + ct * kBN * P.Dp : nullptr, rt != rt0);
      }
    }
    sums[static_cast<size_t>(2 * (a * P.B + b))] = gd;
    sums[static_cast<size_t>(2 * (a * P.B + b) + 1)] = gs;
  });
  double gd = 0, gs = 0;  // fixed order: deterministic
  for (int64_t t = 0; t < P.A * P.B; ++t) {
    gd += sums[static_cast<size_t>(2 * t)];
    gs += sums[static_cast<size_t>(2 * t + 1)];
  }
  sums_out[0] = static_cast<A>(gd);
  sums_out[1] = static_cast<A>(gs);
  if (want_dq)
    merge_grad<T, A>(dq_slot(0), dq0 ? dqp.get() : dq_slot(1), P.B, P.N, P.D, P.Dp, scale, dq);
  if (want_dk)
    merge_grad<T, A>(dk_slot(0), dk0 ? dkp.get() : dk_slot(1), P.A, P.M, P.D, P.Dp, scale, dk);
}

// The positive pairs (i, row_pos[i]) and (col_pos[j], j) that fall in one tile, with their dot
// products. A positive outside [0, M) (rows) or [0, N) (columns), or on an excluded pair,
// matches nothing.
template <typename A>
struct PositiveHits {
  struct Hit {
    int64_t i, j;  // tile-local row and column
    bool row;      // a row positive (weight rw[r0 + i]) or a column one (cw[c0 + j])
    A dot;
  };
  std::vector<Hit> hits;

  void collect(const A* buf, int64_t r0, int64_t nr, int64_t c0, int64_t nc, const int64_t* rp,
               const int64_t* cp, bool has_ex, int64_t offset) {
    auto excluded = [&](int64_t gi, int64_t gj) { return has_ex && gj == gi + offset; };
    if (rp) {
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t j = rp[r0 + i] - c0;
        if (j >= 0 && j < nc && !excluded(r0 + i, c0 + j))
          hits.push_back({i, j, true, buf[i * kBN + j]});
      }
    }
    if (cp) {
      for (int64_t j = 0; j < nc; ++j) {
        const int64_t i = cp[c0 + j] - r0;
        if (i >= 0 && i < nr && !excluded(r0 + i, c0 + j))
          hits.push_back({i, j, false, buf[i * kBN + j]});
      }
    }
  }

  // G_ij -= weight at every hit; returns the change of sum G dot.
  double subtract(A* buf, int64_t r0, int64_t c0, const A* rw, const A* cw) const {
    double change = 0;
    for (const Hit& h : hits) {
      const A w = h.row ? rw[r0 + h.i] : cw[c0 + h.j];
      buf[h.i * kBN + h.j] -= w;
      change -= static_cast<double>(w) * static_cast<double>(h.dot);
    }
    return change;
  }
};

template <typename T>
void lse_backward_impl(const View& q, const View& k, double scale_d, int64_t offset, bool has_ex,
                       const View& row_lse, const View& row_w, const View& row_pos,
                       const View& col_lse, const View& col_w, const View& col_pos, const View& dq,
                       const View& dk, const View& dscale) {
  using A = typename Acc<T>::type;
  const Plan P(q.size(0), k.size(0), q.size(1));
  const Kernels<A> K = kernels<A>();
  const A scale = static_cast<A>(scale_d);
  has_ex = effective_exclude(has_ex, offset, P.N, P.M);
  const bool use_row = !row_w.none(), use_col = !col_w.none();
  A sums[2] = {0, 0};
  if (!use_row && !use_col) {  // G = 0
    if (!dq.none()) fill_zero<T>(dq);
    if (!dk.none()) fill_zero<T>(dk);
  } else {
    // The column statistics padded to Mp (lse +inf, weight 0): whole vectors may be read past M.
    Buffer<A> cl(use_col ? P.Mp : 0), cw(use_col ? P.Mp : 0);
    if (use_col) {
      for (int64_t j = 0; j < P.Mp; ++j) {
        const bool in = j < P.M;
        cl.get()[j] = in ? col_lse.data<A>()[j] : std::numeric_limits<A>::infinity();
        cw.get()[j] = in ? col_w.data<A>()[j] : A(0);
      }
    }
    const A* rl = use_row ? row_lse.data<A>() : nullptr;
    const A* rw = use_row ? row_w.data<A>() : nullptr;
    const int64_t* rp = use_row && !row_pos.none() ? row_pos.data<int64_t>() : nullptr;
    const int64_t* cp = use_col && !col_pos.none() ? col_pos.data<int64_t>() : nullptr;
    backward_driver<T, A>(
        P, K, q, k, scale, dq, dk, sums, [&](int64_t rt, int64_t ct, A* buf, double& gd, double&) {
          const int64_t r0 = rt * kBM, c0 = ct * kBN, nr = P.rows(rt), nc = P.cols(ct);
          // The positives' one-hot is subtracted from G in the tile (softmax - onehot, as
          // eager cross-entropy), not from the gradients afterwards, where it would cancel.
          // Their dot products are read before the tile turns into G.
          PositiveHits<A> hits;
          hits.collect(buf, r0, nr, c0, nc, rp, cp, has_ex, offset);
          gd +=
              K.lse_bwd_tile(buf, nr, nc, scale, tile_mark0(has_ex, r0, offset, c0),
                             use_row ? rl + r0 : nullptr, use_row ? rw + r0 : nullptr,
                             use_col ? cl.get() + c0 : nullptr, use_col ? cw.get() + c0 : nullptr);
          gd += hits.subtract(buf, r0, c0, rw, cw.get());
        });
  }
  if (!dscale.none()) dscale.data<A>()[0] = sums[0];
}

template <typename T>
void sigmoid_forward_impl(const View& q, const View& k, double scale_d, double bias_d,
                          const View& loss) {
  using A = typename Acc<T>::type;
  const Plan P(q.size(0), k.size(0), q.size(1));
  const Kernels<A> K = kernels<A>();
  const A scale = static_cast<A>(scale_d), bias = static_cast<A>(bias_d);
  std::vector<double> part(static_cast<size_t>(P.A * P.B), 0.0);
  if (P.N > 0 && P.M > 0) {
    const Packed<A> op = pack<T, A>(P, q, k, false, false);
    run_tasks<A>(P, [&](int64_t a, int64_t b, Scratch<A> w) {
      double sum = 0;
      for (int64_t rt = P.row_tile(a); rt < P.row_tile(a + 1); ++rt) {
        for (int64_t ct = P.col_tile(b); ct < P.col_tile(b + 1); ++ct) {
          tile_dots(K, P, op, rt, ct, w.tile);
          sum += K.sig_fwd_tile(w.tile, P.rows(rt), P.cols(ct), scale, bias,
                                tile_mark0(true, rt * kBM, 0, ct * kBN));
        }
      }
      part[static_cast<size_t>(a * P.B + b)] = sum;
    });
  }
  double total = 0;
  for (double v : part) total += v;
  loss.data<A>()[0] = static_cast<A>(total);
}

template <typename T>
void sigmoid_backward_impl(const View& q, const View& k, double scale_d, double bias_d,
                           const View& grad, const View& dq, const View& dk, const View& dscale,
                           const View& dbias) {
  using A = typename Acc<T>::type;
  const Plan P(q.size(0), k.size(0), q.size(1));
  const Kernels<A> K = kernels<A>();
  const A scale = static_cast<A>(scale_d), bias = static_cast<A>(bias_d);
  const A g = grad.data<A>()[0];
  A sums[2] = {0, 0};
  backward_driver<T, A>(P, K, q, k, scale, dq, dk, sums,
                        [&](int64_t rt, int64_t ct, A* buf, double& gd, double& gs) {
                          K.sig_bwd_tile(buf, P.rows(rt), P.cols(ct), scale, bias, g,
                                         tile_mark0(true, rt * kBM, 0, ct * kBN), &gd, &gs);
                        });
  if (!dscale.none()) dscale.data<A>()[0] = sums[0];
  if (!dbias.none()) dbias.data<A>()[0] = sums[1];
}

}  // namespace

template <>
Kernels<float> tile_kernels<float>() {
  return kernels<float>();
}
template <>
Kernels<double> tile_kernels<double>() {
  return kernels<double>();
}

// ---------------------------------------------------------------------------------------------
// Entry points.
//
// The kernels transpose-pack k (GEMM1's B) but only copy q, so with more columns than rows they
// run on the transposed problem s^T = k q^T (rows and columns, q and k, dq and dk swapped; the
// excluded pairs j = i + offset become i = j - offset; SigLIP's diagonal stays): the larger
// operand is then the cheap one to pack (MoCo: 256 queries against a queue of 65536 keys).
// The choice follows the shape only, so results stay independent of the thread count.

namespace {

bool transposed(const View& q, const View& k) { return k.size(0) > q.size(0); }

}  // namespace

void lse_forward(const View& q, const View& k, double scale, int64_t exclude_offset,
                 bool has_exclude, const View& row_lse, const View& col_lse, uintptr_t) {
  check_inputs(q, k, scale);
  const DType acc = acc_dtype(q.dtype);
  check_vector(row_lse, "row_lse", q.size(0), acc);
  check_vector(col_lse, "col_lse", k.size(0), acc);
  // An offset that hits no pair is dropped first, so that negating it cannot overflow.
  const bool ex = effective_exclude(has_exclude, exclude_offset, q.size(0), k.size(0));
  const int64_t off = ex ? exclude_offset : 0;
  dispatch_float(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (transposed(q, k))
      lse_forward_impl<T>(k, q, scale, -off, ex, col_lse, row_lse);
    else
      lse_forward_impl<T>(q, k, scale, off, ex, row_lse, col_lse);
  });
}

void lse_backward(const View& q, const View& k, double scale, int64_t exclude_offset,
                  bool has_exclude, const View& row_lse, const View& row_w, const View& row_pos,
                  const View& col_lse, const View& col_w, const View& col_pos, const View& dq,
                  const View& dk, const View& dscale, uintptr_t) {
  check_inputs(q, k, scale);
  const DType acc = acc_dtype(q.dtype);
  check_vector(row_lse, "row_lse", q.size(0), acc);
  check_vector(row_w, "row_w", q.size(0), acc);
  check_vector(col_lse, "col_lse", k.size(0), acc);
  check_vector(col_w, "col_w", k.size(0), acc);
  check_positions(row_pos, "row_pos", q.size(0));
  check_positions(col_pos, "col_pos", k.size(0));
  check(row_w.none() || !row_lse.none(), "row_lse: required when row_w is given");
  check(col_w.none() || !col_lse.none(), "col_lse: required when col_w is given");
  check_grad(dq, "dq", q, "q");
  check_grad(dk, "dk", k, "k");
  check_scalar(dscale, "dscale", acc);
  const bool ex = effective_exclude(has_exclude, exclude_offset, q.size(0), k.size(0));
  const int64_t off = ex ? exclude_offset : 0;
  dispatch_float(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (transposed(q, k))
      lse_backward_impl<T>(k, q, scale, -off, ex, col_lse, col_w, col_pos, row_lse, row_w, row_pos,
                           dk, dq, dscale);
    else
      lse_backward_impl<T>(q, k, scale, off, ex, row_lse, row_w, row_pos, col_lse, col_w, col_pos,
                           dq, dk, dscale);
  });
}

void sigmoid_forward(const View& q, const View& k, double scale, double bias, const View& loss,
                     uintptr_t) {
  check_inputs(q, k, scale);
  check(std::isfinite(bias), "bias: expected a finite number");
  check(!loss.none(), "loss: required");
  check_scalar(loss, "loss", acc_dtype(q.dtype));
  dispatch_float(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (transposed(q, k))
      sigmoid_forward_impl<T>(k, q, scale, bias, loss);
    else
      sigmoid_forward_impl<T>(q, k, scale, bias, loss);
  });
}

void sigmoid_backward(const View& q, const View& k, double scale, double bias, const View& grad,
                      const View& dq, const View& dk, const View& dscale, const View& dbias,
                      uintptr_t) {
  check_inputs(q, k, scale);
  check(std::isfinite(bias), "bias: expected a finite number");
  const DType acc = acc_dtype(q.dtype);
  check(!grad.none(), "grad: required");
  check_scalar(grad, "grad", acc);
  check_grad(dq, "dq", q, "q");
  check_grad(dk, "dk", k, "k");
  check_scalar(dscale, "dscale", acc);
  check_scalar(dbias, "dbias", acc);
  dispatch_float(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (transposed(q, k))
      sigmoid_backward_impl<T>(k, q, scale, bias, grad, dk, dq, dscale, dbias);
    else
      sigmoid_backward_impl<T>(q, k, scale, bias, grad, dq, dk, dscale, dbias);
  });
}

void set_isa(const std::string& name) {
  if (name == "auto") {  // the default again (PYSSL_FORCE_PORTABLE=1 still forces portable)
    isa_state().store(static_cast<int>(best_isa()));
  } else if (name == "portable") {
    isa_state().store(static_cast<int>(Isa::portable));
  } else if (name == "avx2") {
    check(cpu_has(Isa::avx2), "isa: this CPU (or build) has no AVX2 + FMA");
    isa_state().store(static_cast<int>(Isa::avx2));
  } else if (name == "avx512") {
    check(cpu_has(Isa::avx512), "isa: this CPU (or build) has no AVX-512F/BW/VL/DQ");
    isa_state().store(static_cast<int>(Isa::avx512));
  } else {
    fail("isa: expected 'auto', 'portable', 'avx2' or 'avx512', got '" + name + "'");
  }
}

std::string isa() {
  const Isa i = current_isa();
  return i == Isa::avx512 ? "avx512" : i == Isa::avx2 ? "avx2" : "portable";
}

void vector_math(const std::string& fn, const View& x, const View& out) {
  const int f = fn == "exp" ? 0 : fn == "exp2" ? 1 : fn == "softplus" ? 2 : -1;
  check(f >= 0, "fn: expected 'exp', 'exp2' or 'softplus', got '" + fn + "'");
  check_view(x, "x", 1, true);
  check(x.dtype == DType::f32, "x: expected float32");
  check_view(out, "out", 1, true);
  check(out.dtype == DType::f32 && out.shape == x.shape, "out: expected x's shape and float32");
  const float* xs = x.data<float>();
  float* o = out.data<float>();
  const int64_t n = x.numel();
#if PYSSL_X86_KERNELS
  if (current_isa() == Isa::avx512) return vector_math512(f, xs, o, n);
  if (current_isa() == Isa::avx2) return vector_math_avx2(f, xs, o, n);
#endif
  for (int64_t i = 0; i < n; ++i)
    o[i] = f == 0 ? exp_portable(xs[i]) : f == 1 ? exp2_portable(xs[i]) : softplus_portable(xs[i]);
}

}  // namespace pyssl::contrastive::cpu
