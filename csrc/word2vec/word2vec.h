// The word2vec family: skip-gram with negative sampling (SGNS), as word2vec.c trains it.
//
// Randomness. Each (epoch, sentence) pair seeds its own copy of word2vec.c's linear congruential
// generator, next = next * 25214903917 + 11 (mod 2^64), from splitmix64 of the user's seed and
// the pair's index. Within a sentence the draws come in word2vec.c's order: one per word for
// subsampling (when sample > 0), then per kept centre word one for the reduced window, then
// `negative` per (centre, context) pair, each picking slot ((r >> 32) * T) >> 32 of the unigram
// table (word2vec.c: (r >> 16) % T, a division per draw). So which words are kept, which windows
// and which negatives are drawn depend on the seed alone, never on the thread that runs a sentence;
// with one thread the whole run is deterministic. (With several threads the float updates race, as
// in word2vec.c's Hogwild training.)
#pragma once

#include <cmath>
#include <cstdint>

#include "pyssl/common.h"

namespace pyssl::word2vec {

PYSSL_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The generator state a sentence starts from.
PYSSL_HD uint64_t sentence_state(uint64_t seed, int64_t epoch, int64_t num_sentences,
                                 int64_t sentence) {
  return splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch * num_sentences + sentence)));
}

// word2vec.c's generator step.
PYSSL_HD uint64_t lcg_next(uint64_t r) { return r * 25214903917ull + 11ull; }

// word2vec.c's subsampling: the probability of keeping a word of count `count` in a corpus of
// `total` words, (sqrt(f / (sample * total)) + 1) * (sample * total) / f, above 1 for rare words.
PYSSL_HD double keep_probability(int64_t count, double sample, int64_t total) {
  if (sample <= 0.0 || count <= 0) return 2.0;
  const double st = sample * static_cast<double>(total);
  const double f = static_cast<double>(count);
  return (std::sqrt(f / st) + 1.0) * st / f;
}

namespace cpu {

// word2vec.c's unigram table: slot a of `table` (int32 [T]) holds the word whose cumulative
// share of sum(count^power) first exceeds a / T, so a uniform slot draws word w with probability
// count_w^power / sum (rounded to multiples of 1 / T).
void build_unigram_table(const View& counts, double power, const View& table);

// Trains `syn0` and `syn1neg` (float32 [V, D], updated in place, Hogwild over OpenMP threads) on
// sentences [sentence_begin, sentence_end) of epoch `epoch`. `tokens` (int32 [N]) holds the
// word ids of all sentences; sentence s is tokens[offsets[s] : offsets[s + 1]] (offsets int64
// [S + 1], offsets[0] = 0, offsets[S] = N). The learning rate of sentence s is
// alpha - (alpha - min_alpha) * (epoch * N + offsets[s]) / (epochs * N). Returns the number of
// words kept by subsampling (the "effective words").
int64_t train_sgns(const View& tokens, const View& offsets, const View& counts, const View& table,
                   const View& syn0, const View& syn1neg, int64_t window, int64_t negative,
                   double sample, double alpha, double min_alpha, int64_t epoch, int64_t epochs,
                   int64_t sentence_begin, int64_t sentence_end, uint64_t seed);

// The draws of train_sgns for one epoch without the training (single thread, for tests): one
// row per (centre, context) pair, [sentence, centre word, context word, negatives...] with -1
// for a negative that drew the centre word (skipped, as in word2vec.c). `out` is int64
// [P, 3 + negative]; writes min(P, pairs) rows and returns the number of pairs.
int64_t sample_pairs(const View& tokens, const View& offsets, const View& counts, const View& table,
                     int64_t window, int64_t negative, double sample, int64_t epoch, uint64_t seed,
                     const View& out);

}  // namespace cpu
}  // namespace pyssl::word2vec
