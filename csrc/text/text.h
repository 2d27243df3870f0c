// Masked-token pretext tasks (BERT-style token masking, masked / causal language-model losses):
// the per-element math shared by the CPU kernels and the Triton kernels' documented twin.
//
// Token masking draws from a counter-based generator: every random number is a hash of
// (seed, stream, counter), so a token's fate depends only on the seed and its position, never
// on the thread that computes it or on the backend (the Triton kernel computes the same hash).
#pragma once

#include <cstdint>

#include "pyssl/common.h"

namespace pyssl::text {

// murmur3's 32-bit finaliser: a bijection that mixes every input bit into every output bit.
PYSSL_HD uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// The 32 random bits of counter `i` of stream `s` under the 64-bit seed (s0 low, s1 high).
PYSSL_HD uint32_t draw_bits(uint32_t s0, uint32_t s1, uint32_t s, uint32_t i) {
  uint32_t h = fmix32(i * 0x9e3779b1u + s0);
  h = fmix32(h ^ (s1 + s * 0x85ebca77u));
  return fmix32(h + i);
}

// A uniform number in [0, 1) with 24 random bits (exact in float32).
PYSSL_HD float draw_uniform(uint32_t s0, uint32_t s1, uint32_t s, uint32_t i) {
  return static_cast<float>(draw_bits(s0, s1, s, i) >> 8) * (1.0f / 16777216.0f);
}

// An integer uniform in [0, n) for n < 2^32 (Lemire's multiply-shift; bias below n / 2^32).
PYSSL_HD int64_t draw_below(uint32_t s0, uint32_t s1, uint32_t s, uint32_t i, int64_t n) {
  return static_cast<int64_t>(
      (static_cast<uint64_t>(draw_bits(s0, s1, s, i)) * static_cast<uint64_t>(n)) >> 32);
}

// The streams: stream 0 chooses positions (or words), stream 1 picks the replacement class,
// stream 2 the random token.
constexpr uint32_t kChooseStream = 0, kClassStream = 1, kTokenStream = 2;

// Fate of a chosen token: 0 = [MASK], 1 = a random token, 2 = kept (Hugging Face's 80/10/10 with
// one uniform instead of two Bernoulli draws: the same law).
PYSSL_HD int token_class(float u, float mask_replace_prob, float random_replace_prob) {
  if (u < mask_replace_prob) return 0;
  if (u < mask_replace_prob + random_replace_prob) return 1;
  return 2;
}

// Host entry points (CPU). input_ids, labels and masked are [B, T] int64; special is [B, T]
// bool (or none); word_ids is [B, T] int64 (or none; -1 marks a token that belongs to no word).
// mask_tokens: position (b, t) is chosen when draw_uniform(stream 0, counter b*T + w) < prob,
//   w = word_ids[b, t] when given (so all tokens of a word share one draw), else t; never when
//   special or w < 0. Chosen: labels = input_ids, masked by token_class over draw_uniform(stream
//   1, b*T + t); a random token is draw_below(stream 2, b*T + t, vocab_size). Not chosen:
//   labels = -100, masked = input_ids.
// lm_loss_forward: hidden [N, H], weight [V, H], bias [V] (or none), labels [N] int64; rows with
//   labels == ignore_index carry no loss. loss[n] = lse[n] - (h_n . w_label + b_label) and
//   lse[n] = logsumexp_v (h_n . w_v + b_v) for labelled rows, 0 elsewhere (float32, or float64
//   for float64 inputs). Labels must lie in [0, V) or equal ignore_index (ValueError).
// lm_loss_backward: with g[n] (the upstream gradient of loss[n]) and G_nv = g[n] (softmax_nv -
//   [v == label_n]): dhidden = G weight, dweight = G^T hidden, dbias = sum_n G (any of them may
//   be none). Rows without a label get zero gradient.
// The logits are computed in vocabulary chunks and never held whole; results do not depend on
// the thread count.
namespace cpu {
void mask_tokens(const View& input_ids, const View& special, const View& word_ids, uint64_t seed,
                 int64_t vocab_size, int64_t mask_token_id, double prob, double mask_replace_prob,
                 double random_replace_prob, const View& masked, const View& labels);
void lm_loss_forward(const View& hidden, const View& weight, const View& bias, const View& labels,
                     int64_t ignore_index, const View& loss, const View& lse);
void lm_loss_backward(const View& hidden, const View& weight, const View& bias, const View& labels,
                      int64_t ignore_index, const View& lse, const View& grad, const View& dhidden,
                      const View& dweight, const View& dbias);
}  // namespace cpu

}  // namespace pyssl::text
