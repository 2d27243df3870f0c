// Fused SSL augmentation (SimCLR, BYOL, DINO, MAE views): the per-pixel math shared by the CPU and
// CUDA kernels, and the host entry points.
//
// One view of one image is torchvision's pipeline on a float image: crop + resize (antialiased
// separable filter, as torch's interpolate(antialias=True)), horizontal flip, the four colour
// jitter ops in a per-sample order, grayscale, Gaussian blur (reflect padding), solarize and
// normalise. Pixels are kept on the 0-255 scale in float so that thresholds (solarize's, 128 by
// default) and exact source levels compare exactly; every op is torchvision's float formula
// rescaled by 255.
//
// Layouts:
//   images  int64 [B, 6]  per image: byte offset from `base`, H, W, and the byte strides of a
//                         row, a column and a channel of its uint8 RGB pixels
//   params  float64 [B, kParams]  per image, the columns below
//   out     [B, 3, S, S]  float32 / bfloat16 / float16, normalised
#pragma once

#include <cmath>

#include "pyssl/common.h"

namespace pyssl::augment {

// Columns of the params table.
enum Param : int {
  kTop = 0,
  kLeft,
  kHeight,
  kWidth,
  kFlip,
  kBrightness,  // factors; 1, 1, 1, 0 leave the image unchanged
  kContrast,
  kSaturation,
  kHue,
  kOrder0,  // the jitter ops in application order: 0 brightness, 1 contrast, 2 saturation, 3 hue
  kOrder1,
  kOrder2,
  kOrder3,
  kGray,
  kSigma,  // Gaussian blur sigma; 0 = no blur
  kSolarize,
  kParams
};

enum Interp : int { kBilinear = 0, kBicubic = 1 };

// torch's antialiased interpolation filters (aten/src/ATen/native/cpu/UpSampleKernel.cpp): the
// triangle, and the cubic with a = -0.5 (PIL's; torch uses it whenever antialias=True).
PYSSL_HD float aa_filter(float x, int interp) {
  x = x < 0.f ? -x : x;
  if (interp == kBilinear) return x < 1.f ? 1.f - x : 0.f;
  const float a = -0.5f;
  if (x < 1.f) return ((a + 2.f) * x - (a + 3.f)) * x * x + 1.f;
  if (x < 2.f) return (((x - 5.f) * x + 8.f) * x - 4.f) * a;
  return 0.f;
}

// Filter half-width in input pixels when `in` pixels are resampled to `out`.
PYSSL_HD float aa_support(int64_t in, int64_t out, int interp) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float half = interp == kBilinear ? 1.f : 2.f;
  return scale >= 1.f ? half * scale : half;
}

// Upper bound on the taps one output pixel reads.
PYSSL_HD int64_t aa_max_taps(int64_t in, int64_t out, int interp) {
  return static_cast<int64_t>(2.f * aa_support(in, out, interp)) + 3;
}

// The taps of output pixel i (torch's _compute_weights_aa with align_corners=False): input
// pixels [first, first + count), count <= aa_max_taps, weights aa_tap(span, j, interp).
struct AaSpan {
  int64_t first;
  int64_t count;
  float center;
  float invscale;
  float total;  // sum of the raw filter values, the normaliser
};

PYSSL_HD AaSpan aa_span(int64_t i, int64_t in, int64_t out, int interp) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = aa_support(in, out, interp);
  AaSpan s;
  s.invscale = scale >= 1.f ? 1.f / scale : 1.f;
  s.center = scale * (static_cast<float>(i) + 0.5f);
  int64_t lo = static_cast<int64_t>(s.center - support + 0.5f);
  lo = lo < 0 ? 0 : lo;
  int64_t hi = static_cast<int64_t>(s.center + support + 0.5f);
  hi = hi > in ? in : hi;
  s.first = lo;
  s.count = hi - lo;
  s.total = 0.f;
  for (int64_t j = 0; j < s.count; ++j)
    s.total += aa_filter((static_cast<float>(j + lo) - s.center + 0.5f) * s.invscale, interp);
  return s;
}

PYSSL_HD float aa_tap(const AaSpan& s, int64_t j, int interp) {
  const float w =
      aa_filter((static_cast<float>(j + s.first) - s.center + 0.5f) * s.invscale, interp);
  return s.total != 0.f ? w / s.total : w;
}

