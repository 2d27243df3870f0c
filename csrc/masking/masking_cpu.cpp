// CPU kernels of the masked-patch family (OpenMP over patches or batch rows).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "masking/masking.h"
#include "masking/masking_checks.h"
#include "pyssl/parallel.h"

namespace pyssl::masking::cpu {
namespace {

// Pure data movement needs only the element size, not the type.
template <typename F>
void dispatch_size(DType t, F&& f) {
  switch (t) {
    case DType::f16:
    case DType::bf16:
      return f(uint16_t{});
    case DType::f32:
      return f(uint32_t{});
    case DType::f64:
      return f(uint64_t{});
    default:
      fail(std::string("unsupported dtype ") + dtype_name(t));
  }
}

// Checks 0 <= ids < bound for every index; an error names the first offender.
void check_ids_range(const View& ids, int64_t bound, const char* name) {
  const int64_t* v = ids.data<int64_t>();
  const int64_t n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] < 0 || v[i] >= bound)
      fail(std::string(name) + ": index " + std::to_string(v[i]) + " at flat position " +
           std::to_string(i) + " is out of range [0, " + std::to_string(bound) + ")");
  }
}

// owner[b*n + t] = the unique source s with ids[b, s] == t (or -1 if none); a row where two
// sources hit one target is flagged in dup[b], and its kernels accumulate in source order.
// Only ids < n count; larger values are ignored (restore's mask-token positions).
void build_owners(const View& ids, int64_t n, std::vector<int64_t>& owner, std::vector<char>& dup) {
  const int64_t B = ids.size(0), S = ids.size(1);
  owner.assign(static_cast<size_t>(B * n), -1);
  dup.assign(static_cast<size_t>(B), 0);
  const int64_t* v = ids.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const int64_t t = v[b * S + s];
      if (t >= n) continue;
      int64_t& o = owner[static_cast<size_t>(b * n + t)];
      if (o >= 0) dup[static_cast<size_t>(b)] = 1;
      if (o < 0) o = s;
    }
  }
}

// Copies one patch between an image and a patch row (MAE order: row r, column q, channel c).
// to_patch: image -> patch row; otherwise patch row -> image.
template <typename W>
void move_patch(W* img, W* row, int64_t l, int64_t p, int64_t C, int64_t H, int64_t Wd,
                bool to_patch) {
  const int64_t y0 = (l / (Wd / p)) * p, x0 = (l % (Wd / p)) * p;
  for (int64_t r = 0; r < p; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      W* line = img + (c * H + y0 + r) * Wd + x0;
      W* dst = row + r * p * C + c;
      if (to_patch) {
        for (int64_t q = 0; q < p; ++q) dst[q * C] = line[q];
      } else {
        for (int64_t q = 0; q < p; ++q) line[q] = dst[q * C];
      }
    }
  }
}

template <typename T>
void add_patch(T* img, const T* row, int64_t l, int64_t p, int64_t C, int64_t H, int64_t Wd) {
  const int64_t n = p * p * C;
  for (int64_t j = 0; j < n; ++j) {
    T* px = img + patch_pixel_offset(l, j, p, C, H, Wd);
    store(px, load(px) + load(row + j));
  }
}

template <typename W>
void zero_patch(W* img, int64_t l, int64_t p, int64_t C, int64_t H, int64_t Wd) {
  const int64_t y0 = (l / (Wd / p)) * p, x0 = (l % (Wd / p)) * p;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < p; ++r)
      std::memset(img + (c * H + y0 + r) * Wd + x0, 0, static_cast<size_t>(p) * sizeof(W));
}

}  // namespace

void gather_patches(const View& imgs, const View& ids, int64_t p, const View& out, uintptr_t) {
  const int64_t K = check_patches(out, "out", ids, imgs, p);
  const int64_t L = check_imgs(imgs, p);
  const int64_t B = imgs.size(0), C = imgs.size(1), H = imgs.size(2), Wd = imgs.size(3);
  if (!ids.none()) check_ids_range(ids, L, "ids_keep");
  const bool has_ids = !ids.none();
  const int64_t* idv = ids.data<int64_t>();
  const int64_t n = p * p * C;
  prepare_output(out);
  dispatch_size(imgs.dtype, [&](auto w) {
    using W = decltype(w);
    W* src = imgs.data<W>();
    W* dst = out.data<W>();
    parallel_for(B * K, [&](int64_t i) {
      const int64_t b = i / K;
      const int64_t l = has_ids ? idv[i] : i % K;
      move_patch(src + b * C * H * Wd, dst + i * n, l, p, C, H, Wd, true);
    });
  });
}

