// CPU kernel of the augmentation family: OpenMP over images, one fused pass per view.
//
// Per image: horizontal resampling of the crop's rows straight from the uint8 source (each source
// pixel read once) into a float buffer of crop-height x S; vertical resampling, clamping and the
// jitter ops up to contrast, with the grayscale sum contrast needs (contrast blends with the mean
// of the image as it enters contrast, a whole-image reduction); then the rest of the jitter,
// grayscale, and either solarize + normalise straight into the output or, for blurred images, a
// separable Gaussian pass (reflect padding) that ends in solarize + normalise. Each image is
// computed by one thread in a fixed order, so results do not depend on the thread count.
#include <cmath>
#include <vector>

#include "augment/augment.h"
#include "augment/augment_checks.h"
#include "pyssl/parallel.h"

namespace pyssl::augment::cpu {
namespace {

struct Scratch {
  std::vector<float> wx, wy, gk;
  std::vector<int64_t> fx, cx, fy, cy;
  std::vector<float> rows;  // [crop rows][3][S], horizontally resampled
  std::vector<float> img;   // [3][S][S]
  std::vector<float> tmp;   // [3][S][S], blur's horizontal pass
};

// Taps of every output index of one axis; index i of the output reads resampled index
// flip ? S-1-i : i. Returns the row length of the weight table.
int64_t axis_weights(int64_t in, int64_t S, int interp, bool flip, std::vector<float>& w,
                     std::vector<int64_t>& first, std::vector<int64_t>& count) {
  const int64_t K = aa_max_taps(in, S, interp);
  w.assign(static_cast<size_t>(S * K), 0.f);
  first.resize(static_cast<size_t>(S));
  count.resize(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) {
    const int64_t src = flip ? S - 1 - i : i;
    aa_weights(src, in, S, interp, first[i], count[i], w.data() + i * K);
  }
  return K;
}

// One jitter op over n pixels of three planes: the per-pixel math of augment.h in loops the
// compiler vectorises.
__attribute__((flatten)) void jitter_row(int op, float* __restrict r, float* __restrict g,
                                         float* __restrict b, int64_t n, const double* p,
                                         float mean) {
  if (op == 0) {
    const float f = static_cast<float>(p[kBrightness]);
    if (f == 1.f) return;
    for (int64_t x = 0; x < n; ++x) {
      r[x] = clamp255(f * r[x]), g[x] = clamp255(f * g[x]), b[x] = clamp255(f * b[x]);
    }
  } else if (op == 1) {
    const float f = static_cast<float>(p[kContrast]);
    if (f == 1.f) return;
    for (int64_t x = 0; x < n; ++x) {
      r[x] = blend(r[x], mean, f), g[x] = blend(g[x], mean, f), b[x] = blend(b[x], mean, f);
    }
  } else if (op == 2) {
    const float f = static_cast<float>(p[kSaturation]);
    if (f == 1.f) return;
    for (int64_t x = 0; x < n; ++x) {
      const float l = gray(r[x], g[x], b[x]);
      r[x] = blend(r[x], l, f), g[x] = blend(g[x], l, f), b[x] = blend(b[x], l, f);
    }
  } else if (p[kHue] != 0.0) {
    const float f = static_cast<float>(p[kHue]);
    for (int64_t x = 0; x < n; ++x) hue_shift(r[x], g[x], b[x], f);
  }
}

// One output row of the vertical pass: out[c][x] = sum_k w[k] * rows[k][c][x]. A function of
// its own so that the restrict-qualified accumulation vectorises.
__attribute__((noinline)) void vertical_taps(float* __restrict lr, float* __restrict lg,
                                             float* __restrict lb, const float* __restrict rows,
                                             const float* __restrict w, int64_t taps, int64_t S) {
  for (int64_t x = 0; x < S; ++x) lr[x] = lg[x] = lb[x] = 0.f;
  for (int64_t k = 0; k < taps; ++k) {
    const float wv = w[k];
    const float* r0 = rows + k * 3 * S;
    for (int64_t x = 0; x < S; ++x) {
      lr[x] += wv * r0[x];
      lg[x] += wv * r0[S + x];
      lb[x] += wv * r0[2 * S + x];
    }
  }
}

template <typename T>
void one_image(const uint8_t* src, const int64_t* im, const double* p, int64_t S, int interp,
               int64_t blur_kernel, float threshold, const float* scale, const float* shift, T* out,
               Scratch& s) {
  const int64_t sy = im[3], sx = im[4], sc = im[5];
  const int64_t top = static_cast<int64_t>(p[kTop]), left = static_cast<int64_t>(p[kLeft]);
  const int64_t h = static_cast<int64_t>(p[kHeight]), w = static_cast<int64_t>(p[kWidth]);
  const int64_t SS = S * S;
  const int64_t Kx = axis_weights(w, S, interp, p[kFlip] != 0.0, s.wx, s.fx, s.cx);
  const int64_t Ky = axis_weights(h, S, interp, false, s.wy, s.fy, s.cy);

  // Horizontal pass over the crop's rows, from uint8.
  s.rows.resize(static_cast<size_t>(h * 3 * S));
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* line = src + (top + y) * sy + left * sx;
    float* r0 = s.rows.data() + y * 3 * S;
    for (int64_t ox = 0; ox < S; ++ox) {
      const float* wk = s.wx.data() + ox * Kx;
      const uint8_t* px = line + s.fx[ox] * sx;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f;
      for (int64_t k = 0; k < s.cx[ox]; ++k) {
        a0 += wk[k] * px[0];
        a1 += wk[k] * px[sc];
        a2 += wk[k] * px[2 * sc];
        px += sx;
      }
      r0[ox] = a0, r0[S + ox] = a1, r0[2 * S + ox] = a2;
    }
  }

