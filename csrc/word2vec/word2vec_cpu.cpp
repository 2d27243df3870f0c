// CPU kernels of the word2vec family: skip-gram with negative sampling, trained Hogwild-style
// (lock-free) over OpenMP threads as word2vec.c does, sentences handed out dynamically.
//
// One (centre, context) pair: the context word's input row l1 = syn0[context] predicts the
// centre word (label 1) and `negative` words drawn from the unigram table (label 0), through the
// output rows syn1neg[target] (word2vec.c's and gensim's orientation). The pair's 1 + K dot
// products are all taken first, from the rows as they are; a target drawn twice in one pair has
// its two coefficients summed; then one fused pass per target row does neu1e += g row and
// row += g l1, and l1 += neu1e at the end. So the step is exactly -alpha times the gradient of
// the pair's loss -log s(l1.u_w) - sum_k log s(-l1.u_k). (word2vec.c interleaves dot and update
// target by target, which differs only when a target repeats within one pair.)
//
// Speed: the dot products and the fused update are plain loops under `omp simd`, compiled three
// times (baseline, AVX2+FMA, AVX-512) and picked at run time. The random draws of kBlock centre
// words are made ahead of their pairs (they never depend on the vectors): the unigram-table
// slots are prefetched as they are drawn, and each pair's rows (syn0[context], syn1neg of its
// targets) kAhead pairs before its turn. Before that pipelining, the table read was the hottest
// instruction (a cache miss per negative) and a 2^21-slot table ran at 60% of a 2^16-slot one.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "pyssl/parallel.h"
#include "word2vec/word2vec.h"

#define PYSSL_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) && defined(__GNUC__)
#define PYSSL_W2V_X86 1
#define PYSSL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define PYSSL_AVX2 __attribute__((target("avx2,fma")))
#else
#define PYSSL_W2V_X86 0
#endif

