// Shape, range and parameter checks shared by the CPU and CUDA entry points. The Python layer
// checks the same things first with friendlier messages; these keep the core safe on its own.
#pragma once

#include <string>
#include <vector>

#include "augment/augment.h"

namespace pyssl::augment {

inline std::string str(int64_t v) { return std::to_string(v); }

// Checks the tables and the output; returns the batch size. `params_host` says whether the
// params live in host memory (CPU kernels), so that their values can be range-checked: every crop
// box inside its image, factors in range, the order a permutation.
inline int64_t check_augment(const View& images, const View& params, int64_t size,
                             int64_t interpolation, int64_t blur_kernel, double solarize_threshold,
                             const std::vector<double>& mean, const std::vector<double>& std,
                             const View& out, bool host_tables) {
  check_index_view(images, "images", 2);
  check(images.size(1) == 6, "images: expected 6 columns, got " + str(images.size(1)));
  check_view(params, "params", 2, true);
  check(params.dtype == DType::f64, "params: expected float64");
  const int64_t B = images.size(0);
  check(params.size(0) == B, "params: " + str(params.size(0)) + " rows for " + str(B) + " images");
  check(params.size(1) == kParams, "params: expected " + str(kParams) + " columns");
  check(size >= 1, "size: expected >= 1, got " + str(size));
  check(interpolation == kBilinear || interpolation == kBicubic,
        "interpolation: expected 0 (bilinear) or 1 (bicubic)");
  check(blur_kernel >= 1 && blur_kernel % 2 == 1,
        "blur_kernel: expected an odd size >= 1, got " + str(blur_kernel));
  check(blur_kernel / 2 < size, "blur_kernel: reflect padding needs kernel_size // 2 < size");
  check(solarize_threshold >= 0.0 && solarize_threshold <= 255.0,
        "solarize_threshold: expected a value in [0, 255]");
  check(mean.size() == 3 && std.size() == 3, "mean, std: expected three values each");
  for (double s : std) check(s > 0.0, "std: expected positive values");
  check_view(out, "out", 4, true);
  check(out.dtype != DType::f64, "out: expected float32, bfloat16 or float16");
  check(out.size(0) == B && out.size(1) == 3 && out.size(2) == size && out.size(3) == size,
        "out: expected shape [B, 3, size, size]");
  if (!host_tables) return B;
  const int64_t* t = images.data<int64_t>();
  const double* p = params.data<double>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* im = t + 6 * b;
    const double* q = p + kParams * b;
    const std::string at = " (image " + str(b) + ")";
    check(im[1] >= 1 && im[2] >= 1, "images: an image must be at least 1x1" + at);
    const double top = q[kTop], left = q[kLeft], h = q[kHeight], w = q[kWidth];
    check(top == std::floor(top) && left == std::floor(left) && h == std::floor(h) &&
              w == std::floor(w),
          "params: crop box must be whole pixels" + at);
    check(top >= 0 && left >= 0 && h >= 1 && w >= 1 && top + h <= static_cast<double>(im[1]) &&
              left + w <= static_cast<double>(im[2]),
          "params: crop box outside the image" + at);
    check(q[kBrightness] >= 0 && q[kContrast] >= 0 && q[kSaturation] >= 0,
          "params: jitter factors must be >= 0" + at);
    check(q[kHue] >= -0.5 && q[kHue] <= 0.5, "params: hue must lie in [-0.5, 0.5]" + at);
    int seen = 0;
    for (int k = 0; k < 4; ++k) {
      const double o = q[kOrder0 + k];
      check(o == 0 || o == 1 || o == 2 || o == 3, "params: order must hold 0..3" + at);
      seen |= 1 << static_cast<int>(o);
    }
    check(seen == 15, "params: order must be a permutation of 0..3" + at);
    check(q[kSigma] >= 0 && q[kSigma] == q[kSigma], "params: sigma must be >= 0" + at);
  }
  return B;
}

}  // namespace pyssl::augment