  // Vertical pass, clamp, jitter up to contrast, grayscale sum.
  const int cpos = contrast_position(p);
  s.img.resize(static_cast<size_t>(3 * SS));
  float* R = s.img.data();
  float* G = R + SS;
  float* Bc = G + SS;
  double total = 0.0;
  for (int64_t oy = 0; oy < S; ++oy) {
    float* __restrict lr = R + oy * S;
    float* __restrict lg = G + oy * S;
    float* __restrict lb = Bc + oy * S;
    vertical_taps(lr, lg, lb, s.rows.data() + s.fy[oy] * 3 * S, s.wy.data() + oy * Ky, s.cy[oy], S);
    for (int64_t ox = 0; ox < S; ++ox) {
      lr[ox] = clamp255(lr[ox]), lg[ox] = clamp255(lg[ox]), lb[ox] = clamp255(lb[ox]);
    }
    for (int k = 0; k < cpos; ++k)
      jitter_row(static_cast<int>(p[kOrder0 + k]), lr, lg, lb, S, p, 0.f);
    if (cpos < 4) {  // only contrast needs the mean
      float row_sum = 0.f;
      for (int64_t ox = 0; ox < S; ++ox) row_sum += gray(lr[ox], lg[ox], lb[ox]);
      total += row_sum;
    }
  }
  const float mean = static_cast<float>(total / static_cast<double>(SS));

  // Contrast, the rest of the jitter, grayscale; without blur also solarize + normalise.
  const bool blur = p[kSigma] > 0.0;
  const bool solarize = p[kSolarize] != 0.0;
  const bool grayscale = p[kGray] != 0.0;
  for (int64_t y = 0; y < S; ++y) {
    float* lr = R + y * S;
    float* lg = G + y * S;
    float* lb = Bc + y * S;
    for (int k = cpos; k < 4; ++k)
      jitter_row(static_cast<int>(p[kOrder0 + k]), lr, lg, lb, S, p, mean);
    if (grayscale) {
      for (int64_t x = 0; x < S; ++x) lr[x] = lg[x] = lb[x] = gray(lr[x], lg[x], lb[x]);
    }
    if (blur) continue;
    T* o = out + y * S;
    for (int64_t x = 0; x < S; ++x) {
      store(o + x, finish(lr[x], solarize, threshold, scale[0], shift[0]));
      store(o + SS + x, finish(lg[x], solarize, threshold, scale[1], shift[1]));
      store(o + 2 * SS + x, finish(lb[x], solarize, threshold, scale[2], shift[2]));
    }
  }
  if (!blur) return;