void scatter_patches(const View& patches, const View& ids, int64_t p, const View& out, uintptr_t) {
  const int64_t K = check_patches(patches, "patches", ids, out, p);
  const int64_t L = check_imgs(out, p);
  const int64_t B = out.size(0), C = out.size(1), H = out.size(2), Wd = out.size(3);
  const int64_t grid_h = H / p, grid_w = Wd / p, n = p * p * C;
  std::vector<int64_t> owner;
  std::vector<char> dup;
  if (!ids.none()) {
    check_ids_range(ids, L, "ids_keep");
    build_owners(ids, L, owner, dup);
  }
  // "no ids" is ids.none(), not a null pointer: an empty ids tensor may have a null data pointer
  const bool has_ids = !ids.none();
  const int64_t* idv = ids.data<int64_t>();
  prepare_output(out);
  dispatch_float(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* img = out.data<T>();
    const T* rows = patches.data<T>();
    // One band of p image rows per task, written row by row (contiguous stores); the band's
    // source patches (grid_w rows of n values) stay in cache meanwhile.
    parallel_for(B * grid_h, [&](int64_t task) {
      const int64_t b = task / grid_h, gy = task % grid_h;
      T* im = img + b * C * H * Wd;
      if (has_ids && dup[static_cast<size_t>(b)]) {
        // Repeated ids in this row: sum every patch sent here, in order of k (deterministic).
        for (int64_t gx = 0; gx < grid_w; ++gx) {
          const int64_t l = gy * grid_w + gx;
          zero_patch(im, l, p, C, H, Wd);
          for (int64_t k = 0; k < K; ++k)
            if (idv[b * K + k] == l) add_patch(im, rows + (b * K + k) * n, l, p, C, H, Wd);
        }
        return;
      }
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t r = 0; r < p; ++r) {
          T* line = im + (c * H + gy * p + r) * Wd;
          for (int64_t gx = 0; gx < grid_w; ++gx) {
            const int64_t l = gy * grid_w + gx;
            const int64_t k = has_ids ? owner[static_cast<size_t>(b * L + l)] : l;
            T* dst = line + gx * p;
            if (k < 0) {
              std::memset(static_cast<void*>(dst), 0, static_cast<size_t>(p) * sizeof(T));
              continue;
            }
            const T* src = rows + (b * K + k) * n + r * p * C + c;
            for (int64_t q = 0; q < p; ++q) dst[q] = src[q * C];
          }
        }
      }
    });
  });
}

void random_masking(const View& x, const View& noise, int64_t keep, const View& visible,
                    const View& mask, const View& ids_keep, const View& ids_restore, uintptr_t) {
  check_random_masking(x, noise, keep, visible, mask, ids_keep, ids_restore);
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  int64_t* keep_v = ids_keep.data<int64_t>();
  int64_t* restore_v = ids_restore.data<int64_t>();
  // Per row: argsort the noise (stable, NaN last), invert it, mark the removed positions.
  dispatch_float(noise.dtype, [&](auto ntag) {
    using N = decltype(ntag);
    const N* nz = noise.data<N>();
    dispatch_float(mask.dtype, [&](auto mtag) {
      using M = decltype(mtag);
      M* mk = mask.data<M>();
      parallel_for(B, [&](int64_t b) {
        std::vector<int64_t> order(static_cast<size_t>(L));
        std::iota(order.begin(), order.end(), 0);
        const N* row = nz + b * L;
        std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
          return noise_before(load(row + i), i, load(row + j), j);
        });
        for (int64_t r = 0; r < L; ++r) {
          const int64_t l = order[static_cast<size_t>(r)];
          restore_v[b * L + l] = r;
          if (r < keep) keep_v[b * keep + r] = l;
          store(mk + b * L + l, r < keep ? 0.0f : 1.0f);
        }
      });
    });
  });
  prepare_output(visible);
  dispatch_size(x.dtype, [&](auto w) {
    using W = decltype(w);
    const W* src = x.data<W>();
    W* dst = visible.data<W>();
    const size_t bytes = static_cast<size_t>(D) * sizeof(W);
    parallel_for(B * keep, [&](int64_t i) {
      const int64_t b = i / keep;
      std::memcpy(dst + i * D, src + (b * L + keep_v[i]) * D, bytes);
    });
  });
}

