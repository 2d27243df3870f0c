// CPU kernels of the text family: BERT-style token masking (OpenMP over tokens) and the chunked
// masked-LM loss, which runs on the contrastive family's tile kernels.
//
// The loss. Rows of `hidden` with a label (M of N) are gathered once into hs [M][Hp] (float32,
// or double for float64; a trailing 1 column carries the bias, and Hp rounds H (+1) up to 16).
// The vocabulary is cut into chunks of kChunk rows of `weight`; a chunk is packed (as strips of
// its transpose for the logits GEMM, and row-major for the gradient GEMM) and then swept by
// kBM x kBN tiles of logits. The forward keeps per-row (max, sum exp) statistics; the backward
// recomputes each tile, turns it into G = g (softmax - onehot) in place and runs
// dh += G w_chunk and dw_chunk += G^T h. So at most a tile of logits per thread exists, and the
// extra memory is the packed rows plus one dh partial per slot.
//
// Determinism. The chunks are grouped into kSlots contiguous slots from the shape alone; a slot
// is one task and writes its own statistics and dh partial, merged in slot order afterwards.
// A chunk's dw and dbias rows belong to exactly one task.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "contrastive/contrastive.h"
#include "contrastive/contrastive_tiles.h"
#include "pyssl/parallel.h"
#include "text/text.h"

namespace pyssl::text::cpu {
namespace {

using contrastive::lse_merge;
using contrastive::lse_value;
using contrastive::cpu::FlushDenormals;
using contrastive::cpu::Gemm;
using contrastive::cpu::kBM;
using contrastive::cpu::kBN;
using contrastive::cpu::Kernels;
using contrastive::cpu::kLanes;
using contrastive::cpu::kNoMark;
using contrastive::cpu::tile_kernels;

constexpr int64_t kChunk = 1024;  // vocabulary rows per packed chunk (a multiple of kBN)
constexpr int64_t kSlots = 16;    // tasks aimed at (fixed: results follow the shape only)

inline std::string str(int64_t v) { return std::to_string(v); }

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void check_ids(const View& v, const char* name, int64_t B, int64_t T) {
  check_index_view(v, name, 2);
  check(v.size(0) == B && v.size(1) == T,
        std::string(name) + ": expected shape [" + str(B) + ", " + str(T) + "]");
}

// Checks lo <= v < hi for every element; the error names the first offender.
void check_range(const View& v, const char* name, int64_t lo, int64_t hi, const char* what) {
  const int64_t* p = v.data<int64_t>();
  const int64_t n = v.numel();
  for (int64_t i = 0; i < n; ++i)
    if (p[i] < lo || p[i] >= hi)
      fail(std::string(name) + ": " + what + " " + str(p[i]) + " at flat position " + str(i) +
           " is out of range [" + str(lo) + ", " + str(hi) + ")");
}

void check_prob(double p, const char* name) {
  check(p >= 0.0 && p <= 1.0,
        std::string(name) + ": expected a probability in [0, 1], got " + std::to_string(p));
}

}  // namespace

void mask_tokens(const View& input_ids, const View& special, const View& word_ids, uint64_t seed,
                 int64_t vocab_size, int64_t mask_token_id, double prob, double mask_replace_prob,
                 double random_replace_prob, const View& masked, const View& labels) {
  check_index_view(input_ids, "input_ids", 2);
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  check(vocab_size >= 1 && vocab_size < (int64_t(1) << 32),
        "vocab_size: expected 1 <= vocab_size < 2^32, got " + str(vocab_size));
  check(mask_token_id >= 0 && mask_token_id < vocab_size,
        "mask_token_id: expected a token id in [0, vocab_size), got " + str(mask_token_id));
  check(B * T < (int64_t(1) << 32), "input_ids: at most 2^32 tokens per call");
  check_prob(prob, "mlm_probability");
  check_prob(mask_replace_prob, "mask_replace_prob");
  check_prob(random_replace_prob, "random_replace_prob");
  check(mask_replace_prob + random_replace_prob <= 1.0 + 1e-12,
        "random_replace_prob: mask_replace_prob + random_replace_prob must not exceed 1");
  if (!special.none()) {
    check_view(special, "special_tokens_mask", 2, false);
    check(special.dtype == DType::b8, "special_tokens_mask: expected a bool tensor");
    check(special.size(0) == B && special.size(1) == T,
          "special_tokens_mask: expected input_ids' shape");
  }
  if (!word_ids.none()) {
    check_ids(word_ids, "word_ids", B, T);
    check_range(word_ids, "word_ids", -1, std::max<int64_t>(T, 1), "word id");
  }
  check_ids(masked, "masked", B, T);
  check_ids(labels, "labels", B, T);
  check_range(input_ids, "input_ids", 0, vocab_size, "token id");

  const int64_t* ids = input_ids.data<int64_t>();
  const uint8_t* sp = special.none() ? nullptr : special.data<uint8_t>();
  const int64_t* wid = word_ids.none() ? nullptr : word_ids.data<int64_t>();
  int64_t* out = masked.data<int64_t>();
  int64_t* lab = labels.data<int64_t>();
  const uint32_t s0 = static_cast<uint32_t>(seed), s1 = static_cast<uint32_t>(seed >> 32);
  const float p = static_cast<float>(prob), mr = static_cast<float>(mask_replace_prob);
  const float rr = static_cast<float>(random_replace_prob);
  parallel_chunks(B * T, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / T, t = i % T;
      const int64_t w = wid ? wid[i] : t;
      bool chosen = w >= 0 && !(sp && sp[i]);
      if (chosen) {
        const uint32_t counter = static_cast<uint32_t>(b * T + w);
        chosen = draw_uniform(s0, s1, kChooseStream, counter) < p;
      }
      if (!chosen) {
        out[i] = ids[i];
        lab[i] = -100;
        continue;
      }
      lab[i] = ids[i];
      const uint32_t counter = static_cast<uint32_t>(i);
      const int cls = token_class(draw_uniform(s0, s1, kClassStream, counter), mr, rr);
      out[i] = cls == 0   ? mask_token_id
               : cls == 1 ? draw_below(s0, s1, kTokenStream, counter, vocab_size)
                          : ids[i];
    }
  });
}

