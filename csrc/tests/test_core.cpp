// Tests of the compiled core with no Python: the shared per-element math (used by the CPU and
// CUDA kernels alike), the fp16/bf16 conversions, and a CPU kernel against a plain loop.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "augment/augment.h"
#include "masking/masking.h"
#include "text/text.h"
#include "word2vec/word2vec.h"

using namespace pyssl;

static int failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                             \
    }                                                                         \
  } while (0)

static View view_of(void* p, DType t, std::vector<int64_t> shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = s;
    s *= shape[d];
  }
  return View{reinterpret_cast<uintptr_t>(p), t, shape, strides};
}

static void stable_rank_is_a_stable_argsort() {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + trial % 37;
    std::vector<float> noise(n);
    for (float& v : noise) v = static_cast<float>(rng() % 5);  // many ties
    if (trial % 3 == 0) noise[rng() % n] = NAN;
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const bool an = std::isnan(noise[a]), bn = std::isnan(noise[b]);
      return an != bn ? bn : (!an && noise[a] < noise[b]);
    });
    for (int r = 0; r < n; ++r) EXPECT(masking::stable_rank(noise.data(), n, order[r]) == r);
  }
}

static void half_roundtrips_every_value() {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const half_t h{static_cast<uint16_t>(bits)};
    const float f = to_float(h);
    if (std::isnan(f)) continue;
    EXPECT(to_half(f).bits == h.bits);
  }
  EXPECT(to_half(65520.0f).bits == 0x7c00);  // rounds to inf
  EXPECT(to_half(65519.0f).bits == 0x7bff);
  EXPECT(to_bf16(1.0f + 1.0f / 256).bits == 0x3f80);  // tie to even
  for (uint32_t bits = 0; bits < 65536; ++bits) {     // every bf16 survives float and back
    const float f = to_float(bfloat16_t{static_cast<uint16_t>(bits)});
    if (!std::isnan(f)) EXPECT(to_bf16(f).bits == bits);
  }
}

static void gather_matches_a_plain_loop() {
  const int64_t B = 2, C = 3, H = 8, W = 12, p = 4, L = (H / p) * (W / p), K = 3;
  std::vector<float> imgs(B * C * H * W);
  std::iota(imgs.begin(), imgs.end(), 0.0f);
  std::vector<int64_t> ids = {5, 0, 2, 1, 1, 4};
  std::vector<float> out(B * K * p * p * C, NAN);
  masking::cpu::gather_patches(view_of(imgs.data(), DType::f32, {B, C, H, W}),
                               view_of(ids.data(), DType::i64, {B, K}), p,
                               view_of(out.data(), DType::f32, {B, K, p * p * C}), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = 0; r < p; ++r)
        for (int64_t q = 0; q < p; ++q)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t l = ids[b * K + k], y = (l / (W / p)) * p + r, x = (l % (W / p)) * p + q;
            EXPECT(out[((b * K + k) * p * p + r * p + q) * C + c] ==
                   imgs[((b * C + c) * H + y) * W + x]);
          }
  ids[3] = L;  // out of range: the core refuses before touching memory
  bool threw = false;
  try {
    masking::cpu::gather_patches(view_of(imgs.data(), DType::f32, {B, C, H, W}),
                                 view_of(ids.data(), DType::i64, {B, K}), p,
                                 view_of(out.data(), DType::f32, {B, K, p * p * C}), 0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw);
}

// The augmentation math: resampling weights, the hue round trip, and the fused kernel on an
// identity view (crop = whole image, output = input size), which must give back the normalised
// source exactly up to float rounding.
static void augment_identity_view_returns_the_source() {
  float w[128];  // >= aa_max_taps(333, 17, bicubic) = 81
  int64_t first = 0, count = 0;
  augment::aa_weights(3, 10, 10, augment::kBilinear, first, count, w);
  EXPECT(first == 3 && std::fabs(w[0] - 1.f) < 1e-6f);
  EXPECT(augment::aa_max_taps(333, 17, augment::kBicubic) <= 128);
  for (int64_t in : {7, 40, 333}) {
    augment::aa_weights(5, in, 17, augment::kBicubic, first, count, w);
    float total = 0.f;
    for (int64_t j = 0; j < count; ++j) total += w[j];
    EXPECT(count <= augment::aa_max_taps(in, 17, augment::kBicubic) && first + count <= in);
    EXPECT(std::fabs(total - 1.f) < 1e-5f);
  }
  for (float r : {0.f, 17.f, 200.f, 255.f}) {
    float a = r, b = 255.f - r / 2, c = 30.f;
    augment::hue_shift(a, b, c, 0.f);
    EXPECT(std::fabs(a - r) < 1e-3f && std::fabs(b - (255.f - r / 2)) < 1e-3f);
  }
  EXPECT(augment::reflect(-2, 5) == 2 && augment::reflect(6, 5) == 2);

  const int64_t H = 5, W = 7;
  std::vector<uint8_t> img(H * W * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>((i * 37) % 256);
  std::vector<int64_t> table = {0, H, W, W * 3, 3, 1};
  std::vector<double> params = {0, 0, H, W, 0, 1, 1, 1, 0, 0, 1, 2, 3, 0, 0, 0};
  std::vector<float> out(3 * H * H, NAN);
  const View t = view_of(table.data(), DType::i64, {1, 6});
  const View p = view_of(params.data(), DType::f64, {1, augment::kParams});
  // A square view of the top-left 5x5 pixels (crop box H x H).
  params[augment::kWidth] = H;
  const View o = view_of(out.data(), DType::f32, {1, 3, H, H});
  augment::cpu::augment_view(reinterpret_cast<uintptr_t>(img.data()), t, p, H, 0, 1, 128.0,
                             {0, 0, 0}, {1, 1, 1}, o, 0);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < H; ++x)
        EXPECT(std::fabs(out[(c * H + y) * H + x] * 255.f - img[(y * W + x) * 3 + c]) < 1e-3f);
}