  // Separable Gaussian blur, reflect padding: rows into tmp, then columns into the output.
  const int64_t rad = blur_kernel / 2;
  s.gk.resize(static_cast<size_t>(blur_kernel));
  gaussian_weights(blur_kernel, static_cast<float>(p[kSigma]), s.gk.data());
  const float* gk = s.gk.data();
  s.tmp.resize(static_cast<size_t>(3 * SS));
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t y = 0; y < S; ++y) {
      const float* in = s.img.data() + c * SS + y * S;
      float* o = s.tmp.data() + c * SS + y * S;
      // Interior columns tap-major (vectorises), the reflected edges one by one.
      const int64_t lo = rad < S ? rad : S, hi = S - rad > lo ? S - rad : lo;
      for (int64_t x = lo; x < hi; ++x) o[x] = 0.f;
      for (int64_t k = 0; k < blur_kernel; ++k) {
        const float wv = gk[k];
        const float* q = in + k - rad;
        for (int64_t x = lo; x < hi; ++x) o[x] += wv * q[x];
      }
      for (int64_t x = 0; x < S; ++x) {
        if (x >= lo && x < hi) continue;
        float a = 0.f;
        for (int64_t k = 0; k < blur_kernel; ++k) a += gk[k] * in[reflect(x + k - rad, S)];
        o[x] = a;
      }
    }
  }
  std::vector<float>& acc = s.img;  // reused: the pre-blur image is no longer needed
  for (int64_t c = 0; c < 3; ++c) {
    float* line = acc.data();
    for (int64_t y = 0; y < S; ++y) {
      for (int64_t x = 0; x < S; ++x) line[x] = 0.f;
      for (int64_t k = 0; k < blur_kernel; ++k) {
        const float wv = gk[k];
        const float* q = s.tmp.data() + c * SS + reflect(y + k - rad, S) * S;
        for (int64_t x = 0; x < S; ++x) line[x] += wv * q[x];
      }
      T* o = out + c * SS + y * S;
      for (int64_t x = 0; x < S; ++x)
        store(o + x, finish(line[x], solarize, threshold, scale[c], shift[c]));
    }
  }
}

}  // namespace

void augment_view(uintptr_t base, const View& images, const View& params, int64_t size,
                  int64_t interpolation, int64_t blur_kernel, double solarize_threshold,
                  const std::vector<double>& mean, const std::vector<double>& std, const View& out,
                  uintptr_t /*stream*/) {
  const int64_t B = check_augment(images, params, size, interpolation, blur_kernel,
                                  solarize_threshold, mean, std, out, /*host_tables=*/true);
  prepare_output(out);
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    shift[c] = static_cast<float>(-mean[c] / std[c]);
  }
  const int64_t* t = images.data<int64_t>();
  const double* p = params.data<double>();
  const int interp = static_cast<int>(interpolation);
  const float threshold = static_cast<float>(solarize_threshold);
  dispatch_float(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    parallel_for(B, [&](int64_t b) {
      thread_local Scratch s;
      const int64_t* im = t + 6 * b;
      const uint8_t* src = reinterpret_cast<const uint8_t*>(base + static_cast<uintptr_t>(im[0]));
      one_image(src, im, p + kParams * b, size, interp, blur_kernel, threshold, scale, shift,
                o + b * 3 * size * size, s);
    });
  });
}

}  // namespace pyssl::augment::cpu