namespace pyssl::word2vec::cpu {
namespace {

inline std::string str(int64_t v) { return std::to_string(v); }

constexpr int64_t kMaxNegative = 1000;

// What every sentence of one call reads.
struct Task {
  const int32_t* tokens;
  const int64_t* offsets;
  int64_t num_sentences, num_words;
  const double* keep;  // per word; empty when sample == 0
  const int32_t* table;
  int64_t table_size;
  int64_t window, negative;
  int64_t epoch;
  uint64_t seed;
  // training only
  float* syn0;
  float* syn1;
  int64_t dim;
  double alpha, min_alpha, total;  // total = epochs * N
};

constexpr int64_t kBlock = 8;  // centre words whose draws are made together
constexpr int64_t kAhead = 3;  // pairs announced (ready()) before their turn

// Per-thread scratch.
struct Scratch {
  std::vector<int32_t> kept, negs, targets, pair_centre, pair_context;
  std::vector<uint32_t> slots;
  std::vector<float> neu1e, dots;
  Scratch(int64_t max_len, int64_t window, int64_t negative, int64_t dim)
      : kept(static_cast<size_t>(std::max<int64_t>(max_len, 1))),
        negs(static_cast<size_t>(kBlock * 2 * window * negative + 1)),
        targets(static_cast<size_t>(negative + 1)),
        pair_centre(static_cast<size_t>(kBlock * 2 * window)),
        pair_context(static_cast<size_t>(kBlock * 2 * window)),
        slots(static_cast<size_t>(kBlock * 2 * window * negative + 1)),
        neu1e(static_cast<size_t>(std::max<int64_t>(dim, 1))),
        dots(static_cast<size_t>(negative + 1)) {}
};

// The draws of sentence s in word2vec.c's order; pair(centre, context, negs) for every pair
// (negs[d] = -1 where the draw hit the centre word). Returns the number of kept words.
//
// The draws are made kBlock centre words at a time: first every slot index of the block (the
// table entries prefetched as they are drawn), then the table reads, then the pairs in order,
// each announced kAhead pairs early through ready() so that the caller can prefetch its rows.
// The order of draws and of pairs is exactly word2vec.c's.
template <typename R, typename F>
PYSSL_INLINE int64_t walk_sentence(const Task& t, int64_t s, Scratch& sc, R&& ready, F&& pair) {
  uint64_t r = sentence_state(t.seed, t.epoch, t.num_sentences, s);
  const int64_t b0 = t.offsets[s], b1 = t.offsets[s + 1];
  int32_t* kept = sc.kept.data();
  int64_t n = 0;
  for (int64_t i = b0; i < b1; ++i) {
    const int32_t w = t.tokens[i];
    if (t.keep) {
      r = lcg_next(r);
      if (t.keep[w] < static_cast<double>(r & 0xFFFFu) / 65536.0) continue;
    }
    kept[n++] = w;
  }
  const int64_t W = t.window, K = t.negative;
  const uint64_t T = static_cast<uint64_t>(t.table_size);
  int32_t* pw = sc.pair_centre.data();
  int32_t* pc = sc.pair_context.data();
  int32_t* negs = sc.negs.data();
  uint32_t* slots = sc.slots.data();
  for (int64_t p0 = 0; p0 < n; p0 += kBlock) {
    int64_t np = 0;
    for (int64_t p = p0; p < std::min(n, p0 + kBlock); ++p) {
      r = lcg_next(r);
      const int64_t b = static_cast<int64_t>(r % static_cast<uint64_t>(W));
      // a in [b, 2W + 1 - b), clipped to the sentence (c = p - W + a in [0, n))
      const int64_t a_end = std::min(2 * W + 1 - b, W - p + n);
      for (int64_t a = std::max(b, W - p); a < a_end; ++a) {
        if (a == W) continue;
        const int64_t c = p - W + a;
        uint32_t* sl = slots + np * K;
        for (int64_t d = 0; d < K; ++d) {
          r = lcg_next(r);
          sl[d] = static_cast<uint32_t>(((r >> 32) * T) >> 32);
          __builtin_prefetch(t.table + sl[d]);
        }
        pw[np] = kept[p];
        pc[np] = kept[c];
        ++np;
      }
    }
    for (int64_t q = 0; q < np; ++q)
      for (int64_t d = 0; d < K; ++d) {
        const int32_t tg = t.table[slots[q * K + d]];
        negs[q * K + d] = tg == pw[q] ? -1 : tg;
      }
    for (int64_t q = 0; q < std::min(np, kAhead); ++q) ready(pw[q], pc[q], negs + q * K);
    for (int64_t q = 0; q < np; ++q) {
      if (q + kAhead < np) ready(pw[q + kAhead], pc[q + kAhead], negs + (q + kAhead) * K);
      pair(pw[q], pc[q], negs + q * K);
    }
  }
  return n;
}

// One SGNS step on a pair (see the top of the file).
PYSSL_INLINE void sgns_pair(const Task& t, float alpha, int32_t w, int32_t ctx, const int32_t* negs,
                            Scratch& sc) {
  const int64_t D = t.dim;
  float* __restrict l1 = t.syn0 + static_cast<int64_t>(ctx) * D;
  float* __restrict e = sc.neu1e.data();
  int32_t* tg = sc.targets.data();
  float* g = sc.dots.data();
  int64_t m = 0;
  tg[m++] = w;
  for (int64_t d = 0; d < t.negative; ++d)
    if (negs[d] >= 0) tg[m++] = negs[d];
  for (int64_t j = 0; j < m; ++j) {
    const float* __restrict row = t.syn1 + static_cast<int64_t>(tg[j]) * D;
    float f = 0.0f;
#pragma omp simd reduction(+ : f)
    for (int64_t i = 0; i < D; ++i) f += l1[i] * row[i];
    g[j] = f;
  }
  for (int64_t j = 0; j < m; ++j) {
    const float label = j == 0 ? 1.0f : 0.0f;
    g[j] = (label - 1.0f / (1.0f + std::exp(-g[j]))) * alpha;
  }
  for (int64_t j = 2; j < m; ++j)  // a negative drawn twice: one row, coefficients summed
    for (int64_t k = 1; k < j; ++k)
      if (tg[k] == tg[j]) {
        g[k] += g[j];
        tg[j] = -1;
        break;
      }
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) e[i] = 0.0f;
  for (int64_t j = 0; j < m; ++j) {
    if (tg[j] < 0) continue;
    float* __restrict row = t.syn1 + static_cast<int64_t>(tg[j]) * D;
    const float gj = g[j];
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) {
      const float v = row[i];
      e[i] += gj * v;
      row[i] = v + gj * l1[i];
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) l1[i] += e[i];
}

PYSSL_INLINE int64_t train_sentence_portable(const Task& t, int64_t s, Scratch& sc) {
  const double pos = static_cast<double>(t.epoch * t.num_words + t.offsets[s]);
  const float alpha =
      static_cast<float>(t.alpha - (t.alpha - t.min_alpha) * (t.total > 0 ? pos / t.total : 0.0));
  const int64_t D = t.dim, K = t.negative;
  auto prefetch_row = [&](const float* row) {
    for (int64_t i = 0; i < D; i += 16) __builtin_prefetch(row + i, 1);
  };
  return walk_sentence(
      t, s, sc,
      [&](int32_t w, int32_t ctx, const int32_t* negs) {
        prefetch_row(t.syn0 + static_cast<int64_t>(ctx) * D);
        prefetch_row(t.syn1 + static_cast<int64_t>(w) * D);
        for (int64_t d = 0; d < K; ++d)
          if (negs[d] >= 0) prefetch_row(t.syn1 + static_cast<int64_t>(negs[d]) * D);
      },
      [&](int32_t w, int32_t ctx, const int32_t* negs) { sgns_pair(t, alpha, w, ctx, negs, sc); });
}

int64_t train_sentence_base(const Task& t, int64_t s, Scratch& sc) {
  return train_sentence_portable(t, s, sc);
}
#if PYSSL_W2V_X86
PYSSL_AVX2 int64_t train_sentence_avx2(const Task& t, int64_t s, Scratch& sc) {
  return train_sentence_portable(t, s, sc);
}
PYSSL_AVX512 int64_t train_sentence_avx512(const Task& t, int64_t s, Scratch& sc) {
  return train_sentence_portable(t, s, sc);
}
#endif

using SentenceFn = int64_t (*)(const Task&, int64_t, Scratch&);

SentenceFn pick_kernel() {
#if PYSSL_W2V_X86
  const char* env = std::getenv("PYSSL_FORCE_PORTABLE");
  if (!(env && env[0] && std::string(env) != "0")) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return &train_sentence_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return &train_sentence_avx2;
  }
#endif
  return &train_sentence_base;
}

