// The tile kernels of the contrastive CPU family (a register-blocked GEMM and the online
// log-sum-exp epilogues), shared with other families whose losses are a softmax over a large
// matrix product: the masked-LM loss of the text family runs on them.
#pragma once

#include <cstdint>
#include <limits>

#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (SSE: the x86-64 baseline)
#endif

#include "pyssl/common.h"

namespace pyssl::contrastive::cpu {

constexpr int64_t kLanes = 16;  // width of a packed B strip, in elements
constexpr int64_t kBM = 128;    // rows of a tile
constexpr int64_t kBN = 128;    // columns of a tile (a multiple of 2 * kLanes)
constexpr int64_t kKC = 256;    // k-block of a GEMM (keeps a B panel in L1)

// The kernel interface. A GEMM computes C[m x 16 nstrips] (+)= A(m x k) B(k x 16 nstrips) with
// A(r, kk) = a[r * ars + kk * acs] (ars == 1 or acs == 1) and
// B(kk, 16 v + lane) = b[v * bvs + kk * bks + lane] (packed strips: bks = 16; a row-major
// matrix with row stride ld: bvs = 16, bks = ld).

template <typename A>
struct Gemm {
  int64_t m, nstrips, k;
  const A* a;
  int64_t ars, acs;
  const A* b;
  int64_t bvs, bks;
  A* c;
  int64_t ldc;
  bool accumulate;
};

// Tile epilogues. A tile is nr x nc dot products in a buffer of row stride kBN. Row i's marked
// pair (excluded for the lse family, positive for SigLIP) is tile column mark0 + i when that lies
// in [0, nc). Every exponential of the lse family is e^t of a difference t = s - ref formed
// first in float (exactly, for the nearby values that dominate a sum; with one rounding in the
// backward's fused multiply-subtract), then evaluated as 2^(t log2 e): the relative error is
// about |t| float32 ulps, so the terms near the maximum are as exact as e^t itself. Sums that
// span a tile accumulate in double.
template <typename A>
struct Kernels {
  void (*gemm)(const Gemm<A>& g);
  // dot -> s = scale dot in place (-inf on the marked pair and in the padding up to a multiple
  // of 16). With lm/ll ([nr][16]): merges row i's values into its 16 lane-wise running
  // (max, sum exp); with cm/cl ([nc]): merges each column's into its running (max, sum exp).
  void (*lse_fwd_tile)(A* s, int64_t nr, int64_t nc, A scale, int64_t mark0, A* lm, A* ll, A* cm,
                       A* cl);
  // Folds the 16 lanes of n rows: m[i] = max over lanes, l[i] = sum l_lane exp(m_lane - m[i]).
  void (*fold_lanes)(const A* lm, const A* ll, int64_t n, A* m, A* l);
  // dot -> G in place: G = rw[i] exp(s - rl[i]) + cw[j] exp(s - cl[j]) (a term is left out when
  // its rl / cl is null), 0 on the marked pair. Returns sum G dot.
  double (*lse_bwd_tile)(A* s, int64_t nr, int64_t nc, A scale, int64_t mark0, const A* rl,
                         const A* rw, const A* cl, const A* cw);
  // Returns sum -log_sigmoid(y (scale dot + bias)), y = +1 on the marked pair, else -1.
  double (*sig_fwd_tile)(const A* s, int64_t nr, int64_t nc, A scale, A bias, int64_t mark0);
  // dot -> G = grad * (-y sigmoid(-y z)) in place; adds sum G dot and sum G to gdot and gsum.
  void (*sig_bwd_tile)(A* s, int64_t nr, int64_t nc, A scale, A bias, A grad, int64_t mark0,
                       double* gdot, double* gsum);
};

constexpr int64_t kNoMark = std::numeric_limits<int64_t>::min() / 4;  // mark0 of "no marks"

// The kernels of the instruction set selected now (set_isa): float32 runs AVX-512, AVX2 or the
// portable C++; float64 always the portable C++.
template <typename A>
Kernels<A> tile_kernels();

// Flush-to-zero and denormals-are-zero while a task runs, restored after. The epilogues take the
// exponential of every pair; masked pairs (-inf) and pairs far below the row maximum underflow,
// and without FTZ each underflowing vector costs a microcode assist of ~100+ cycles (measured:
// 45% of the time of a 1 x 65536 problem, and low temperatures underflow most pairs). Values
// below 2^-126 are far below every tolerance of a log-sum-exp or a gradient here.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__SSE2__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

}  // namespace pyssl::contrastive::cpu