namespace {

// Shapes, dtypes and label range of the loss entry points; returns the labelled rows.
std::vector<int64_t> check_loss_inputs(const View& hidden, const View& weight, const View& bias,
                                       const View& labels, int64_t ignore_index) {
  check_view(hidden, "hidden", 2, true);
  check_view(weight, "weight", 2, true);
  check_same_dtype(hidden, "hidden", weight, "weight");
  check(hidden.size(1) == weight.size(1), "weight: hidden size " + str(weight.size(1)) +
                                              " differs from hidden's " + str(hidden.size(1)));
  check(weight.size(0) >= 1, "weight: expected at least one vocabulary row");
  if (!bias.none()) {
    check_view(bias, "bias", 1, true);
    check_same_dtype(hidden, "hidden", bias, "bias");
    check(bias.size(0) == weight.size(0), "bias: expected " + str(weight.size(0)) + " entries");
  }
  check_index_view(labels, "labels", 1);
  check(labels.size(0) == hidden.size(0), "labels: expected one label per hidden row");
  const int64_t V = weight.size(0);
  const int64_t* lab = labels.data<int64_t>();
  std::vector<int64_t> rows;
  for (int64_t n = 0; n < labels.size(0); ++n) {
    if (lab[n] == ignore_index) continue;
    if (lab[n] < 0 || lab[n] >= V)
      fail("labels: label " + str(lab[n]) + " at flat position " + str(n) +
           " is neither ignore_index (" + str(ignore_index) + ") nor in [0, " + str(V) + ")");
    rows.push_back(n);
  }
  return rows;
}

void check_stat(const View& v, const char* name, int64_t n, DType acc) {
  check_view(v, name, 1, true);
  check(v.dtype == acc && v.size(0) == n,
        std::string(name) + ": expected " + str(n) + " entries of " + dtype_name(acc));
}

// The problem as the kernels see it.
template <typename T>
struct LmProblem {
  using A = typename Acc<T>::type;
  int64_t N, H, V, M, Hp, chunks, slots;
  bool has_bias;
  std::vector<int64_t> rows;  // labelled rows of hidden
  std::vector<A> hs;          // [M][Hp]: gathered rows, the bias column, zero padding