// Checks shared by train_sgns and sample_pairs; returns the longest sentence.
int64_t check_corpus(const View& tokens, const View& offsets, const View& counts, const View& table,
                     int64_t window, int64_t negative, double sample) {
  check_view(tokens, "tokens", 1, false);
  check(tokens.dtype == DType::i32,
        std::string("tokens: expected int32 word ids, got ") + dtype_name(tokens.dtype));
  check_view(offsets, "offsets", 1, false);
  check(offsets.dtype == DType::i64,
        std::string("offsets: expected int64, got ") + dtype_name(offsets.dtype));
  check(offsets.size(0) >= 1, "offsets: expected at least one entry (S + 1 for S sentences)");
  check_view(counts, "counts", 1, false);
  check(counts.dtype == DType::i64,
        std::string("counts: expected int64, got ") + dtype_name(counts.dtype));
  const int64_t V = counts.size(0);
  check(V >= 1 && V < (int64_t(1) << 31), "counts: expected 1 <= V < 2^31 words");
  check_view(table, "table", 1, false);
  check(table.dtype == DType::i32,
        std::string("table: expected int32, got ") + dtype_name(table.dtype));
  check(table.size(0) >= 1 && table.size(0) <= (int64_t(1) << 32),
        "table: expected 1 to 2^32 slots, got " + str(table.size(0)));
  check(window >= 1, "window: expected >= 1, got " + str(window));
  check(negative >= 0 && negative <= kMaxNegative,
        "negative: expected 0 <= negative <= " + str(kMaxNegative) + ", got " + str(negative));
  check(sample >= 0.0 && std::isfinite(sample),
        "sample: expected a finite number >= 0, got " + std::to_string(sample));
  const int64_t* cn = counts.data<int64_t>();
  for (int64_t i = 0; i < V; ++i)
    check(cn[i] >= 0, "counts: count " + str(cn[i]) + " of word " + str(i) + " is negative");
  const int64_t* off = offsets.data<int64_t>();
  const int64_t S = offsets.size(0) - 1, N = tokens.size(0);
  check(off[0] == 0, "offsets: expected offsets[0] == 0, got " + str(off[0]));
  check(off[S] == N,
        "offsets: expected offsets[-1] == len(tokens) == " + str(N) + ", got " + str(off[S]));
  int64_t longest = 0;
  for (int64_t s = 0; s < S; ++s) {
    check(off[s + 1] >= off[s], "offsets: expected non-decreasing, but offsets[" + str(s + 1) +
                                    "] = " + str(off[s + 1]) + " < " + str(off[s]));
    longest = std::max(longest, off[s + 1] - off[s]);
  }
  const int32_t* tok = tokens.data<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    if (tok[i] < 0 || tok[i] >= V)
      fail("tokens: word id " + str(tok[i]) + " at position " + str(i) + " is out of range [0, " +
           str(V) + ")");
  const int32_t* tb = table.data<int32_t>();
  for (int64_t i = 0; i < table.size(0); ++i)
    if (tb[i] < 0 || tb[i] >= V)
      fail("table: word id " + str(tb[i]) + " at slot " + str(i) + " is out of range [0, " +
           str(V) + ")");
  return longest;
}