// All taps of output pixel i at once, into w[0..count).
PYSSL_HD void aa_weights(int64_t i, int64_t in, int64_t out, int interp, int64_t& first,
                         int64_t& count, float* w) {
  const AaSpan s = aa_span(i, in, out, interp);
  first = s.first;
  count = s.count;
  for (int64_t j = 0; j < s.count; ++j) w[j] = aa_tap(s, j, interp);
}

// c ? a : b between two computed floats (GCC vectorises float selects; boolean arithmetic
// mixed with floats keeps it from vectorising a loop).
PYSSL_HD float pick(bool c, float a, float b) { return c ? a : b; }

// floor for |x| < 2^31 without a libm call (so CPU loops vectorise on the x86-64 baseline).
PYSSL_HD float floor_small(float x) {
  const float t = static_cast<float>(static_cast<int>(x));
  return t - pick(t > x, 1.f, 0.f);
}

PYSSL_HD float clamp255(float v) { return v < 0.f ? 0.f : (v > 255.f ? 255.f : v); }

// torchvision's rgb_to_grayscale weights.
PYSSL_HD float gray(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

// torchvision's _blend(img1, img2, ratio) on the 0-255 scale.
PYSSL_HD float blend(float a, float b, float ratio) {
  return clamp255(ratio * a + (1.f - ratio) * b);
}

// adjust_hue: torchvision's _rgb2hsv, h = (h + factor) mod 1, _hsv2rgb (on 0-255 values; hue and
// saturation are scale-free and v keeps the scale).
PYSSL_HD void hue_shift(float& r, float& g, float& b, float factor) {
  const float mx = r > g ? r : g, mn = r < g ? r : g;
  const float maxc = mx > b ? mx : b;
  const float minc = mn < b ? mn : b;
  const float cr = maxc - minc;
  // torchvision divides by 1 where max == min (then cr == 0); adding eqc does the same without
  // a branch around the division (which would keep the CPU loop from vectorising).
  const float one_if_eq = pick(maxc == minc, 1.f, 0.f);
  const float s = cr / (maxc + one_if_eq);
  const float div = cr + one_if_eq;
  const float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  const float hr = bc - gc, hg = 2.f + rc - bc, hb = 4.f + gc - rc;
  const float h = pick(maxc == r, hr, pick(maxc == g, hg, hb));
  float hh = h / 6.f + 1.f;
  hh = hh - floor_small(hh);  // torch.fmod(h, 1.0): exact for h >= 0
  hh = hh + factor;
  hh = hh - floor_small(hh);  // Python's % 1.0
  const float v = maxc;
  const float h6 = hh * 6.f;
  const float fi = floor_small(h6);
  const float f = h6 - fi;
  const float i = fi - pick(fi >= 6.f, 6.f, 0.f);  // h6 can round up to 6; torchvision: i % 6
  const float p = clamp255(v * (1.f - s));
  const float q = clamp255(v * (1.f - s * f));
  const float t = clamp255(v * (1.f - s * (1.f - f)));
  // _hsv2rgb's table, as selects (branch-free, so CPU loops vectorise):
  //   i:  0  1  2  3  4  5
  //   r:  v  q  p  p  t  v
  //   g:  t  v  v  q  p  p
  //   b:  p  p  t  v  v  q
  r = pick(i == 0.f, v, pick(i == 1.f, q, pick(i == 4.f, t, pick(i == 5.f, v, p))));
  g = pick(i == 0.f, t, pick(i == 1.f, v, pick(i == 2.f, v, pick(i == 3.f, q, p))));
  b = pick(i == 2.f, t, pick(i == 3.f, v, pick(i == 4.f, v, pick(i == 5.f, q, p))));
}

// One jitter op (0 brightness, 1 contrast, 2 saturation, 3 hue) on a pixel; `mean` is the mean
// grayscale level of the image as it enters contrast. Identity factors change nothing, exactly.
PYSSL_HD void jitter_op(int op, float& r, float& g, float& b, const double* p, float mean) {
  if (op == 0) {
    const float f = static_cast<float>(p[kBrightness]);
    r = clamp255(f * r), g = clamp255(f * g), b = clamp255(f * b);
  } else if (op == 1) {
    const float f = static_cast<float>(p[kContrast]);
    r = blend(r, mean, f), g = blend(g, mean, f), b = blend(b, mean, f);
  } else if (op == 2) {
    const float f = static_cast<float>(p[kSaturation]);
    const float l = gray(r, g, b);
    r = blend(r, l, f), g = blend(g, l, f), b = blend(b, l, f);
  } else if (p[kHue] != 0.0) {
    hue_shift(r, g, b, static_cast<float>(p[kHue]));
  }
}

// Position of contrast in the order (4 when the order never reaches it).
PYSSL_HD int contrast_position(const double* p) {
  for (int k = 0; k < 4; ++k)
    if (static_cast<int>(p[kOrder0 + k]) == 1) return k;
  return 4;
}

// Jitter ops at positions [from, to) of the order.
PYSSL_HD void jitter_range(int from, int to, float& r, float& g, float& b, const double* p,
                           float mean) {
  for (int k = from; k < to; ++k) jitter_op(static_cast<int>(p[kOrder0 + k]), r, g, b, p, mean);
}

// Everything after contrast and before blur: the rest of the jitter, then grayscale.
PYSSL_HD void after_contrast(int cpos, float& r, float& g, float& b, const double* p, float mean) {
  if (cpos < 4) jitter_op(1, r, g, b, p, mean);
  jitter_range(cpos + 1, 4, r, g, b, p, mean);
  if (p[kGray] != 0.0) {
    const float l = gray(r, g, b);
    r = g = b = l;
  }
}

// solarize (pixels >= threshold, on the 0-255 scale, are inverted, as torchvision's solarize)
// then normalise.
PYSSL_HD float finish(float v, bool solarize, float threshold, float scale, float shift) {
  if (solarize && v >= threshold) v = 255.f - v;
  return v * scale + shift;
}

// torchvision's _get_gaussian_kernel1d: exp(-x^2 / 2 sigma^2) at x = -(k-1)/2 .. (k-1)/2,
// normalised to sum 1. w has k entries.
PYSSL_HD void gaussian_weights(int64_t k, float sigma, float* w) {
  const float half = static_cast<float>(k - 1) * 0.5f;
  float total = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    const float x = (static_cast<float>(j) - half) / sigma;
    w[j] = expf(-0.5f * x * x);
    total += w[j];
  }
  // Far taps of a narrow kernel are subnormal (exp(-0.5 x^2) below 1e-38), and every multiply by
  // a subnormal costs ~100 cycles on x86: flush them to 0 (a change below 1e-30 per tap).
  for (int64_t j = 0; j < k; ++j) w[j] = w[j] / total < 1e-30f ? 0.f : w[j] / total;
}

