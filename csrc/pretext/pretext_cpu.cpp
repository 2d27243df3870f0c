// The pretext family's CPU kernels: RotNet's four rotations of each image, and their gradient.
//
// Rotations 1 and 3 are transposes, so a row-by-row loop would read the source a column at a
// time; the loops walk 32 x 32 tiles so both sides of each tile stay in L1.
#include <algorithm>
#include <string>

#include "pretext/pretext.h"
#include "pyssl/parallel.h"

namespace pyssl::pretext::cpu {
namespace {

constexpr int64_t kTile = 32;

// Calls f(W{}) with W an unsigned integer as wide as one element: rotations only move bytes.
template <typename F>
void dispatch_width(DType t, F&& f) {
  switch (element_size(t)) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    default:
      return f(uint64_t{});
  }
}

// Checks imgs [B, C, S, S] against a [B, 4, C, S, S] tensor named `four`; returns S.
int64_t check_shapes(const View& imgs, const char* imgs_name, const View& four,
                     const char* four_name, bool float_type) {
  check_view(imgs, imgs_name, 4, float_type);
  check_view(four, four_name, 5, float_type);
  check_same_dtype(imgs, imgs_name, four, four_name);
  const int64_t S = imgs.size(2);
  check(imgs.size(3) == S, std::string(imgs_name) + ": expected square images, got " +
                               std::to_string(S) + "x" + std::to_string(imgs.size(3)));
  check(four.size(0) == imgs.size(0) && four.size(1) == 4 && four.size(2) == imgs.size(1) &&
            four.size(3) == S && four.size(4) == S,
        std::string(four_name) + ": expected shape [B, 4, C, S, S] matching " + imgs_name);
  return S;
}

}  // namespace

void rotations(const View& imgs, const View& out) {
  check(imgs.dtype == DType::u8 || imgs.dtype == DType::f32 || imgs.dtype == DType::f64 ||
            imgs.dtype == DType::f16 || imgs.dtype == DType::bf16,
        std::string("imgs: expected uint8 or a floating dtype, got ") + dtype_name(imgs.dtype));
  const int64_t S = check_shapes(imgs, "imgs", out, "out", false);
  const int64_t B = imgs.size(0), C = imgs.size(1), plane = S * S;
  const int64_t tiles = (S + kTile - 1) / kTile;
  prepare_output(out);
  dispatch_width(imgs.dtype, [&](auto w) {
    using W = decltype(w);
    const W* src = imgs.data<W>();
    W* dst = out.data<W>();
    // one task per (image, rotation, channel, row of tiles): output rows are written in order
    parallel_for(B * 4 * C * tiles, [&](int64_t task) {
      const int64_t ti = task % tiles;
      const int64_t c = (task / tiles) % C;
      const int k = static_cast<int>((task / (tiles * C)) % 4);
      const int64_t b = task / (tiles * C * 4);
      const W* s = src + (b * C + c) * plane;
      W* d = dst + ((b * 4 + k) * C + c) * plane;
      const int64_t i0 = ti * kTile, i1 = std::min(S, i0 + kTile);
      // one loop per rotation, so each inner loop has a fixed stride the compiler vectorises
      switch (k) {
        case 0:
          std::copy(s + i0 * S, s + i1 * S, d + i0 * S);
          break;
        case 2:  // row S-1-i reversed
          for (int64_t i = i0; i < i1; ++i)
            std::reverse_copy(s + (S - 1 - i) * S, s + (S - i) * S, d + i * S);
          break;
        default:  // transposes: tile by tile so both sides stay in L1
          for (int64_t tj = 0; tj < S; tj += kTile) {
            const int64_t j1 = std::min(S, tj + kTile);
            for (int64_t i = i0; i < i1; ++i) {
              W* row = d + i * S;
              if (k == 1) {
                const W* col = s + (S - 1 - i);  // x[j][S-1-i]
                for (int64_t j = tj; j < j1; ++j) row[j] = col[j * S];
              } else {
                const W* col = s + i;  // x[S-1-j][i]
                for (int64_t j = tj; j < j1; ++j) row[j] = col[(S - 1 - j) * S];
              }
            }
          }
      }
    });
  });
}

void rotations_backward(const View& grad_out, const View& grad_imgs) {
  const int64_t S = check_shapes(grad_imgs, "grad_imgs", grad_out, "grad_out", true);
  const int64_t B = grad_imgs.size(0), C = grad_imgs.size(1), plane = S * S;
  const int64_t tiles = (S + kTile - 1) / kTile;
  prepare_output(grad_imgs);
  dispatch_float(grad_imgs.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const T* g = grad_out.data<T>();
    T* dx = grad_imgs.data<T>();
    // input pixel (y, x) was read by output (i, j) of rotation k where rotation_source(k, i, j)
    // = (y, x); rotation_source(-k) inverts the map, so each input pixel gathers its four
    // gradients (no scatter, no atomics) in the fixed order k = 0..3
    parallel_for(B * C * tiles, [&](int64_t task) {
      const int64_t ti = task % tiles;
      const int64_t bc = task / tiles;
      const int64_t b = bc / C, c = bc % C;
      const T* g0 = g + ((b * 4 + 0) * C + c) * plane;
      const T* g1 = g + ((b * 4 + 1) * C + c) * plane;
      const T* g2 = g + ((b * 4 + 2) * C + c) * plane;
      const T* g3 = g + ((b * 4 + 3) * C + c) * plane;
      T* d = dx + bc * plane;
      const int64_t y1 = std::min(S, (ti + 1) * kTile);
      for (int64_t tx = 0; tx < S; tx += kTile) {
        const int64_t x1 = std::min(S, tx + kTile);
        for (int64_t y = ti * kTile; y < y1; ++y)
          for (int64_t x = tx; x < x1; ++x) {
            // (y, x) was read by rotation 1 at (S-1-x, y), 2 at (S-1-y, S-1-x), 3 at (x, S-1-y)
            A sum = A(load(g0 + y * S + x));
            sum += A(load(g1 + (S - 1 - x) * S + y));
            sum += A(load(g2 + (S - 1 - y) * S + (S - 1 - x)));
            sum += A(load(g3 + x * S + (S - 1 - y)));
            store(d + y * S + x, sum);
          }
      }
    });
  });
}

}  // namespace pyssl::pretext::cpu