  LmProblem(const View& hidden, const View& weight, const View& bias, std::vector<int64_t> sel)
      : N(hidden.size(0)),
        H(hidden.size(1)),
        V(weight.size(0)),
        M(static_cast<int64_t>(sel.size())),
        has_bias(!bias.none()),
        rows(std::move(sel)) {
    Hp = round_up(H + (has_bias ? 1 : 0), kLanes);
    chunks = (V + kChunk - 1) / kChunk;
    slots = std::min(kSlots, chunks);
    hs.assign(static_cast<size_t>(M * Hp), A(0));
    const T* h = hidden.data<T>();
    parallel_for(M, [&](int64_t i) {
      const T* src = h + rows[static_cast<size_t>(i)] * H;
      A* dst = hs.data() + i * Hp;
      for (int64_t d = 0; d < H; ++d) dst[d] = load(src + d);
      if (has_bias) dst[H] = A(1);
    });
  }
  int64_t chunk_of_slot(int64_t s) const { return chunks * s / slots; }
  int64_t chunk_rows(int64_t c) const { return std::min(kChunk, V - c * kChunk); }
};

// Packs weight rows [c0, c0 + nc) (and their bias) as strips of the transpose, kb
// [ceil(nc/16)][Hp][16] zero-padded, and, when wc is given, row-major wc [nc][Hp].
template <typename T, typename A>
void pack_chunk(const LmProblem<T>& P, const View& weight, const View& bias, int64_t c0, int64_t nc,
                A* kb, A* wc) {
  const T* w = weight.data<T>();
  const T* bv = P.has_bias ? bias.data<T>() : nullptr;
  const int64_t Hp = P.Hp, H = P.H;
  for (int64_t j = 0; j < round_up(nc, kLanes); ++j) {
    A* strip = kb + (j / kLanes) * Hp * kLanes + j % kLanes;
    A* row = wc ? wc + j * Hp : nullptr;
    const bool in = j < nc;
    const T* src = w + (c0 + j) * H;
    for (int64_t d = 0; d < Hp; ++d) {
      A v = A(0);
      if (in) v = d < H ? A(load(src + d)) : (d == H && bv ? A(load(bv + c0 + j)) : A(0));
      strip[d * kLanes] = v;
      if (row && in) row[d] = v;
    }
  }
}

// Runs task(slot, scratch) for every slot, dynamically scheduled; a task must not throw.
template <typename F>
void run_slots(int64_t slots, F&& task) {
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), slots));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (int64_t s = 0; s < slots; ++s) {
    const FlushDenormals ftz;
    task(s);
  }
}

// GEMM1: the logits of row tile [r0, r0 + nr) and columns [k0, k0 + ncols) of a packed chunk.
template <typename T, typename A>
void tile_logits(const Kernels<A>& K, const LmProblem<T>& P, const A* kb, int64_t r0, int64_t nr,
                 int64_t k0, int64_t ncols, A* tile) {
  const int64_t nstrips = (ncols + kLanes - 1) / kLanes;
  K.gemm(Gemm<A>{nr, nstrips, P.Hp, P.hs.data() + r0 * P.Hp, P.Hp, 1,
                 kb + (k0 / kLanes) * P.Hp * kLanes, P.Hp * kLanes, kLanes, tile, kBN, false});
}

template <typename T>
void lm_forward_impl(const View& hidden, const View& weight, const View& bias, const View& labels,
                     std::vector<int64_t> sel, const View& loss, const View& lse) {
  using A = typename Acc<T>::type;
  const LmProblem<T> P(hidden, weight, bias, std::move(sel));
  const Kernels<A> K = tile_kernels<A>();
  const A ninf = -std::numeric_limits<A>::infinity();
  const int64_t M = P.M, Hp = P.Hp;
  std::vector<A> sm(static_cast<size_t>(P.slots * M)), sl(static_cast<size_t>(P.slots * M));
  if (M > 0) {
    run_slots(P.slots, [&](int64_t s) {
      std::vector<A> kb(static_cast<size_t>(kChunk * Hp));
      std::vector<A> tile(static_cast<size_t>(kBM * kBN));
      std::vector<A> lm(static_cast<size_t>(kBM * kLanes)), ll(static_cast<size_t>(kBM * kLanes));
      std::vector<A> fm(static_cast<size_t>(kBM)), fl(static_cast<size_t>(kBM));
      A* m = sm.data() + s * M;
      A* l = sl.data() + s * M;
      std::fill(m, m + M, ninf);
      std::fill(l, l + M, A(0));
      for (int64_t c = P.chunk_of_slot(s); c < P.chunk_of_slot(s + 1); ++c) {
        const int64_t c0 = c * kChunk, nc = P.chunk_rows(c);
        pack_chunk<T, A>(P, weight, bias, c0, nc, kb.data(), nullptr);
        for (int64_t r0 = 0; r0 < M; r0 += kBM) {
          const int64_t nr = std::min(kBM, M - r0);
          std::fill(lm.begin(), lm.begin() + nr * kLanes, ninf);
          std::fill(ll.begin(), ll.begin() + nr * kLanes, A(0));
          for (int64_t k0 = 0; k0 < nc; k0 += kBN) {
            const int64_t ncols = std::min(kBN, nc - k0);
            tile_logits(K, P, kb.data(), r0, nr, k0, ncols, tile.data());
            K.lse_fwd_tile(tile.data(), nr, ncols, A(1), kNoMark, lm.data(), ll.data(), nullptr,
                           nullptr);
          }
          K.fold_lanes(lm.data(), ll.data(), nr, fm.data(), fl.data());
          for (int64_t i = 0; i < nr; ++i) lse_merge<A>(m[r0 + i], l[r0 + i], fm[i], fl[i]);
        }
      }
    });
  }
  // Merge the slots in order (double), and subtract each row's target logit.
  A* lo = loss.data<A>();
  A* ls = lse.data<A>();
  std::fill(lo, lo + P.N, A(0));
  std::fill(ls, ls + P.N, A(0));
  const T* w = weight.data<T>();
  const T* bv = P.has_bias ? bias.data<T>() : nullptr;
  const int64_t* lab = labels.data<int64_t>();
  parallel_for(M, [&](int64_t i) {
    double mm = sm[static_cast<size_t>(i)], ll = sl[static_cast<size_t>(i)];
    for (int64_t s = 1; s < P.slots; ++s)
      lse_merge<double>(mm, ll, sm[static_cast<size_t>(s * M + i)],
                        sl[static_cast<size_t>(s * M + i)]);
    const int64_t n = P.rows[static_cast<size_t>(i)], y = lab[n];
    const A* h = P.hs.data() + i * Hp;
    double target = bv ? static_cast<double>(load(bv + y)) : 0.0;
    for (int64_t d = 0; d < P.H; ++d)
      target += static_cast<double>(h[d]) * static_cast<double>(load(w + y * P.H + d));
    const double value = lse_value(mm, ll);
    ls[n] = static_cast<A>(value);
    lo[n] = static_cast<A>(value - target);
  });
}