// Tap j of that kernel without the table (a GPU thread computes its own): total is the sum of
// the raw values, gaussian_total(k, sigma).
PYSSL_HD float gaussian_total(int64_t k, float sigma) {
  const float half = static_cast<float>(k - 1) * 0.5f;
  float total = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    const float x = (static_cast<float>(j) - half) / sigma;
    total += expf(-0.5f * x * x);
  }
  return total;
}

PYSSL_HD float gaussian_tap(int64_t j, int64_t k, float sigma, float total) {
  const float x = (static_cast<float>(j) - static_cast<float>(k - 1) * 0.5f) / sigma;
  const float w = expf(-0.5f * x * x) / total;
  return w < 1e-30f ? 0.f : w;  // as gaussian_weights
}

// Reflect padding's source index for i in [-(n-1), 2n-2] (torch's "reflect": edge not repeated).
PYSSL_HD int64_t reflect(int64_t i, int64_t n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * n - 2 - i;
  return i;
}

// Host entry points. `solarize_threshold` is the view's solarize threshold on the 0-255 scale
// (in [0, 255]); `mean` and `std` hold three values (normalisation per channel). The kernels
// read only inside each image's crop box, which the entry points check against H and W.
#define PYSSL_AUGMENT_API(ns)                                                              \
  namespace ns {                                                                           \
  void augment_view(uintptr_t base, const View& images, const View& params, int64_t size,  \
                    int64_t interpolation, int64_t blur_kernel, double solarize_threshold, \
                    const std::vector<double>& mean, const std::vector<double>& std,       \
                    const View& out, uintptr_t stream);                                    \
  }

PYSSL_AUGMENT_API(cpu)
PYSSL_AUGMENT_API(cuda)

}  // namespace pyssl::augment