void restore_masked(const View& visible, const View& token, const View& ids_restore,
                    const View& out, uintptr_t) {
  check_restore(visible, token, ids_restore, out);
  const int64_t B = visible.size(0), K = visible.size(1), D = visible.size(2);
  const int64_t L = ids_restore.size(1);
  check_ids_range(ids_restore, L, "ids_restore");
  const int64_t* rv = ids_restore.data<int64_t>();
  prepare_output(out);
  dispatch_size(visible.dtype, [&](auto w) {
    using W = decltype(w);
    const W* vis = visible.data<W>();
    const W* tok = token.none() ? nullptr : token.data<W>();
    W* dst = out.data<W>();
    const size_t bytes = static_cast<size_t>(D) * sizeof(W);
    parallel_for(B * L, [&](int64_t i) {
      const int64_t b = i / L, r = rv[i];
      if (r < K) {
        std::memcpy(dst + i * D, vis + (b * K + r) * D, bytes);
      } else if (tok) {
        std::memcpy(dst + i * D, tok, bytes);
      } else {
        std::memset(dst + i * D, 0, bytes);
      }
    });
  });
}

void restore_masked_backward(const View& grad_out, const View& ids_restore,
                             const View& grad_visible, const View& grad_token, uintptr_t) {
  check_restore(grad_visible, grad_token, ids_restore, grad_out);
  const int64_t B = grad_visible.size(0), K = grad_visible.size(1), D = grad_visible.size(2);
  const int64_t L = ids_restore.size(1);
  check_ids_range(ids_restore, L, "ids_restore");
  const int64_t* rv = ids_restore.data<int64_t>();
  std::vector<int64_t> owner;
  std::vector<char> dup;
  build_owners(ids_restore, K, owner, dup);
  prepare_output(grad_visible);
  dispatch_float(grad_out.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const T* go = grad_out.data<T>();
    T* gv = grad_visible.data<T>();
    parallel_for(B * K, [&](int64_t i) {
      const int64_t b = i / K, k = i % K;
      T* dst = gv + i * D;
      if (!dup[static_cast<size_t>(b)]) {
        const int64_t l = owner[static_cast<size_t>(i)];
        if (l >= 0) {
          std::memcpy(dst, go + (b * L + l) * D, static_cast<size_t>(D) * sizeof(T));
        } else {
          for (int64_t d = 0; d < D; ++d) store(dst + d, A(0));
        }
        return;
      }
      for (int64_t d = 0; d < D; ++d) store(dst + d, A(0));
      for (int64_t l = 0; l < L; ++l) {
        if (rv[b * L + l] != k) continue;
        const T* src = go + (b * L + l) * D;
        for (int64_t d = 0; d < D; ++d) store(dst + d, load(dst + d) + load(src + d));
      }
    });
    if (grad_token.none()) return;
    // The mask token's gradient sums every masked position; each thread owns a slice of D and
    // adds in (b, l) order, so the result does not depend on the thread count.
    T* gt = grad_token.data<T>();
    parallel_chunks(D, 64, [&](int64_t d0, int64_t d1) {
      std::vector<A> acc(static_cast<size_t>(d1 - d0), A(0));
      for (int64_t i = 0; i < B * L; ++i) {
        if (rv[i] < K) continue;
        const T* src = go + i * D;
        for (int64_t d = d0; d < d1; ++d) acc[static_cast<size_t>(d - d0)] += load(src + d);
      }
      for (int64_t d = d0; d < d1; ++d) store(gt + d, acc[static_cast<size_t>(d - d0)]);
    });
  });
}

