// CPU kernels of the colour family: OpenMP over fixed chunks of (image, pixel range); each pixel
// is independent, so results do not depend on the thread count. Per chunk, the three planes are
// read through the accumulation type, converted with the PYSSL_HD math of colour.h and stored
// in the input dtype.
// No trapping math in this file: under GCC's default -ftrapping-math a floating-point compare may
// raise an exception, so a loop with a select (every branch of the sRGB and CIE curves, the
// clamps) is not if-converted and does not vectorise (measured: 298 -> see bench/NOTES.md).
// Nothing here reads the floating-point exception flags.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <algorithm>
#include <string>
#include <type_traits>

#include "colour/colour.h"
#include "pyssl/parallel.h"

namespace pyssl::colour::cpu {
namespace {

constexpr int64_t kChunk = 4096;  // pixels per task: 48 KiB of float32 in, 48 KiB out

void check_pair(const View& in, const char* in_name, const View& out) {
  check_view(in, in_name, 3, true);
  check_view(out, "out", 3, true);
  check(in.size(1) == 3,
        std::string(in_name) + ": expected 3 channels, got " + std::to_string(in.size(1)));
  check(in.shape == out.shape, std::string("out: shape differs from ") + in_name + "'s");
  check_same_dtype(in, in_name, out, "out");
}

// One chunk of pixels. flatten: the per-pixel math must be inlined for the loop to vectorise
// (GCC otherwise keeps rgb_to_lab_px as a call).
template <typename T>
__attribute__((flatten)) void rgb_chunk(const T* __restrict r, const T* __restrict g,
                                        const T* __restrict b, T* __restrict l, T* __restrict a,
                                        T* __restrict bb, int64_t p0, int64_t p1) {
  using S = typename Acc<T>::type;
  for (int64_t k = p0; k < p1; ++k) {
    S L, A, B;
    rgb_to_lab_px<S>(load(r + k), load(g + k), load(b + k), L, A, B);
    store(l + k, L), store(a + k, A), store(bb + k, B);
  }
}

template <typename T, bool Clip>
__attribute__((flatten)) void lab_chunk(const T* __restrict l, const T* __restrict a,
                                        const T* __restrict bb, T* __restrict r, T* __restrict g,
                                        T* __restrict b, int64_t p0, int64_t p1) {
  using S = typename Acc<T>::type;
  for (int64_t k = p0; k < p1; ++k) {
    S R, G, B;
    lab_to_rgb_px<S>(load(l + k), load(a + k), load(bb + k), Clip, R, G, B);
    store(r + k, R), store(g + k, G), store(b + k, B);
  }
}

template <typename T>
__attribute__((flatten)) void rgb_vjp_chunk(const T* __restrict x, const T* __restrict gup,
                                            T* __restrict gin, int64_t p, int64_t p0, int64_t p1) {
  using S = typename Acc<T>::type;
  for (int64_t k = p0; k < p1; ++k) {
    S d0, d1, d2;
    rgb_to_lab_vjp<S>(load(x + k), load(x + p + k), load(x + 2 * p + k), load(gup + k),
                      load(gup + p + k), load(gup + 2 * p + k), d0, d1, d2);
    store(gin + k, d0), store(gin + p + k, d1), store(gin + 2 * p + k, d2);
  }
}

template <typename T, bool Clip>
__attribute__((flatten)) void lab_vjp_chunk(const T* __restrict x, const T* __restrict gup,
                                            T* __restrict gin, int64_t p, int64_t p0, int64_t p1) {
  using S = typename Acc<T>::type;
  for (int64_t k = p0; k < p1; ++k) {
    S d0, d1, d2;
    lab_to_rgb_vjp<S>(load(x + k), load(x + p + k), load(x + 2 * p + k), Clip, load(gup + k),
                      load(gup + p + k), load(gup + 2 * p + k), d0, d1, d2);
    store(gin + k, d0), store(gin + p + k, d1), store(gin + 2 * p + k, d2);
  }
}

// float32 on x86-64 CPUs with AVX2 + FMA: the same chunks compiled 8 wide (the baseline build
// targets SSE2, 4 wide). flatten inlines the portable template and its per-pixel math into
// each wrapper, which then carries the wider target; chosen at run time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYSSL_COLOUR_AVX2 1
#define PYSSL_AVX2 __attribute__((target("avx2,fma"), flatten))
PYSSL_AVX2 void rgb_chunk_avx2(const float* r, const float* g, const float* b, float* l, float* a,
                               float* bb, int64_t p0, int64_t p1) {
  rgb_chunk<float>(r, g, b, l, a, bb, p0, p1);
}
template <bool Clip>
PYSSL_AVX2 void lab_chunk_avx2(const float* l, const float* a, const float* bb, float* r, float* g,
                               float* b, int64_t p0, int64_t p1) {
  lab_chunk<float, Clip>(l, a, bb, r, g, b, p0, p1);
}
PYSSL_AVX2 void rgb_vjp_chunk_avx2(const float* x, const float* gup, float* gin, int64_t p,
                                   int64_t p0, int64_t p1) {
  rgb_vjp_chunk<float>(x, gup, gin, p, p0, p1);
}
template <bool Clip>
PYSSL_AVX2 void lab_vjp_chunk_avx2(const float* x, const float* gup, float* gin, int64_t p,
                                   int64_t p0, int64_t p1) {
  lab_vjp_chunk<float, Clip>(x, gup, gin, p, p0, p1);
}
#undef PYSSL_AVX2
bool use_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
bool use_avx2() { return false; }
#endif

template <typename T>
constexpr bool kIsFloat = std::is_same_v<std::remove_cv_t<T>, float>;

// The backward's loop: chunk(x, grad, grad_in of one image, P, p0, p1).
template <typename F>
void for_vjp_chunks(const View& x, const View& grad, const View& gin, F&& chunk) {
  const int64_t n = x.size(0), p = x.size(2);
  if (n == 0 || p == 0) return;
  prepare_output(gin);
  const int64_t per_image = (p + kChunk - 1) / kChunk;
  dispatch_float(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_for(n * per_image, [&](int64_t task) {
      const int64_t i = task / per_image;
      const int64_t p0 = (task % per_image) * kChunk;
      const int64_t p1 = std::min(p, p0 + kChunk);
      chunk(x.data<T>() + i * 3 * p, grad.data<T>() + i * 3 * p, gin.data<T>() + i * 3 * p, p, p0,
            p1);
    });
  });
}

// Runs chunk(planes of in, planes of out, p0, p1) over fixed chunks of every image.
template <typename F>
void for_chunks(const View& in, const View& out, F&& chunk) {
  const int64_t n = in.size(0), p = in.size(2);
  if (n == 0 || p == 0) return;
  prepare_output(out);
  const int64_t per_image = (p + kChunk - 1) / kChunk;
  dispatch_float(in.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* src = in.data<T>();
    T* dst = out.data<T>();
    parallel_for(n * per_image, [&](int64_t task) {
      const int64_t i = task / per_image;
      const int64_t p0 = (task % per_image) * kChunk;
      const int64_t p1 = std::min(p, p0 + kChunk);
      const T* s = src + i * 3 * p;
      T* d = dst + i * 3 * p;
      chunk(s, s + p, s + 2 * p, d, d + p, d + 2 * p, p0, p1);
    });
  });
}

}  // namespace

