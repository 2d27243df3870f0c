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
#include <cstdint>
#include <cstring>

#include "pyssl/common.h"

namespace pyssl::colour {

template <typename S>
struct Consts {
  static constexpr S delta = S(6) / S(29);
  static constexpr S delta3 = delta * delta * delta;             // 0.008856...
  static constexpr S lin_slope = S(1) / (S(3) * delta * delta);  // 7.787...
  static constexpr S four29 = S(4) / S(29);
};

// Powers of positive arguments. float32 on the host: exp2(y log2 x) from polynomials of plain
// arithmetic and bit casts, which GCC vectorises (a libm powf / cbrtf call per value does not:
// measured here, the libm version of rgb_to_lab ran at ~12 ns per pixel-channel on 2 threads).
// log2: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.1716, the series to s^9 (truncation < 1e-9); exp2: 2^n 2^f with n = round(y),
// |f| <= 1/2, e^(f ln 2) to degree 7 (truncation < 6e-9). Both are within ~2 float32 ulps;
// pow(x, y) then errs by ~|y log2 x| ulps more, as any exp/log pow. Arguments here are clamped
// positive and normal by the callers; y is clamped to [-126, 127.99] (a value that would
// overflow saturates near 3.4e38 instead of inf: only for inputs beyond ~1e15).
PYSSL_HD float bits_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

PYSSL_HD int32_t float_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, 4);
  return i;
}

