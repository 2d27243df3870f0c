// Contrastive similarity (InfoNCE, NT-Xent, CLIP, SigLIP, MoCo): the per-element math shared by
// the CPU and CUDA kernels, and the host entry points.
//
// Both primitives work on s_ij = scale * dot(q_i, k_j) for q [N, D] and k [M, D] without ever
// holding the N x M matrix: the kernels tile it, keep per-row / per-column log-sum-exp statistics
// in the forward and recompute tiles in the backward. Arithmetic and statistics are in the
// accumulation type A: float, or double for float64 inputs.
#pragma once

#include <cmath>
#include <limits>

#include "pyssl/common.h"

namespace pyssl::contrastive {

// Running log-sum-exp as (max m, sum l of exp(x - m)); the empty set is (-inf, 0).
template <typename A>
struct Lse {
  A m = -std::numeric_limits<A>::infinity();
  A l = A(0);
};

// The reference point an exp is taken against: m itself, or 0 when m = -inf (so that an empty
// set never produces -inf - -inf = NaN).
template <typename A>
PYSSL_HD A lse_ref(A m) {
  return m == -std::numeric_limits<A>::infinity() ? A(0) : m;
}

// Merges (m2, l2) into (m, l). Exact up to rounding; an empty side changes nothing.
template <typename A>
PYSSL_HD void lse_merge(A& m, A& l, A m2, A l2) {
  using std::exp;
  const A mn = m > m2 ? m : m2;
  const A r = lse_ref(mn);
  l = l * exp(m - r) + l2 * exp(m2 - r);
  m = mn;
}

// log(sum exp) of a finished (m, l): -inf for the empty set.
template <typename A>
PYSSL_HD A lse_value(A m, A l) {
  using std::log;
  if (!(l > A(0))) return -std::numeric_limits<A>::infinity();
  return m + log(l);
}

// Numerically stable log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)).
template <typename A>
PYSSL_HD A log_sigmoid(A x) {
  using std::exp;
  using std::fabs;
  using std::log1p;
  return (x < A(0) ? x : A(0)) - log1p(exp(-fabs(x)));
}

// sigmoid(x) without overflow for either sign.
template <typename A>
PYSSL_HD A sigmoid(A x) {
  using std::exp;
  using std::fabs;
  const A t = exp(-fabs(x));
  return x >= A(0) ? A(1) / (A(1) + t) : t / (A(1) + t);
}

// Host entry points. q [N, D] and k [M, D] are contiguous and of one floating dtype; statistics,
// weights and scalars are contiguous views of the accumulation dtype (float32, or float64 for
// float64 inputs); dq/dk have the inputs' dtype. Any output may be View::none() to skip it.
//
// lse_forward: row_lse[i] = logsumexp_j s_ij and col_lse[j] = logsumexp_i s_ij over the pairs
//   that are not excluded (j == i + exclude_offset when has_exclude); -inf for an empty set.
// lse_backward: with G_ij = row_w[i] (exp(s_ij - row_lse[i]) - [j == row_pos[i]])
//   + col_w[j] (exp(s_ij - col_lse[j]) - [i == col_pos[j]]) (0 on excluded pairs; the row terms
//   need row_w, the column terms col_w; an absent or out-of-range int64 *_pos subtracts
//   nothing): dq = scale G k, dk = scale G^T q, dscale[0] = sum_ij G_ij dot(q_i, k_j).
// sigmoid_forward: loss[0] = sum_ij -log_sigmoid(y_ij (s_ij + bias)), y = +1 iff i == j.
// sigmoid_backward: G_ij = grad[0] * (-y_ij sigmoid(-y_ij z_ij)); dq = scale G k,
//   dk = scale G^T q, dscale[0] = sum G_ij dot(q_i, k_j), dbias[0] = sum G_ij.
// Results do not depend on the thread count. Shapes and dtypes are checked (ValueError) before
// any memory is touched.
#define PYSSL_CONTRASTIVE_API(ns)                                                                  \
  namespace ns {                                                                                   \
  void lse_forward(const View& q, const View& k, double scale, int64_t exclude_offset,             \
                   bool has_exclude, const View& row_lse, const View& col_lse, uintptr_t stream);  \
  void lse_backward(const View& q, const View& k, double scale, int64_t exclude_offset,            \
                    bool has_exclude, const View& row_lse, const View& row_w, const View& row_pos, \
                    const View& col_lse, const View& col_w, const View& col_pos, const View& dq,   \
                    const View& dk, const View& dscale, uintptr_t stream);                         \
  void sigmoid_forward(const View& q, const View& k, double scale, double bias, const View& loss,  \
                       uintptr_t stream);                                                          \
  void sigmoid_backward(const View& q, const View& k, double scale, double bias, const View& grad, \
                        const View& dq, const View& dk, const View& dscale, const View& dbias,     \
                        uintptr_t stream);                                                         \
  }

PYSSL_CONTRASTIVE_API(cpu)

// CPU-only controls and test hooks.
namespace cpu {
// The instruction set of the float32 kernels: "avx512" (AVX-512F/BW/VL/DQ), "avx2" (AVX2 + FMA)
// or "portable" (plain C++ for the baseline ISA: any x86-64). "auto" picks the best the CPU has;
// PYSSL_FORCE_PORTABLE=1 in the environment makes "portable" the default. float64 always runs
// the portable kernels.
void set_isa(const std::string& name);
std::string isa();
// Applies the kernels' vectorised float32 math of the current ISA elementwise ("exp", "exp2" or
// "softplus" = log1p(exp(x))), for tests against a float64 reference.
void vector_math(const std::string& fn, const View& x, const View& out);
}  // namespace cpu

}  // namespace pyssl::contrastive
