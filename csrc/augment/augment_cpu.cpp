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

template <typename T>
void one_image(const uint8_t* src, const int64_t* im, const double* p, int64_t S, int interp,
               int64_t blur_kernel, const float* scale, const float* shift, T* out, Scratch& s) {
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
  const bool jitter_before = cpos > 0;
  s.img.resize(static_cast<size_t>(3 * SS));
  float* R = s.img.data();
  float* G = R + SS;
  float* Bc = G + SS;
  double total = 0.0;
  for (int64_t oy = 0; oy < S; ++oy) {
    float* lr = R + oy * S;
    float* lg = G + oy * S;
    float* lb = Bc + oy * S;
    for (int64_t ox = 0; ox < S; ++ox) lr[ox] = lg[ox] = lb[ox] = 0.f;
    const float* wk = s.wy.data() + oy * Ky;
    for (int64_t k = 0; k < s.cy[oy]; ++k) {
      const float wv = wk[k];
      const float* r0 = s.rows.data() + (s.fy[oy] + k) * 3 * S;
      for (int64_t ox = 0; ox < S; ++ox) {
        lr[ox] += wv * r0[ox];
        lg[ox] += wv * r0[S + ox];
        lb[ox] += wv * r0[2 * S + ox];
      }
    }
    float row_sum = 0.f;
    for (int64_t ox = 0; ox < S; ++ox) {
      float r = clamp255(lr[ox]), g = clamp255(lg[ox]), b = clamp255(lb[ox]);
      if (jitter_before) jitter_range(0, cpos, r, g, b, p, 0.f);
      lr[ox] = r, lg[ox] = g, lb[ox] = b;
      row_sum += gray(r, g, b);
    }
    total += row_sum;
  }
  const float mean = static_cast<float>(total / static_cast<double>(SS));

  const bool blur = p[kSigma] > 0.0;
  const bool solarize = p[kSolarize] != 0.0;
  for (int64_t i = 0; i < SS; ++i) {
    float r = R[i], g = G[i], b = Bc[i];
    after_contrast(cpos, r, g, b, p, mean);
    if (blur) {
      R[i] = r, G[i] = g, Bc[i] = b;
    } else {
      store(out + i, finish(r, solarize, scale[0], shift[0]));
      store(out + SS + i, finish(g, solarize, scale[1], shift[1]));
      store(out + 2 * SS + i, finish(b, solarize, scale[2], shift[2]));
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
      for (int64_t x = 0; x < S; ++x) {
        float a = 0.f;
        if (x >= rad && x + rad < S) {
          const float* q = in + x - rad;
          for (int64_t k = 0; k < blur_kernel; ++k) a += gk[k] * q[k];
        } else {
          for (int64_t k = 0; k < blur_kernel; ++k) a += gk[k] * in[reflect(x + k - rad, S)];
        }
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
      for (int64_t x = 0; x < S; ++x) store(o + x, finish(line[x], solarize, scale[c], shift[c]));
    }
  }
}

}  // namespace

void augment_view(uintptr_t base, const View& images, const View& params, int64_t size,
                  int64_t interpolation, int64_t blur_kernel, const std::vector<double>& mean,
                  const std::vector<double>& std, const View& out, uintptr_t /*stream*/) {
  const int64_t B = check_augment(images, params, size, interpolation, blur_kernel, mean, std,
                                  out, /*host_tables=*/true);
  prepare_output(out);
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    shift[c] = static_cast<float>(-mean[c] / std[c]);
  }
  const int64_t* t = images.data<int64_t>();
  const double* p = params.data<double>();
  const int interp = static_cast<int>(interpolation);
  dispatch_float(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    parallel_for(B, [&](int64_t b) {
      thread_local Scratch s;
      const int64_t* im = t + 6 * b;
      const uint8_t* src = reinterpret_cast<const uint8_t*>(base + static_cast<uintptr_t>(im[0]));
      one_image(src, im, p + kParams * b, size, interp, blur_kernel, scale, shift,
                o + b * 3 * size * size, s);
    });
  });
}

}  // namespace pyssl::augment::cpu
