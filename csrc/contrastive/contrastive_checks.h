// Shape and dtype checks of the contrastive entry points. The Python layer checks the same things
// first with friendlier messages; these keep the core safe on its own.
#pragma once

#include <cmath>
#include <string>

#include "contrastive/contrastive.h"

namespace pyssl::contrastive {

inline std::string str(int64_t v) { return std::to_string(v); }

// The accumulation dtype of a floating input dtype.
inline DType acc_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// A floating array of ndim dimensions (View::contiguous accepts an empty one whatever its
// strides, as torch does).
inline void check_array(const View& v, const char* name, int64_t ndim) {
  check_view(v, name, ndim, true);
}

// Checks q [N, D], k [M, D] and the scale.
inline void check_inputs(const View& q, const View& k, double scale) {
  check_array(q, "q", 2);
  check_array(k, "k", 2);
  check_same_dtype(q, "q", k, "k");
  check(q.size(1) == k.size(1),
        "k: feature dimension " + str(k.size(1)) + " differs from q's " + str(q.size(1)));
  check(std::isfinite(scale), "scale: expected a finite number");
}

// An optional per-row (or per-column) vector of the accumulation dtype with n elements.
inline void check_vector(const View& v, const char* name, int64_t n, DType acc) {
  if (v.none()) return;
  check_array(v, name, 1);
  check(v.dtype == acc,
        std::string(name) + ": expected dtype " + dtype_name(acc) + ", got " + dtype_name(v.dtype));
  check(v.size(0) == n,
        std::string(name) + ": expected " + str(n) + " elements, got " + str(v.size(0)));
}

// An optional int64 vector of n positions (any values: out-of-range ones match nothing).
inline void check_positions(const View& v, const char* name, int64_t n) {
  if (v.none()) return;
  check(v.dim() == 1 && (v.ptr != 0 || n == 0), std::string(name) + ": expected a 1-d tensor");
  check(v.dtype == DType::i64,
        std::string(name) + ": expected int64 positions, got " + dtype_name(v.dtype));
  check(v.size(0) == n,
        std::string(name) + ": expected " + str(n) + " elements, got " + str(v.size(0)));
  check(v.strides[0] == 1 || n <= 1, std::string(name) + ": expected a contiguous tensor");
}

// An optional one-element scalar of the accumulation dtype.
inline void check_scalar(const View& v, const char* name, DType acc) {
  if (v.none()) return;
  check(v.ptr != 0, std::string(name) + ": null data pointer");
  check(v.numel() == 1, std::string(name) + ": expected one element, got " + str(v.numel()));
  check(v.dtype == acc,
        std::string(name) + ": expected dtype " + dtype_name(acc) + ", got " + dtype_name(v.dtype));
}

// An optional gradient of like's shape and dtype.
inline void check_grad(const View& g, const char* name, const View& like, const char* like_name) {
  if (g.none()) return;
  check_array(g, name, 2);
  check(g.dtype == like.dtype, std::string(name) + ": expected " + like_name + "'s dtype " +
                                   dtype_name(like.dtype) + ", got " + dtype_name(g.dtype));
  check(g.shape == like.shape, std::string(name) + ": expected " + like_name + "'s shape [" +
                                   str(like.size(0)) + ", " + str(like.size(1)) + "]");
}

}  // namespace pyssl::contrastive