Task make_task(const View& tokens, const View& offsets, const View& table,
               const std::vector<double>& keep, int64_t window, int64_t negative, int64_t epoch,
               uint64_t seed) {
  Task t{};
  t.tokens = tokens.data<int32_t>();
  t.offsets = offsets.data<int64_t>();
  t.num_sentences = offsets.size(0) - 1;
  t.num_words = tokens.size(0);
  t.keep = keep.empty() ? nullptr : keep.data();
  t.table = table.data<int32_t>();
  t.table_size = table.size(0);
  t.window = window;
  t.negative = negative;
  t.epoch = epoch;
  t.seed = seed;
  return t;
}

std::vector<double> keep_table(const View& counts, double sample) {
  std::vector<double> keep;
  if (sample <= 0.0) return keep;
  const int64_t V = counts.size(0);
  const int64_t* cn = counts.data<int64_t>();
  int64_t total = 0;
  for (int64_t i = 0; i < V; ++i) total += cn[i];
  keep.resize(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) keep[i] = keep_probability(cn[i], sample, total);
  return keep;
}

}  // namespace

void build_unigram_table(const View& counts, double power, const View& table) {
  check_view(counts, "counts", 1, false);
  check(counts.dtype == DType::i64,
        std::string("counts: expected int64, got ") + dtype_name(counts.dtype));
  check_view(table, "table", 1, false);
  check(table.dtype == DType::i32,
        std::string("table: expected int32, got ") + dtype_name(table.dtype));
  const int64_t V = counts.size(0), T = table.size(0);
  check(V >= 1, "counts: expected at least one word");
  check(T >= 1, "table: expected at least one slot");
  check(std::isfinite(power), "ns_exponent: expected a finite number");
  const int64_t* cn = counts.data<int64_t>();
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    check(cn[i] >= 0, "counts: count " + str(cn[i]) + " of word " + str(i) + " is negative");
    sum += std::pow(static_cast<double>(cn[i]), power);
  }
  check(sum > 0.0 && std::isfinite(sum), "counts: expected a positive total of count^ns_exponent");
  int32_t* tb = table.data<int32_t>();
  int64_t i = 0;
  double d1 = std::pow(static_cast<double>(cn[0]), power) / sum;
  for (int64_t a = 0; a < T; ++a) {  // word2vec.c's InitUnigramTable
    tb[a] = static_cast<int32_t>(i);
    if (static_cast<double>(a) / static_cast<double>(T) > d1) {
      ++i;
      if (i < V) d1 += std::pow(static_cast<double>(cn[i]), power) / sum;
    }
    if (i >= V) i = V - 1;
  }
}

