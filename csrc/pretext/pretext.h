// Pretext-task kernels (RotNet's four rotations): the per-element index math shared by the CPU
// kernels and any device kernel.
//
// Layouts (all contiguous):
//   imgs  [B, C, S, S]      square images, any element type (uint8 or floating)
//   out   [B, 4, C, S, S]   out[b, k] = torch.rot90(imgs[b], k, dims=(-2, -1)), k = 0..3
#pragma once

#include "pyssl/common.h"

namespace pyssl::pretext {

// Offset in one S x S plane of the source pixel that output pixel (i, j) of rotation k reads:
// rot90 turns counter-clockwise, so rotation 1 reads x[j][S-1-i], 2 x[S-1-i][S-1-j] and
// 3 x[S-1-j][i] (torch.rot90's convention).
PYSSL_HD int64_t rotation_source(int k, int64_t i, int64_t j, int64_t S) {
  switch (k & 3) {
    case 1:
      return j * S + (S - 1 - i);
    case 2:
      return (S - 1 - i) * S + (S - 1 - j);
    case 3:
      return (S - 1 - j) * S + i;
    default:
      return i * S + j;
  }
}

// Host entry points. Outputs are written whole (no caller zeroing).
namespace cpu {
// out[b, k] = rot90(imgs[b], k) for k = 0..3; any dtype (uint8 and the floating ones).
void rotations(const View& imgs, const View& out);
// grad_imgs[b] = sum_k rot90(grad_out[b, k], -k), summed in float32 (float64 for float64) in the
// fixed order k = 0..3; floating dtypes.
void rotations_backward(const View& grad_out, const View& grad_imgs);
}  // namespace cpu

}  // namespace pyssl::pretext