// The counter-based generator: uniforms in [0, 1) with the right mean, and mask_tokens choosing
// about mlm_probability of the tokens, never a special one, with labels where it chose.
static void mask_tokens_draws_and_labels() {
  double sum = 0;
  for (uint32_t i = 0; i < 100000; ++i) {
    const float u = text::draw_uniform(12345u, 678u, 1, i);
    EXPECT(u >= 0.0f && u < 1.0f);
    sum += u;
  }
  EXPECT(std::fabs(sum / 100000 - 0.5) < 0.005);
  const int64_t B = 4, T = 1000, V = 50;
  std::vector<int64_t> ids(B * T), masked(B * T), labels(B * T);
  std::vector<uint8_t> special(B * T, 0);
  for (int64_t i = 0; i < B * T; ++i) ids[i] = 5 + i % (V - 5);
  for (int64_t b = 0; b < B; ++b) special[b * T] = 1;
  text::cpu::mask_tokens(view_of(ids.data(), DType::i64, {B, T}),
                         view_of(special.data(), DType::b8, {B, T}), View{}, 99, V, 3, 0.2, 0.8,
                         0.1, view_of(masked.data(), DType::i64, {B, T}),
                         view_of(labels.data(), DType::i64, {B, T}));
  int64_t chosen = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    const bool c = labels[i] != -100;
    chosen += c;
    EXPECT(!c || labels[i] == ids[i]);
    EXPECT(c || masked[i] == ids[i]);
    EXPECT(!(c && special[i]));
  }
  EXPECT(std::abs(chosen - 800) < 120);  // 0.2 * 3996, 4.7 standard deviations
}

// word2vec: one sentence [0, 1], window 1, no negatives, no subsampling: two SGD steps, on the
// pair (centre 0, context 1) and then (centre 1, context 0), each -alpha times the gradient of
// -log sigmoid(syn0[context] . syn1neg[centre]); checked in double.
static void word2vec_two_pairs_follow_the_gradient() {
  const int64_t D = 7;
  std::vector<int32_t> tokens = {0, 1}, table = {0, 1};
  std::vector<int64_t> offsets = {0, 2}, counts = {1, 1};
  std::vector<float> syn0(2 * D), syn1(2 * D);
  for (int64_t i = 0; i < 2 * D; ++i) {
    syn0[i] = 0.1f * static_cast<float>(i % 5) - 0.2f;
    syn1[i] = 0.05f * static_cast<float>(i % 3) + 0.01f;
  }
  std::vector<double> s0(syn0.begin(), syn0.end()), s1(syn1.begin(), syn1.end());
  const double alpha = 0.5;
  for (int pair = 0; pair < 2; ++pair) {
    const int64_t centre = pair, ctx = 1 - pair;
    double f = 0;
    for (int64_t i = 0; i < D; ++i) f += s0[ctx * D + i] * s1[centre * D + i];
    const double g = alpha * (1.0 - 1.0 / (1.0 + std::exp(-f)));
    for (int64_t i = 0; i < D; ++i) {
      const double a = s0[ctx * D + i], u = s1[centre * D + i];
      s0[ctx * D + i] = a + g * u;
      s1[centre * D + i] = u + g * a;
    }
  }
  const int64_t kept = word2vec::cpu::train_sgns(
      view_of(tokens.data(), DType::i32, {2}), view_of(offsets.data(), DType::i64, {2}),
      view_of(counts.data(), DType::i64, {2}), view_of(table.data(), DType::i32, {2}),
      view_of(syn0.data(), DType::f32, {2, D}), view_of(syn1.data(), DType::f32, {2, D}), 1, 0, 0.0,
      alpha, alpha, 0, 1, 0, 1, 7);
  EXPECT(kept == 2);
  for (int64_t i = 0; i < 2 * D; ++i) {
    EXPECT(std::fabs(syn0[i] - s0[i]) < 1e-6);
    EXPECT(std::fabs(syn1[i] - s1[i]) < 1e-6);
  }
}

int main() {
  word2vec_two_pairs_follow_the_gradient();
  augment_identity_view_returns_the_source();
  stable_rank_is_a_stable_argsort();
  mask_tokens_draws_and_labels();
  half_roundtrips_every_value();
  gather_matches_a_plain_loop();
  std::printf("core tests: %s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