int64_t train_sgns(const View& tokens, const View& offsets, const View& counts, const View& table,
                   const View& syn0, const View& syn1neg, int64_t window, int64_t negative,
                   double sample, double alpha, double min_alpha, int64_t epoch, int64_t epochs,
                   int64_t sentence_begin, int64_t sentence_end, uint64_t seed) {
  const int64_t longest = check_corpus(tokens, offsets, counts, table, window, negative, sample);
  const int64_t V = counts.size(0);
  check_view(syn0, "syn0", 2, false);
  check_view(syn1neg, "syn1neg", 2, false);
  check(syn0.dtype == DType::f32,
        std::string("syn0: expected float32, got ") + dtype_name(syn0.dtype));
  check(syn1neg.dtype == DType::f32,
        std::string("syn1neg: expected float32, got ") + dtype_name(syn1neg.dtype));
  check(syn0.size(0) == V,
        "syn0: expected " + str(V) + " rows (one per word), got " + str(syn0.size(0)));
  check(syn1neg.size(0) == V && syn1neg.size(1) == syn0.size(1),
        "syn1neg: expected syn0's shape [" + str(V) + ", " + str(syn0.size(1)) + "]");
  check(syn0.size(1) >= 1, "syn0: expected vector_size >= 1");
  check(syn0.ptr != syn1neg.ptr, "syn1neg: must not share memory with syn0");
  check(std::isfinite(alpha) && alpha >= 0.0, "alpha: expected a finite number >= 0");
  check(std::isfinite(min_alpha) && min_alpha >= 0.0, "min_alpha: expected a finite number >= 0");
  check(epochs >= 1, "epochs: expected >= 1, got " + str(epochs));
  check(epoch >= 0 && epoch < epochs,
        "epoch: expected 0 <= epoch < epochs = " + str(epochs) + ", got " + str(epoch));
  const int64_t S = offsets.size(0) - 1;
  check(sentence_begin >= 0 && sentence_begin <= sentence_end && sentence_end <= S,
        "sentence_begin, sentence_end: expected 0 <= begin <= end <= " + str(S) + ", got " +
            str(sentence_begin) + ", " + str(sentence_end));

  const std::vector<double> keep = keep_table(counts, sample);
  Task t = make_task(tokens, offsets, table, keep, window, negative, epoch, seed);
  t.syn0 = syn0.data<float>();
  t.syn1 = syn1neg.data<float>();
  t.dim = syn0.size(1);
  t.alpha = alpha;
  t.min_alpha = min_alpha;
  t.total = static_cast<double>(epochs) * static_cast<double>(t.num_words);
  static const SentenceFn kernel = pick_kernel();
  int64_t kept_words = 0;
  const int64_t n = sentence_end - sentence_begin;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n)));
#pragma omp parallel num_threads(nt) reduction(+ : kept_words)
  {
    Scratch sc(longest, std::min(window, longest), negative,
               t.dim);  // pairs per centre <= 2 min(W, n)
#pragma omp for schedule(dynamic, 8)
    for (int64_t s = sentence_begin; s < sentence_end; ++s) kept_words += kernel(t, s, sc);
  }
  return kept_words;
}

int64_t sample_pairs(const View& tokens, const View& offsets, const View& counts, const View& table,
                     int64_t window, int64_t negative, double sample, int64_t epoch, uint64_t seed,
                     const View& out) {
  const int64_t longest = check_corpus(tokens, offsets, counts, table, window, negative, sample);
  check(epoch >= 0, "epoch: expected >= 0, got " + str(epoch));
  check_index_view(out, "out", 2);
  check(out.size(1) == 3 + negative, "out: expected " + str(3 + negative) + " columns");
  const std::vector<double> keep = keep_table(counts, sample);
  const Task t = make_task(tokens, offsets, table, keep, window, negative, epoch, seed);
  Scratch sc(longest, std::min(window, longest), negative, 1);
  int64_t* o = out.data<int64_t>();
  const int64_t cap = out.size(0), cols = 3 + negative;
  int64_t pairs = 0;
  for (int64_t s = 0; s < t.num_sentences; ++s)
    walk_sentence(
        t, s, sc, [](int32_t, int32_t, const int32_t*) {},
        [&](int32_t w, int32_t ctx, const int32_t* negs) {
          if (pairs < cap) {
            int64_t* row = o + pairs * cols;
            row[0] = s;
            row[1] = w;
            row[2] = ctx;
            for (int64_t d = 0; d < negative; ++d) row[3 + d] = negs[d];
          }
          ++pairs;
        });
  return pairs;
}

}  // namespace pyssl::word2vec::cpu