void rgb_to_lab(const View& img, const View& out, uintptr_t) {
  check_pair(img, "img", out);
  for_chunks(img, out,
             [](const auto* r, const auto* g, const auto* b, auto* l, auto* a, auto* bb, int64_t p0,
                int64_t p1) {
#ifdef PYSSL_COLOUR_AVX2
               if constexpr (kIsFloat<std::remove_pointer_t<decltype(r)>>) {
                 if (use_avx2()) return rgb_chunk_avx2(r, g, b, l, a, bb, p0, p1);
               }
#endif
               rgb_chunk(r, g, b, l, a, bb, p0, p1);
             });
}

void lab_to_rgb(const View& lab, bool clip, const View& out, uintptr_t) {
  check_pair(lab, "lab", out);
  for_chunks(lab, out,
             [clip](const auto* l, const auto* a, const auto* bb, auto* r, auto* g, auto* b,
                    int64_t p0, int64_t p1) {
               using T = std::remove_cv_t<std::remove_pointer_t<decltype(l)>>;
#ifdef PYSSL_COLOUR_AVX2
               if constexpr (kIsFloat<T>) {
                 if (use_avx2()) {
                   if (clip) return lab_chunk_avx2<true>(l, a, bb, r, g, b, p0, p1);
                   return lab_chunk_avx2<false>(l, a, bb, r, g, b, p0, p1);
                 }
               }
#endif
               if (clip)
                 lab_chunk<T, true>(l, a, bb, r, g, b, p0, p1);
               else
                 lab_chunk<T, false>(l, a, bb, r, g, b, p0, p1);
             });
}

void rgb_to_lab_backward(const View& img, const View& grad, const View& grad_in, uintptr_t) {
  check_pair(img, "img", grad_in);
  check_pair(img, "img", grad);
  for_vjp_chunks(img, grad, grad_in,
                 [](const auto* x, const auto* g, auto* gi, int64_t p, int64_t p0, int64_t p1) {
#ifdef PYSSL_COLOUR_AVX2
                   if constexpr (kIsFloat<std::remove_pointer_t<decltype(x)>>) {
                     if (use_avx2()) return rgb_vjp_chunk_avx2(x, g, gi, p, p0, p1);
                   }
#endif
                   rgb_vjp_chunk(x, g, gi, p, p0, p1);
                 });
}

void lab_to_rgb_backward(const View& lab, const View& grad, bool clip, const View& grad_in,
                         uintptr_t) {
  check_pair(lab, "lab", grad_in);
  check_pair(lab, "lab", grad);
  for_vjp_chunks(lab, grad, grad_in,
                 [clip](const auto* x, const auto* g, auto* gi, int64_t p, int64_t p0, int64_t p1) {
                   using T = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
#ifdef PYSSL_COLOUR_AVX2
                   if constexpr (kIsFloat<T>) {
                     if (use_avx2()) {
                       if (clip) return lab_vjp_chunk_avx2<true>(x, g, gi, p, p0, p1);
                       return lab_vjp_chunk_avx2<false>(x, g, gi, p, p0, p1);
                     }
                   }
#endif
                   if (clip)
                     lab_vjp_chunk<T, true>(x, g, gi, p, p0, p1);
                   else
                     lab_vjp_chunk<T, false>(x, g, gi, p, p0, p1);
                 });
}

}  // namespace pyssl::colour::cpu