template <typename T>
void lm_backward_impl(const View& hidden, const View& weight, const View& bias, const View& labels,
                      std::vector<int64_t> sel, const View& lse, const View& grad,
                      const View& dhidden, const View& dweight, const View& dbias) {
  using A = typename Acc<T>::type;
  const LmProblem<T> P(hidden, weight, bias, std::move(sel));
  const Kernels<A> K = tile_kernels<A>();
  const int64_t M = P.M, Hp = P.Hp, H = P.H;
  const bool want_dh = !dhidden.none(), want_dw = !dweight.none(), want_db = !dbias.none();
  const bool want_col = want_dw || want_db;
  // Per labelled row: lse, upstream gradient, label.
  std::vector<A> rl(static_cast<size_t>(M)), rw(static_cast<size_t>(M));
  std::vector<int64_t> ry(static_cast<size_t>(M));
  const int64_t* lab = labels.data<int64_t>();
  for (int64_t i = 0; i < M; ++i) {
    const int64_t n = P.rows[static_cast<size_t>(i)];
    rl[static_cast<size_t>(i)] = lse.data<A>()[n];
    rw[static_cast<size_t>(i)] = grad.data<A>()[n];
    ry[static_cast<size_t>(i)] = lab[n];
  }
  std::vector<A> dhp(want_dh ? static_cast<size_t>(P.slots * M * Hp) : 0);
  T* dw = want_dw ? dweight.data<T>() : nullptr;
  T* db = want_db ? dbias.data<T>() : nullptr;
  if (want_dw) prepare_output(dweight);
  if (want_dh || want_col) {
    run_slots(P.slots, [&](int64_t s) {
      std::vector<A> kb(static_cast<size_t>(kChunk * Hp));
      std::vector<A> wc(want_dh ? static_cast<size_t>(kChunk * Hp) : 0);
      std::vector<A> dwc(want_col ? static_cast<size_t>(kChunk * Hp) : 0);
      std::vector<A> tile(static_cast<size_t>(kBM * kBN));
      A* dh = want_dh ? dhp.data() + s * M * Hp : nullptr;
      if (dh) std::fill(dh, dh + M * Hp, A(0));
      for (int64_t c = P.chunk_of_slot(s); c < P.chunk_of_slot(s + 1); ++c) {
        const int64_t c0 = c * kChunk, nc = P.chunk_rows(c);
        pack_chunk<T, A>(P, weight, bias, c0, nc, kb.data(), want_dh ? wc.data() : nullptr);
        if (want_col) std::fill(dwc.begin(), dwc.begin() + nc * Hp, A(0));
        for (int64_t r0 = 0; r0 < M; r0 += kBM) {
          const int64_t nr = std::min(kBM, M - r0);
          for (int64_t k0 = 0; k0 < nc; k0 += kBN) {
            const int64_t ncols = std::min(kBN, nc - k0);
            A* t = tile.data();
            tile_logits(K, P, kb.data(), r0, nr, k0, ncols, t);
            K.lse_bwd_tile(t, nr, ncols, A(1), kNoMark, rl.data() + r0, rw.data() + r0, nullptr,
                           nullptr);
            // The target's one-hot, subtracted in the tile (softmax - onehot, as eager
            // cross-entropy) so that the gradient keeps that difference's precision.
            for (int64_t i = 0; i < nr; ++i) {
              const int64_t j = ry[static_cast<size_t>(r0 + i)] - c0 - k0;
              if (j >= 0 && j < ncols) t[i * kBN + j] -= rw[static_cast<size_t>(r0 + i)];
            }
            if (dh)
              K.gemm(Gemm<A>{nr, Hp / kLanes, ncols, t, kBN, 1, wc.data() + k0 * Hp, kLanes, Hp,
                             dh + r0 * Hp, Hp, true});
            if (want_col)
              K.gemm(Gemm<A>{ncols, Hp / kLanes, nr, t, 1, kBN, P.hs.data() + r0 * Hp, kLanes, Hp,
                             dwc.data() + k0 * Hp, Hp, true});
          }
        }
        for (int64_t j = 0; j < nc && want_col; ++j) {
          const A* src = dwc.data() + j * Hp;
          if (dw)
            for (int64_t d = 0; d < H; ++d) store(dw + (c0 + j) * H + d, src[d]);
          if (db) store(db + c0 + j, P.has_bias ? src[H] : A(0));
        }
      }
    });
  }
  if (!want_dh) return;
  T* dhid = dhidden.data<T>();
  prepare_output(dhidden);
  parallel_chunks(P.N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t d = 0; d < H; ++d) store(dhid + n * H + d, A(0));
  });
  parallel_for(M, [&](int64_t i) {
    T* dst = dhid + P.rows[static_cast<size_t>(i)] * H;
    for (int64_t d = 0; d < H; ++d) {
      A v = dhp[static_cast<size_t>(i * Hp + d)];
      for (int64_t s = 1; s < P.slots; ++s) v += dhp[static_cast<size_t>((s * M + i) * Hp + d)];
      store(dst + d, v);
    }
  });
}

}  // namespace