namespace {

// Loads the target of patch l into buf[n] in MAE's (r, q, c) order, normalised by the patch's
// mean and unbiased variance when norm_pix. Working on a contiguous copy in L1 lets the
// statistics and the loss loops vectorise.
template <typename T, typename A>
void load_target(const T* im, int64_t l, int64_t p, int64_t C, int64_t H, int64_t Wd, bool norm_pix,
                 A eps, A* buf) {
  const int64_t y0 = (l / (Wd / p)) * p, x0 = (l % (Wd / p)) * p, n = p * p * C;
  for (int64_t r = 0; r < p; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const T* line = im + (c * H + y0 + r) * Wd + x0;
      A* dst = buf + r * p * C + c;
      for (int64_t q = 0; q < p; ++q) dst[q * C] = load(line + q);
    }
  if (!norm_pix) return;
  A sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += buf[j];
  const A mean = sum / static_cast<A>(n);
  A sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) sq += (buf[j] - mean) * (buf[j] - mean);
  const A rstd = target_rstd(sq, n, eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) buf[j] = (buf[j] - mean) * rstd;
}

constexpr int64_t kPatchesPerTask = 8;

}  // namespace

void masked_patch_loss(const View& pred, const View& imgs, const View& mask, int64_t p,
                       bool norm_pix, double eps, const View& loss, uintptr_t) {
  check_loss(pred, imgs, mask, p, loss, "loss");
  const int64_t L = check_imgs(imgs, p);
  const int64_t B = imgs.size(0), C = imgs.size(1), H = imgs.size(2), Wd = imgs.size(3);
  const int64_t n = p * p * C;
  const float* mk = mask.data<float>();
  dispatch_float(pred.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const T* pr = pred.data<T>();
    const T* im = imgs.data<T>();
    std::vector<A> per_patch(static_cast<size_t>(B * L), A(0));
    parallel_chunks(B * L, kPatchesPerTask, [&](int64_t i0, int64_t i1) {
      std::vector<A> buf(static_cast<size_t>(n));
      for (int64_t i = i0; i < i1; ++i) {
        const A m = mk[i];
        if (m == A(0)) continue;  // removed patches only: the others are never read
        load_target(im + (i / L) * C * H * Wd, i % L, p, C, H, Wd, norm_pix, A(eps), buf.data());
        const T* row = pr + i * n;
        A sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = 0; j < n; ++j) {
          const A d = A(load(row + j)) - buf[static_cast<size_t>(j)];
          sq += d * d;
        }
        per_patch[static_cast<size_t>(i)] = m * sq / static_cast<A>(n);
      }
    });
    A total = 0, weight = 0;  // serial, fixed order: deterministic
    for (int64_t i = 0; i < B * L; ++i) {
      total += per_patch[static_cast<size_t>(i)];
      weight += mk[i];
    }
    store(loss.data<T>(), total / weight);
  });
}

void masked_patch_loss_backward(const View& grad_loss, const View& pred, const View& imgs,
                                const View& mask, int64_t p, bool norm_pix, double eps,
                                const View& grad_pred, uintptr_t) {
  check_loss(pred, imgs, mask, p, grad_loss, "grad_loss");
  check_loss_grad(pred, grad_pred);
  const int64_t L = check_imgs(imgs, p);
  const int64_t B = imgs.size(0), C = imgs.size(1), H = imgs.size(2), Wd = imgs.size(3);
  const int64_t n = p * p * C;
  const float* mk = mask.data<float>();
  prepare_output(grad_pred);
  dispatch_float(pred.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    A weight = 0;
    for (int64_t i = 0; i < B * L; ++i) weight += mk[i];
    const A scale = A(load(grad_loss.data<T>())) * A(2) / (static_cast<A>(n) * weight);
    const T* pr = pred.data<T>();
    const T* im = imgs.data<T>();
    T* gp = grad_pred.data<T>();
    parallel_chunks(B * L, kPatchesPerTask, [&](int64_t i0, int64_t i1) {
      std::vector<A> buf(static_cast<size_t>(n));
      for (int64_t i = i0; i < i1; ++i) {
        const A m = mk[i];
        T* out = gp + i * n;
        if (m == A(0)) {
          std::memset(static_cast<void*>(out), 0, static_cast<size_t>(n) * sizeof(T));
          continue;
        }
        load_target(im + (i / L) * C * H * Wd, i % L, p, C, H, Wd, norm_pix, A(eps), buf.data());
        const T* row = pr + i * n;
        const A s = scale * m;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j)
          store(out + j, s * (A(load(row + j)) - buf[static_cast<size_t>(j)]));
      }
    });
  });
}

}  // namespace pyssl::masking::cpu
