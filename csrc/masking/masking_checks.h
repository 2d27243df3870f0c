// Shape and dtype checks shared by the CPU and CUDA entry points. The Python layer checks the
// same things first with friendlier messages; these keep the core safe on its own.
#pragma once

#include <string>

#include "masking/masking.h"

namespace pyssl::masking {

inline std::string str(int64_t v) { return std::to_string(v); }

// Checks imgs [B,C,H,W] against patch size p; returns the number of patches L.
inline int64_t check_imgs(const View& imgs, int64_t p) {
  check_view(imgs, "imgs", 4, true);
  check(p >= 1, "patch_size: expected >= 1, got " + str(p));
  check(imgs.size(2) % p == 0 && imgs.size(3) % p == 0,
        "imgs: height and width " + str(imgs.size(2)) + "x" + str(imgs.size(3)) +
            " are not divisible by patch_size " + str(p));
  return (imgs.size(2) / p) * (imgs.size(3) / p);
}

// Checks patches [B,K,p*p*C] (and ids [B,K] when given) against imgs; returns K.
inline int64_t check_patches(const View& patches, const char* name, const View& ids,
                             const View& imgs, int64_t p) {
  const int64_t L = check_imgs(imgs, p);
  check_view(patches, name, 3, true);
  check_same_dtype(imgs, "imgs", patches, name);
  check(patches.size(0) == imgs.size(0), std::string(name) + ": batch size " +
                                             str(patches.size(0)) + " differs from imgs' " +
                                             str(imgs.size(0)));
  check(patches.size(2) == p * p * imgs.size(1),
        std::string(name) + ": last dimension " + str(patches.size(2)) +
            " is not patch_size**2 * channels = " + str(p * p * imgs.size(1)));
  if (!ids.none()) {
    check_index_view(ids, "ids", 2);
    check(ids.size(0) == patches.size(0) && ids.size(1) == patches.size(1),
          "ids: shape does not match the patches' [B, K]");
  } else {
    check(patches.size(1) == L,
          std::string(name) + ": expected " + str(L) + " patches, got " + str(patches.size(1)));
  }
  return patches.size(1);
}

inline void check_random_masking(const View& x, const View& noise, int64_t keep,
                                 const View& visible, const View& mask, const View& ids_keep,
                                 const View& ids_restore) {
  check_view(x, "x", 3, true);
  check_view(noise, "noise", 2, true);
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  check(noise.size(0) == B && noise.size(1) == L, "noise: expected shape [B, L] of x");
  check(keep >= 0 && keep <= L, "keep: expected 0 <= keep <= L, got " + str(keep));
  check_view(visible, "visible", 3, true);
  check_same_dtype(x, "x", visible, "visible");
  check(visible.size(0) == B && visible.size(1) == keep && visible.size(2) == D,
        "visible: expected shape [B, keep, D]");
  check_view(mask, "mask", 2, true);
  check(mask.size(0) == B && mask.size(1) == L, "mask: expected shape [B, L]");
  check_index_view(ids_keep, "ids_keep", 2);
  check(ids_keep.size(0) == B && ids_keep.size(1) == keep, "ids_keep: expected shape [B, keep]");
  check_index_view(ids_restore, "ids_restore", 2);
  check(ids_restore.size(0) == B && ids_restore.size(1) == L, "ids_restore: expected shape [B, L]");
}

inline void check_restore(const View& visible, const View& token, const View& ids_restore,
                          const View& out) {
  check_view(visible, "visible", 3, true);
  check_index_view(ids_restore, "ids_restore", 2);
  const int64_t B = visible.size(0), D = visible.size(2), L = ids_restore.size(1);
  check(ids_restore.size(0) == B, "ids_restore: batch size differs from visible's");
  check(visible.size(1) <= L, "visible: more tokens (" + str(visible.size(1)) +
                                  ") than ids_restore positions (" + str(L) + ")");
  if (!token.none()) {
    check_view(token, "mask_token", 1, true);
    check_same_dtype(visible, "visible", token, "mask_token");
    check(token.size(0) == D, "mask_token: expected " + str(D) + " elements");
  }
  check_view(out, "out", 3, true);
  check_same_dtype(visible, "visible", out, "out");
  check(out.size(0) == B && out.size(1) == L && out.size(2) == D, "out: expected [B, L, D]");
}

// Checks the loss inputs and its one-element `scalar` (the loss, or its incoming gradient).
inline void check_loss(const View& pred, const View& imgs, const View& mask, int64_t p,
                       const View& scalar, const char* scalar_name) {
  const int64_t L = check_imgs(imgs, p);
  View none;
  check_patches(pred, "pred", none, imgs, p);
  check_view(mask, "mask", 2, false);
  check(mask.dtype == DType::f32, "mask: expected float32 weights");
  check(mask.size(0) == imgs.size(0) && mask.size(1) == L, "mask: expected shape [B, L]");
  check(scalar.numel() == 1 && scalar.dtype == pred.dtype,
        std::string(scalar_name) + ": expected one element of pred's dtype");
}

inline void check_loss_grad(const View& pred, const View& grad_pred) {
  check_view(grad_pred, "grad_pred", 3, true);
  check(grad_pred.shape == pred.shape && grad_pred.dtype == pred.dtype,
        "grad_pred: expected pred's shape and dtype");
}

}  // namespace pyssl::masking