void lm_loss_forward(const View& hidden, const View& weight, const View& bias, const View& labels,
                     int64_t ignore_index, const View& loss, const View& lse) {
  std::vector<int64_t> rows = check_loss_inputs(hidden, weight, bias, labels, ignore_index);
  const DType acc = hidden.dtype == DType::f64 ? DType::f64 : DType::f32;
  check_stat(loss, "loss", hidden.size(0), acc);
  check_stat(lse, "lse", hidden.size(0), acc);
  dispatch_float(hidden.dtype, [&](auto tag) {
    lm_forward_impl<decltype(tag)>(hidden, weight, bias, labels, std::move(rows), loss, lse);
  });
}

void lm_loss_backward(const View& hidden, const View& weight, const View& bias, const View& labels,
                      int64_t ignore_index, const View& lse, const View& grad, const View& dhidden,
                      const View& dweight, const View& dbias) {
  std::vector<int64_t> rows = check_loss_inputs(hidden, weight, bias, labels, ignore_index);
  const DType acc = hidden.dtype == DType::f64 ? DType::f64 : DType::f32;
  check_stat(lse, "lse", hidden.size(0), acc);
  check_stat(grad, "grad", hidden.size(0), acc);
  if (!dhidden.none()) {
    check_view(dhidden, "dhidden", 2, true);
    check(dhidden.dtype == hidden.dtype && dhidden.shape == hidden.shape,
          "dhidden: expected hidden's shape and dtype");
  }
  if (!dweight.none()) {
    check_view(dweight, "dweight", 2, true);
    check(dweight.dtype == weight.dtype && dweight.shape == weight.shape,
          "dweight: expected weight's shape and dtype");
  }
  if (!dbias.none()) {
    check_view(dbias, "dbias", 1, true);
    check(dbias.dtype == hidden.dtype && dbias.size(0) == weight.size(0),
          "dbias: expected one entry per vocabulary row, of hidden's dtype");
  }
  dispatch_float(hidden.dtype, [&](auto tag) {
    lm_backward_impl<decltype(tag)>(hidden, weight, bias, labels, std::move(rows), lse, grad,
                                    dhidden, dweight, dbias);
  });
}

}  // namespace pyssl::text::cpu
