// The colour family: sRGB <-> CIELAB, the per-pixel math shared by the CPU (and a future CUDA)
// kernel, and the host entry points.
//
// Conventions (those of kornia.color.rgb_to_lab / lab_to_rgb and scikit-image's rgb2lab /
// lab2rgb, so users get the numbers they know):
//   sRGB transfer (IEC 61966-2-1): linear = c / 12.92 for c <= 0.04045, else
//     ((c + 0.055) / 1.055)^2.4; inverse: 12.92 l for l <= 0.0031308, else 1.055 l^(1/2.4) - 0.055
//   RGB -> XYZ: the sRGB matrix with 6-digit coefficients (kornia's rgb_to_xyz, skimage's
//     xyz_from_rgb); XYZ -> RGB its float64 inverse (kornia's xyz_to_rgb)
//   white: D65, 2-degree observer, (0.95047, 1, 1.08883) (kornia's and skimage's)
//   f(t) = t^(1/3) for t > (6/29)^3, else t / (3 (6/29)^2) + 4/29 (the exact CIE constants;
//     kornia and skimage round them to 0.008856 and 7.787, a difference below 4e-7 in f)
//   L = 116 f(Y) - 16, a = 500 (f(X) - f(Y)), b = 200 (f(Y) - f(Z))
//   lab -> rgb: f(Z) clamped at 0 (as kornia and skimage do for Z < 0), then, with clip, the
//     RGB result clamped to [0, 1] (kornia's default clip=True, skimage's behaviour)
//
// Layout: [N, 3, P] contiguous planes (P pixels per plane); the Python layer flattens
// [..., 3, H, W] into it. Math runs in float for float32/bfloat16/float16 storage, in double
// for float64.
#pragma once

#include <cmath>

#include "pyssl/common.h"

namespace pyssl::colour {

template <typename S>
struct Consts {
  static constexpr S delta = S(6) / S(29);
  static constexpr S delta3 = delta * delta * delta;             // 0.008856...
  static constexpr S lin_slope = S(1) / (S(3) * delta * delta);  // 7.787...
  static constexpr S four29 = S(4) / S(29);
};

// sRGB transfer function and its inverse (IEC 61966-2-1).
template <typename S>
PYSSL_HD S srgb_to_linear(S c) {
  return c <= S(0.04045) ? c / S(12.92) : std::pow((c + S(0.055)) / S(1.055), S(2.4));
}

template <typename S>
PYSSL_HD S linear_to_srgb(S l) {
  return l <= S(0.0031308) ? S(12.92) * l : S(1.055) * std::pow(l, S(1) / S(2.4)) - S(0.055);
}

// CIE f(t) and its inverse.
template <typename S>
PYSSL_HD S lab_f(S t) {
  return t > Consts<S>::delta3 ? std::cbrt(t) : t * Consts<S>::lin_slope + Consts<S>::four29;
}

template <typename S>
PYSSL_HD S lab_finv(S f) {
  return f > Consts<S>::delta ? f * f * f : (f - Consts<S>::four29) / Consts<S>::lin_slope;
}

// White point D65 (kornia / skimage).
template <typename S>
struct White {
  static constexpr S x = S(0.95047), y = S(1), z = S(1.08883);
};

// One pixel sRGB in [0, 1] -> L, a, b.
template <typename S>
PYSSL_HD void rgb_to_lab_px(S r, S g, S b, S& L, S& A, S& B) {
  r = srgb_to_linear(r), g = srgb_to_linear(g), b = srgb_to_linear(b);
  const S x = (S(0.412453) * r + S(0.357580) * g + S(0.180423) * b) / White<S>::x;
  const S y = (S(0.212671) * r + S(0.715160) * g + S(0.072169) * b) / White<S>::y;
  const S z = (S(0.019334) * r + S(0.119193) * g + S(0.950227) * b) / White<S>::z;
  const S fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
  L = S(116) * fy - S(16);
  A = S(500) * (fx - fy);
  B = S(200) * (fy - fz);
}

// One pixel L, a, b -> sRGB (clamped to [0, 1] when clip).
template <typename S>
PYSSL_HD void lab_to_rgb_px(S L, S A, S B, bool clip, S& r, S& g, S& b) {
  const S fy = (L + S(16)) / S(116);
  const S fx = fy + A / S(500);
  S fz = fy - B / S(200);
  fz = fz < S(0) ? S(0) : fz;
  const S x = lab_finv(fx) * White<S>::x;
  const S y = lab_finv(fy) * White<S>::y;
  const S z = lab_finv(fz) * White<S>::z;
  r = linear_to_srgb(S(3.2404813432005266) * x - S(1.5371515162713185) * y -
                     S(0.4985363261688878) * z);
  g = linear_to_srgb(S(-0.9692549499965682) * x + S(1.8759900014898907) * y +
                     S(0.04155592655829284) * z);
  b = linear_to_srgb(S(0.05564663913517716) * x - S(0.20404133836651123) * y +
                     S(1.0573110696453443) * z);
  if (clip) {
    r = r < S(0) ? S(0) : (r > S(1) ? S(1) : r);
    g = g < S(0) ? S(0) : (g > S(1) ? S(1) : g);
    b = b < S(0) ? S(0) : (b > S(1) ? S(1) : b);
  }
}

namespace cpu {
// img, out: [N, 3, P] contiguous, same floating dtype.
void rgb_to_lab(const View& img, const View& out, uintptr_t stream = 0);
void lab_to_rgb(const View& lab, bool clip, const View& out, uintptr_t stream = 0);
}  // namespace cpu

}  // namespace pyssl::colour
