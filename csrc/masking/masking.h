// Masked-patch gathering (MAE family): the per-element math shared by the CPU and CUDA kernels.
//
// Layouts (all contiguous):
//   imgs     [B, C, H, W]
//   patches  [B, K, p*p*C]   patch rows in MAE's (pi, qi, c) order, c fastest
//   ids      [B, K] int64    patch index l = gh_i * (W/p) + gw_i, row-major over the patch grid
#pragma once

#include <cmath>

#include "pyssl/common.h"

namespace pyssl::masking {

// Offset in imgs[b] (one image, C*H*W elements) of element j of patch l.
PYSSL_HD int64_t patch_pixel_offset(int64_t l, int64_t j, int64_t p, int64_t C, int64_t H,
                                    int64_t W) {
  const int64_t grid_w = W / p;
  const int64_t c = j % C;
  const int64_t q = (j / C) % p;
  const int64_t r = j / (C * p);
  const int64_t y = (l / grid_w) * p + r;
  const int64_t x = (l % grid_w) * p + q;
  return (c * H + y) * W + x;
}

// The total order of MAE's argsort over noise, made stable: ascending value, NaN last (as
// torch.sort places it), ties broken by index. A total order keeps every rank a permutation,
// whatever the noise holds, so no kernel can index out of bounds through a NaN.
template <typename A>
PYSSL_HD bool noise_before(A u, int64_t i, A v, int64_t j) {
  const bool u_nan = u != u;
  const bool v_nan = v != v;
  if (u_nan != v_nan) return v_nan;
  if (!u_nan && u != v) return u < v;
  return i < j;
}

// Position of element i of a noise row under that order: MAE's ids_restore[i]. O(n) per
// element, for GPU threads that each rank one element; the CPU sorts instead.
template <typename T>
PYSSL_HD int64_t stable_rank(const T* noise, int64_t n, int64_t i) {
  const auto v = load(noise + i);
  int64_t rank = 0;
  for (int64_t j = 0; j < n; ++j) rank += noise_before(load(noise + j), j, v, i);
  return rank;
}

// MAE's norm_pix target: 1 / sqrt(unbiased variance + eps) from the sum of squared deviations.
template <typename A>
PYSSL_HD A target_rstd(A sq_dev_sum, int64_t n, A eps) {
  const A var = sq_dev_sum / static_cast<A>(n - 1);
  using std::sqrt;
  return A(1) / sqrt(var + eps);
}

// Host entry points. Every view is contiguous; outputs are written whole (no caller zeroing).
// An absent `ids` (View::none) means the identity (patchify / unpatchify); an absent `token`
// means a zero mask token. The CPU range-checks index values before any memory is touched
// (ValueError); CUDA kernels cannot without a device sync, so they guard every access and
// write NaN where an index is invalid.
#define PYSSL_MASKING_API(ns)                                                                \
  namespace ns {                                                                             \
  void gather_patches(const View& imgs, const View& ids, int64_t p, const View& out,         \
                      uintptr_t stream);                                                     \
  void scatter_patches(const View& patches, const View& ids, int64_t p, const View& out,     \
                       uintptr_t stream);                                                    \
  void random_masking(const View& x, const View& noise, int64_t keep, const View& visible,   \
                      const View& mask, const View& ids_keep, const View& ids_restore,       \
                      uintptr_t stream);                                                     \
  void restore_masked(const View& visible, const View& token, const View& ids_restore,       \
                      const View& out, uintptr_t stream);                                    \
  void restore_masked_backward(const View& grad_out, const View& ids_restore,                \
                               const View& grad_visible, const View& grad_token,             \
                               uintptr_t stream);                                            \
  void masked_patch_loss(const View& pred, const View& imgs, const View& mask, int64_t p,    \
                         bool norm_pix, double eps, const View& loss, uintptr_t stream);     \
  void masked_patch_loss_backward(const View& grad_loss, const View& pred, const View& imgs, \
                                  const View& mask, int64_t p, bool norm_pix, double eps,    \
                                  const View& grad_pred, uintptr_t stream);                  \
  }

PYSSL_MASKING_API(cpu)
PYSSL_MASKING_API(cuda)

}  // namespace pyssl::masking