PYSSL_HD float fast_log2(float x) {
  const int32_t bits = float_bits(x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = bits_float((bits & 0x7fffff) | 0x3f800000);  // [1, 2)
  const bool big = m > 1.41421356f;
  const float half = 0.5f * m;  // operands first: with -ftrapping-math (the default) GCC will
  const int32_t e1 = e + 1;     // not if-convert a select whose arms compute
  m = big ? half : m;
  e = big ? e1 : e;
  const float s = (m - 1.f) / (m + 1.f);
  const float s2 = s * s;
  const float poly =
      1.f + s2 * (1.f / 3.f + s2 * (1.f / 5.f + s2 * (1.f / 7.f + s2 * (1.f / 9.f))));
  return static_cast<float>(e) + (2.f * 1.44269504088896341f) * s * poly;
}

PYSSL_HD float fast_exp2(float y) {
  y = y < -126.f ? -126.f : (y > 127.99f ? 127.99f : y);
  const float r = (y + 12582912.f) - 12582912.f;    // round to nearest: 1.5 * 2^23
  const float f = (y - r) * 0.693147180559945309f;  // |f| <= ln2 / 2
  const float p =
      1.f + f * (1.f + f * (1.f / 2.f +
                            f * (1.f / 6.f +
                                 f * (1.f / 24.f + f * (1.f / 120.f +
                                                        f * (1.f / 720.f + f * (1.f / 5040.f)))))));
  return p * bits_float((static_cast<int32_t>(r) + 127) << 23);
}

template <typename S>
PYSSL_HD S pow_pos(S x, S y) {
  return std::pow(x, y);
}
template <typename S>
PYSSL_HD S cbrt_pos(S x) {
  return std::cbrt(x);
}
#if !defined(__CUDA_ARCH__)
template <>
PYSSL_HD float pow_pos<float>(float x, float y) {
  return fast_exp2(y * fast_log2(x));
}
template <>
PYSSL_HD float cbrt_pos<float>(float x) {
  const float c = fast_exp2(fast_log2(x) * (1.f / 3.f));
  return c - (c * c * c - x) / (3.f * c * c);  // one Newton step
}
#endif

// sRGB transfer function and its inverse (IEC 61966-2-1). The comparisons put NaN on the linear
// branch, so NaN propagates.
template <typename S>
PYSSL_HD S srgb_to_linear(S c) {
  const S hi = pow_pos((c > S(0.04045) ? c : S(0.04045)) * S(1 / 1.055) + S(0.055 / 1.055), S(2.4));
  const S lo = c / S(12.92);
  return c > S(0.04045) ? hi : lo;
}

template <typename S>
PYSSL_HD S linear_to_srgb(S l) {
  const S hi = S(1.055) * pow_pos(l > S(0.0031308) ? l : S(0.0031308), S(1 / 2.4)) - S(0.055);
  const S lo = S(12.92) * l;
  return l > S(0.0031308) ? hi : lo;
}

// CIE f(t) and its inverse.
template <typename S>
PYSSL_HD S lab_f(S t) {
  const S hi = cbrt_pos(t > Consts<S>::delta3 ? t : Consts<S>::delta3);
  const S lo = t * Consts<S>::lin_slope + Consts<S>::four29;
  return t > Consts<S>::delta3 ? hi : lo;
}

template <typename S>
PYSSL_HD S lab_finv(S f) {
  const S hi = f * f * f;
  const S lo = (f - Consts<S>::four29) / Consts<S>::lin_slope;
  return f > Consts<S>::delta ? hi : lo;
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

// ---------------------------------------------------------------------------- backward math
// Vector-Jacobian products of the two maps (the closed forms of pyssl/reference/colour.py):
// values and derivatives of each curve from one power; torch.clamp's convention at the kinks.

template <typename S>
PYSSL_HD void srgb_to_linear_d(S c, S& v, S& d) {
  const S base = (c > S(0.04045) ? c : S(0.04045)) * S(1 / 1.055) + S(0.055 / 1.055);
  const S p = pow_pos(base, S(1.4));
  const S hi = p * base, dhi = S(2.4 / 1.055) * p;
  const S lo = c / S(12.92);
  v = c > S(0.04045) ? hi : lo;
  d = c > S(0.04045) ? dhi : S(1 / 12.92);
}

template <typename S>
PYSSL_HD void linear_to_srgb_d(S l, S& v, S& d) {
  const S lc = l > S(0.0031308) ? l : S(0.0031308);
  const S p = pow_pos(lc, S(1 / 2.4));
  const S hi = S(1.055) * p - S(0.055), dhi = S(1.055 / 2.4) * p / lc;
  const S lo = S(12.92) * l;
  v = l > S(0.0031308) ? hi : lo;
  d = l > S(0.0031308) ? dhi : S(12.92);
}

template <typename S>
PYSSL_HD S lab_f_d(S t) {
  const S c = cbrt_pos(t > Consts<S>::delta3 ? t : Consts<S>::delta3);
  const S hi = S(1) / (S(3) * c * c);
  return t > Consts<S>::delta3 ? hi : Consts<S>::lin_slope;
}

template <typename S>
PYSSL_HD S lab_finv_d(S f) {
  const S hi = S(3) * f * f;
  return f > Consts<S>::delta ? hi : S(1) / Consts<S>::lin_slope;
}

// d<g, rgb_to_lab(r, g, b)> / d(r, g, b), upstream (gL, ga, gb).
template <typename S>
PYSSL_HD void rgb_to_lab_vjp(S r, S g, S b, S gL, S ga, S gb, S& dr, S& dg, S& db) {
  S lr, lg, lb, jr, jg, jb;
  srgb_to_linear_d(r, lr, jr), srgb_to_linear_d(g, lg, jg), srgb_to_linear_d(b, lb, jb);
  const S x = (S(0.412453) * lr + S(0.357580) * lg + S(0.180423) * lb) / White<S>::x;
  const S y = (S(0.212671) * lr + S(0.715160) * lg + S(0.072169) * lb) / White<S>::y;
  const S z = (S(0.019334) * lr + S(0.119193) * lg + S(0.950227) * lb) / White<S>::z;
  const S gx = S(500) * ga * lab_f_d(x) / White<S>::x;
  const S gy = (S(116) * gL - S(500) * ga + S(200) * gb) * lab_f_d(y) / White<S>::y;
  const S gz = S(-200) * gb * lab_f_d(z) / White<S>::z;
  dr = (S(0.412453) * gx + S(0.212671) * gy + S(0.019334) * gz) * jr;
  dg = (S(0.357580) * gx + S(0.715160) * gy + S(0.119193) * gz) * jg;
  db = (S(0.180423) * gx + S(0.072169) * gy + S(0.950227) * gz) * jb;
}

// d<g, lab_to_rgb(L, a, b)> / d(L, a, b), upstream (gr, gg, gb).
template <typename S>
PYSSL_HD void lab_to_rgb_vjp(S L, S A, S B, bool clip, S gr, S gg, S gb, S& dL, S& da, S& db) {
  const S fy = (L + S(16)) / S(116);
  const S fx = fy + A / S(500);
  const S fz_raw = fy - B / S(200);
  const S fz = fz_raw < S(0) ? S(0) : fz_raw;
  const S x = lab_finv(fx) * White<S>::x;
  const S y = lab_finv(fy) * White<S>::y;
  const S z = lab_finv(fz) * White<S>::z;
  S r, g, b, jr, jg, jb;
  linear_to_srgb_d(
      S(3.2404813432005266) * x - S(1.5371515162713185) * y - S(0.4985363261688878) * z, r, jr);
  linear_to_srgb_d(
      S(-0.9692549499965682) * x + S(1.8759900014898907) * y + S(0.04155592655829284) * z, g, jg);
  linear_to_srgb_d(
      S(0.05564663913517716) * x - S(0.20404133836651123) * y + S(1.0573110696453443) * z, b, jb);
  if (clip) {
    jr = (r >= S(0) && r <= S(1)) ? jr : S(0);
    jg = (g >= S(0) && g <= S(1)) ? jg : S(0);
    jb = (b >= S(0) && b <= S(1)) ? jb : S(0);
  }
  gr *= jr, gg *= jg, gb *= jb;
  const S gx =
      (S(3.2404813432005266) * gr - S(0.9692549499965682) * gg + S(0.05564663913517716) * gb) *
      White<S>::x * lab_finv_d(fx);
  const S gy =
      (S(-1.5371515162713185) * gr + S(1.8759900014898907) * gg - S(0.20404133836651123) * gb) *
      White<S>::y * lab_finv_d(fy);
  S gz = (S(-0.4985363261688878) * gr + S(0.04155592655829284) * gg + S(1.0573110696453443) * gb) *
         White<S>::z * lab_finv_d(fz);
  gz = fz_raw >= S(0) ? gz : S(0);
  dL = (gx + gy + gz) / S(116);
  da = gx / S(500);
  db = -gz / S(200);
}

namespace cpu {
// img, out: [N, 3, P] contiguous, same floating dtype.
void rgb_to_lab(const View& img, const View& out, uintptr_t stream = 0);
void lab_to_rgb(const View& lab, bool clip, const View& out, uintptr_t stream = 0);
// grad_in = the VJP of the forward at img / lab for upstream grad; all [N, 3, P], one dtype.
void rgb_to_lab_backward(const View& img, const View& grad, const View& grad_in,
                         uintptr_t stream = 0);
void lab_to_rgb_backward(const View& lab, const View& grad, bool clip, const View& grad_in,
                         uintptr_t stream = 0);
}  // namespace cpu

}  // namespace pyssl::colour
