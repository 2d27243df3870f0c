// CUDA kernels of the masked-patch family. They compute what masking_cpu.cpp computes, through the
// same per-element math (masking.h), on the caller's stream.
//
// Index values cannot be range-checked on the host without a device sync, so the kernels guard
// every id they read (no id value makes them touch memory out of bounds) and write NaN where an
// id is invalid, so that a bad id shows loudly in the output instead of raising:
//   gather_patches, restore_masked        the rows whose id is invalid;
//   scatter_patches                       the whole image whose ids row holds an invalid id;
//   restore_masked_backward               the grad_visible rows of a batch row holding an invalid
//                                         id, and grad_token when any id is invalid.
//
// Every reduction runs in a fixed order (no floating-point atomics): results do not depend on
// scheduling. Sums over repeated ids round to the storage type after each add, as the CPU does.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "masking/masking.h"
#include "masking/masking_checks.h"

namespace pyssl::masking::cuda {
namespace {

constexpr int kThreads = 256;  // block size of the grid-stride kernels
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride loops cover any larger count
constexpr int kReduceThreads = 1024;     // the single-block reductions
// grad_token's two-pass sum: blocks of kTileD columns x kRowLanes rows, each summing a fixed
// chunk of kChunkRows rows. Fixed constants keep the summation order independent of the device.
constexpr int kTileD = 32;
constexpr int kRowLanes = 8;
constexpr int64_t kChunkRows = 512;
constexpr int64_t kMaxGridY = 65535;

void check_cuda(cudaError_t err) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyssl CUDA error: ") + cudaGetErrorString(err));
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Launches a 1-D grid-stride kernel over `items`, `per_block` of them to a block; nothing when
// there are none (a zero-block grid is a launch error).
template <typename... P, typename... Args>
void launch(void (*kernel)(P...), int64_t items, int64_t per_block, cudaStream_t stream,
            Args... args) {
  if (items == 0) return;
  const auto blocks = std::min((items + per_block - 1) / per_block, kMaxBlocks);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  check_cuda(cudaGetLastError());
}

// Scratch from the stream-ordered pool, released in stream order (after the kernels queued
// before it) when it goes out of scope.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) check_cuda(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename A>
  A* as() const {
    return static_cast<A*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Image and patch geometry of one call, passed to the kernels by value.
struct Geom {
  int64_t B, C, H, W, p;
  int64_t L;      // patches per image
  int64_t n;      // elements per patch row, p*p*C
  int64_t image;  // elements per image, C*H*W
};

Geom geom_of(const View& imgs, int64_t p) {
  const int64_t B = imgs.size(0), C = imgs.size(1), H = imgs.size(2), W = imgs.size(3);
  return Geom{B, C, H, W, p, (H / p) * (W / p), p * p * C, C * H * W};
}

__device__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <typename A>
__device__ A nan_value() {
  return static_cast<A>(__int_as_float(0x7fc00000));
}

// Offset of element j of patch l within one image.
__device__ int64_t pixel(const Geom& g, int64_t l, int64_t j) {
  return patch_pixel_offset(l, j, g.p, g.C, g.H, g.W);
}

// The inverse lookup of ids that scatter_patches and restore_masked_backward share: what a block
// learns from one row of ids about a target t. How many sources s have ids[s] == t (0, 1, or 2
// for "more than one"), that source when there is exactly one, and whether any id of the row
// lies outside [0, bound).
struct Owners {
  int64_t source;
  int count;
  bool bad;
};

// Called by every thread of the block (it holds barriers).
__device__ Owners find_owners(const int64_t* ids, int64_t S, int64_t t, int64_t bound) {
  __shared__ int64_t single;
  int found = 0;
  int64_t first = -1;
  bool bad = false;
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
    const int64_t v = ids[s];
    bad |= v < 0 || v >= bound;
    if (v == t) {
      if (found == 0) first = s;
      ++found;
    }
  }
  const int finders = __syncthreads_count(found > 0);
  if (finders == 1 && found == 1) single = first;  // at most one writer
  const bool multi = __syncthreads_or(found > 1);
  Owners o;
  o.bad = __syncthreads_or(bad);
  o.count = finders == 0 ? 0 : (finders == 1 && !multi ? 1 : 2);
  // Read before any thread can reach the next call's write (its first barrier comes first).
  o.source = o.count == 1 ? single : -1;
  return o;
}

// *dst = the sum of src[s * stride] over the sources s of target t, NaN when the row holds an
// invalid id. Repeated targets add in source order, rounding to T after each add (as the CPU).
template <typename T>
__device__ void write_owned(T* dst, const Owners& o, const int64_t* ids, int64_t S, int64_t t,
                            const T* src, int64_t stride) {
  using A = typename Acc<T>::type;
  if (o.bad) return store(dst, nan_value<A>());
  if (o.count == 0) return store(dst, A(0));
  if (o.count == 1) {
    *dst = src[o.source * stride];
    return;
  }
  T acc;
  store(&acc, A(0));
  for (int64_t s = 0; s < S; ++s)
    if (ids[s] == t) store(&acc, load(&acc) + load(src + s * stride));
  *dst = acc;
}

// One thread per element of out [B, K, n]: out[b, k, j] = imgs[b] at element j of patch ids[b, k]
// (of patch k without ids).
template <typename T>
__global__ void gather_patches_kernel(const T* imgs, const int64_t* ids, int64_t K, Geom g,
                                      T* out) {
  using A = typename Acc<T>::type;
  const int64_t total = g.B * K * g.n;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t row = i / g.n, j = i % g.n;
    const int64_t l = ids ? ids[row] : row % K;
    if (l < 0 || l >= g.L) {
      store(out + i, nan_value<A>());
      continue;
    }
    out[i] = imgs[(row / K) * g.image + pixel(g, l, j)];
  }
}

// One block per patch position (b, l) of out: finds which rows of patches land there, then its
// threads write the patch's pixels (a copy, zeros, or the ordered sum of repeats).
template <typename T>
__global__ void scatter_patches_kernel(const T* patches, const int64_t* ids, int64_t K, Geom g,
                                       T* out) {
  for (int64_t i = blockIdx.x; i < g.B * g.L; i += gridDim.x) {
    const int64_t b = i / g.L, l = i % g.L;
    const int64_t* row_ids = ids ? ids + b * K : nullptr;
    const Owners o = row_ids ? find_owners(row_ids, K, l, g.L) : Owners{l, 1, false};
    const T* rows = patches + b * K * g.n;
    for (int64_t j = threadIdx.x; j < g.n; j += blockDim.x)
      write_owned(out + b * g.image + pixel(g, l, j), o, row_ids, K, l, rows + j, g.n);
  }
}

// One thread per (b, i) of noise [B, L]: its rank under the stable order is MAE's
// ids_restore[b, i]; the first `keep` ranks are kept.
template <typename N, typename M>
__global__ void random_masking_ranks_kernel(const N* noise, int64_t B, int64_t L, int64_t keep,
                                            int64_t* ids_keep, int64_t* ids_restore, M* mask) {
  using MA = typename Acc<M>::type;
  for (int64_t i = global_thread(); i < B * L; i += grid_threads()) {
    const int64_t b = i / L, l = i % L;
    const int64_t rank = stable_rank(noise + b * L, L, l);
    ids_restore[i] = rank;
    if (rank < keep) ids_keep[b * keep + rank] = l;
    store(mask + i, MA(rank < keep ? 0 : 1));
  }
}

// One thread per element of visible [B, keep, D]: visible[b, r] = x[b, ids_keep[b, r]].
template <typename T>
__global__ void gather_visible_kernel(const T* x, const int64_t* ids_keep, int64_t B, int64_t L,
                                      int64_t keep, int64_t D, T* visible) {
  using A = typename Acc<T>::type;
  for (int64_t i = global_thread(); i < B * keep * D; i += grid_threads()) {
    const int64_t row = i / D, d = i % D;
    const int64_t l = ids_keep[row];
    if (l < 0 || l >= L) {  // ranks are a permutation, so this guards only against a bug
      store(visible + i, nan_value<A>());
      continue;
    }
    visible[i] = x[((row / keep) * L + l) * D + d];
  }
}

// One thread per element of out [B, L, D]: out[b, l] = visible[b, r] if r = ids_restore[b, l]
// < K, else the mask token (zeros without one).
template <typename T>
__global__ void restore_masked_kernel(const T* visible, const T* token, const int64_t* ids_restore,
                                      int64_t B, int64_t K, int64_t L, int64_t D, T* out) {
  using A = typename Acc<T>::type;
  for (int64_t i = global_thread(); i < B * L * D; i += grid_threads()) {
    const int64_t row = i / D, d = i % D;
    const int64_t r = ids_restore[row];
    if (r < 0 || r >= L) {
      store(out + i, nan_value<A>());
    } else if (r < K) {
      out[i] = visible[((row / L) * K + r) * D + d];
    } else if (token) {
      out[i] = token[d];
    } else {
      store(out + i, A(0));
    }
  }
}

// One block per row (b, k) of grad_visible [B, K, D]: finds the positions l with
// ids_restore[b, l] == k, then its threads write the row (a copy, zeros, or the ordered sum).
template <typename T>
__global__ void restore_backward_visible_kernel(const T* grad_out, const int64_t* ids_restore,
                                                int64_t B, int64_t K, int64_t L, int64_t D,
                                                T* grad_visible) {
  for (int64_t i = blockIdx.x; i < B * K; i += gridDim.x) {
    const int64_t b = i / K, k = i % K;
    const int64_t* row_ids = ids_restore + b * L;
    const Owners o = find_owners(row_ids, L, k, L);
    const T* src = grad_out + b * L * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      write_owned(grad_visible + i * D + d, o, row_ids, L, k, src + d, D);
  }
}

// grad_token, pass 1. Block (chunk c, column tile) sums the rows of grad_out [B*L, D] in chunk c
// that hold a mask token (ids_restore >= K): each row lane adds its rows in order, then the lanes
// combine in a fixed tree. partial[c, d] gets the chunk's sum.
template <typename T, typename A>
__global__ void restore_backward_token_partial_kernel(const T* grad_out, const int64_t* ids_restore,
                                                      int64_t rows, int64_t K, int64_t L, int64_t D,
                                                      A* partial) {
  __shared__ A lanes[kRowLanes][kTileD];
  const int64_t begin = blockIdx.x * kChunkRows;
  const int64_t end = begin + kChunkRows < rows ? begin + kChunkRows : rows;
  const int64_t tiles = (D + kTileD - 1) / kTileD;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t d = tile * kTileD + threadIdx.x;
    A acc = 0;
    if (d < D) {
      for (int64_t i = begin + threadIdx.y; i < end; i += kRowLanes) {
        const int64_t r = ids_restore[i];
        if (r < 0 || r >= L) {
          acc = nan_value<A>();
        } else if (r >= K) {
          acc += load(grad_out + i * D + d);
        }
      }
    }
    lanes[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    for (int s = kRowLanes / 2; s > 0; s /= 2) {
      if (static_cast<int>(threadIdx.y) < s)
        lanes[threadIdx.y][threadIdx.x] += lanes[threadIdx.y + s][threadIdx.x];
      __syncthreads();
    }
    if (threadIdx.y == 0 && d < D) partial[blockIdx.x * D + d] = lanes[0][threadIdx.x];
    __syncthreads();  // the next tile rewrites lanes
  }
}

// grad_token, pass 2: one thread per column adds the chunks' partial sums in chunk order.
template <typename T, typename A>
__global__ void restore_backward_token_kernel(const A* partial, int64_t chunks, int64_t D,
                                              T* grad_token) {
  for (int64_t d = global_thread(); d < D; d += grid_threads()) {
    A acc = 0;
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * D + d];
    store(grad_token + d, acc);
  }
}

// Sum over one warp by butterfly: every lane ends with the same bits (each step adds the same
// two partial sums, in either order).
template <typename A>
__device__ A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of one value per thread over a block of kReduceThreads, in a fixed tree order; every
// thread gets the result.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A sums[kReduceThreads];
  sums[threadIdx.x] = v;
  __syncthreads();
  for (int s = kReduceThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) sums[threadIdx.x] += sums[threadIdx.x + s];
    __syncthreads();
  }
  const A total = sums[0];
  __syncthreads();  // the next call rewrites sums
  return total;
}

// The normalised target of one patch as one warp sees it: element j of patch l of image im is
// (pixel - mean) * rstd, with MAE's norm_pix statistics, or mean 0 and rstd 1 without them.
template <typename T, typename A>
struct Target {
  const T* im;
  int64_t l;
  A mean = 0, rstd = 1;

  __device__ Target(const T* im_, int64_t l_, const Geom& g, bool norm_pix, A eps)
      : im(im_), l(l_) {
    if (!norm_pix) return;
    const unsigned lane = threadIdx.x % 32;
    A sum = 0;
    for (int64_t j = lane; j < g.n; j += 32) sum += A(load(im + pixel(g, l, j)));
    mean = warp_sum(sum) / static_cast<A>(g.n);
    A sq = 0;
    for (int64_t j = lane; j < g.n; j += 32) {
      const A dev = A(load(im + pixel(g, l, j))) - mean;
      sq += dev * dev;
    }
    rstd = target_rstd(warp_sum(sq), g.n, eps);
  }
  __device__ A operator()(const Geom& g, int64_t j) const {
    return (A(load(im + pixel(g, l, j))) - mean) * rstd;
  }
};

// One warp per patch i = (b, l): per_patch[i] = mask[i] * mean over j of (pred - target)^2
// (0 where the mask is 0, without reading the patch).
template <typename T, typename A>
__global__ void patch_loss_kernel(const T* pred, const T* imgs, const float* mask, Geom g,
                                  bool norm_pix, A eps, A* per_patch) {
  const unsigned lane = threadIdx.x % 32;
  const int64_t warps = grid_threads() / 32;
  for (int64_t i = global_thread() / 32; i < g.B * g.L; i += warps) {
    const A m = mask[i];
    if (m == A(0)) {
      if (lane == 0) per_patch[i] = 0;
      continue;
    }
    const Target<T, A> target(imgs + (i / g.L) * g.image, i % g.L, g, norm_pix, eps);
    const T* row = pred + i * g.n;
    A sq = 0;
    for (int64_t j = lane; j < g.n; j += 32) {
      const A diff = A(load(row + j)) - target(g, j);
      sq += diff * diff;
    }
    sq = warp_sum(sq);
    if (lane == 0) per_patch[i] = m * sq / static_cast<A>(g.n);
  }
}

// One block: loss = sum(per_patch) / sum(mask), each thread adding a fixed stride in order.
template <typename T, typename A>
__global__ void loss_total_kernel(const A* per_patch, const float* mask, int64_t patches, T* loss) {
  A total = 0, weight = 0;
  for (int64_t i = threadIdx.x; i < patches; i += kReduceThreads) {
    total += per_patch[i];
    weight += mask[i];
  }
  total = block_sum(total);
  weight = block_sum(weight);
  if (threadIdx.x == 0) store(loss, total / weight);
}

// One block: *scale = grad_loss * 2 / (n * sum(mask)), the factor of every gradient element.
template <typename T, typename A>
__global__ void loss_scale_kernel(const T* grad_loss, const float* mask, int64_t patches, int64_t n,
                                  A* scale) {
  A weight = 0;
  for (int64_t i = threadIdx.x; i < patches; i += kReduceThreads) weight += mask[i];
  weight = block_sum(weight);
  if (threadIdx.x == 0) *scale = A(load(grad_loss)) * A(2) / (static_cast<A>(n) * weight);
}

// One warp per patch i: grad_pred[i, j] = scale * mask[i] * (pred - target) (zeros where the mask
// is 0).
template <typename T, typename A>
__global__ void patch_loss_backward_kernel(const T* pred, const T* imgs, const float* mask, Geom g,
                                           bool norm_pix, A eps, const A* scale, T* grad_pred) {
  const unsigned lane = threadIdx.x % 32;
  const int64_t warps = grid_threads() / 32;
  for (int64_t i = global_thread() / 32; i < g.B * g.L; i += warps) {
    const A m = mask[i];
    T* out = grad_pred + i * g.n;
    if (m == A(0)) {
      for (int64_t j = lane; j < g.n; j += 32) store(out + j, A(0));
      continue;
    }
    const A s = *scale * m;
    const Target<T, A> target(imgs + (i / g.L) * g.image, i % g.L, g, norm_pix, eps);
    const T* row = pred + i * g.n;
    for (int64_t j = lane; j < g.n; j += 32) store(out + j, s * (A(load(row + j)) - target(g, j)));
  }
}

const int64_t* ids_or_null(const View& ids) { return ids.none() ? nullptr : ids.data<int64_t>(); }

}  // namespace

void gather_patches(const View& imgs, const View& ids, int64_t p, const View& out,
                    uintptr_t stream) {
  const int64_t K = check_patches(out, "out", ids, imgs, p);
  const Geom g = geom_of(imgs, p);
  dispatch_float(imgs.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(gather_patches_kernel<T>, g.B * K * g.n, kThreads, as_stream(stream),
           imgs.data<const T>(), ids_or_null(ids), K, g, out.data<T>());
  });
}

void scatter_patches(const View& patches, const View& ids, int64_t p, const View& out,
                     uintptr_t stream) {
  const int64_t K = check_patches(patches, "patches", ids, out, p);
  const Geom g = geom_of(out, p);
  if (!ids.none() && K == 0) {  // no patch is sent anywhere (and ids' pointer may be null)
    if (out.numel() > 0)
      check_cuda(cudaMemsetAsync(out.data<void>(), 0,
                                 static_cast<size_t>(out.numel()) * element_size(out.dtype),
                                 as_stream(stream)));
    return;
  }
  dispatch_float(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(scatter_patches_kernel<T>, g.B * g.L, 1, as_stream(stream), patches.data<const T>(),
           ids_or_null(ids), K, g, out.data<T>());
  });
}

void random_masking(const View& x, const View& noise, int64_t keep, const View& visible,
                    const View& mask, const View& ids_keep, const View& ids_restore,
                    uintptr_t stream) {
  check_random_masking(x, noise, keep, visible, mask, ids_keep, ids_restore);
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  const cudaStream_t s = as_stream(stream);
  int64_t* keep_v = ids_keep.data<int64_t>();
  dispatch_float(noise.dtype, [&](auto ntag) {
    using N = decltype(ntag);
    dispatch_float(mask.dtype, [&](auto mtag) {
      using M = decltype(mtag);
      launch(random_masking_ranks_kernel<N, M>, B * L, kThreads, s, noise.data<const N>(), B, L,
             keep, keep_v, ids_restore.data<int64_t>(), mask.data<M>());
    });
  });
  dispatch_float(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(gather_visible_kernel<T>, B * keep * D, kThreads, s, x.data<const T>(),
           static_cast<const int64_t*>(keep_v), B, L, keep, D, visible.data<T>());
  });
}

void restore_masked(const View& visible, const View& token, const View& ids_restore,
                    const View& out, uintptr_t stream) {
  check_restore(visible, token, ids_restore, out);
  const int64_t B = visible.size(0), K = visible.size(1), D = visible.size(2);
  const int64_t L = ids_restore.size(1);
  dispatch_float(visible.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* tok = token.none() ? nullptr : token.data<const T>();
    launch(restore_masked_kernel<T>, B * L * D, kThreads, as_stream(stream),
           visible.data<const T>(), tok, ids_restore.data<const int64_t>(), B, K, L, D,
           out.data<T>());
  });
}

void restore_masked_backward(const View& grad_out, const View& ids_restore,
                             const View& grad_visible, const View& grad_token, uintptr_t stream) {
  check_restore(grad_visible, grad_token, ids_restore, grad_out);
  const int64_t B = grad_visible.size(0), K = grad_visible.size(1), D = grad_visible.size(2);
  const int64_t L = ids_restore.size(1);
  const cudaStream_t s = as_stream(stream);
  const int64_t* rv = ids_restore.data<const int64_t>();
  dispatch_float(grad_out.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const T* go = grad_out.data<const T>();
    launch(restore_backward_visible_kernel<T>, B * K, 1, s, go, rv, B, K, L, D,
           grad_visible.data<T>());
    if (grad_token.none() || D == 0) return;
    const int64_t rows = B * L;
    const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
    const Scratch partial(static_cast<size_t>(chunks * D) * sizeof(A), s);
    if (chunks > 0) {
      const int64_t tiles = (D + kTileD - 1) / kTileD;
      const dim3 grid(static_cast<unsigned>(chunks),
                      static_cast<unsigned>(std::min(tiles, kMaxGridY)));
      restore_backward_token_partial_kernel<T, A>
          <<<grid, dim3(kTileD, kRowLanes), 0, s>>>(go, rv, rows, K, L, D, partial.as<A>());
      check_cuda(cudaGetLastError());
    }
    launch(restore_backward_token_kernel<T, A>, D, kThreads, s,
           static_cast<const A*>(partial.as<A>()), chunks, D, grad_token.data<T>());
  });
}

void masked_patch_loss(const View& pred, const View& imgs, const View& mask, int64_t p,
                       bool norm_pix, double eps, const View& loss, uintptr_t stream) {
  check_loss(pred, imgs, mask, p, loss, "loss");
  const Geom g = geom_of(imgs, p);
  const cudaStream_t s = as_stream(stream);
  dispatch_float(pred.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const int64_t patches = g.B * g.L;
    const Scratch per_patch(static_cast<size_t>(patches) * sizeof(A), s);
    launch(patch_loss_kernel<T, A>, patches, kWarpsPerBlock, s, pred.data<const T>(),
           imgs.data<const T>(), mask.data<const float>(), g, norm_pix, A(eps), per_patch.as<A>());
    loss_total_kernel<T, A><<<1, kReduceThreads, 0, s>>>(
        per_patch.as<A>(), mask.data<const float>(), patches, loss.data<T>());
    check_cuda(cudaGetLastError());
  });
}

void masked_patch_loss_backward(const View& grad_loss, const View& pred, const View& imgs,
                                const View& mask, int64_t p, bool norm_pix, double eps,
                                const View& grad_pred, uintptr_t stream) {
  check_loss(pred, imgs, mask, p, grad_loss, "grad_loss");
  check_loss_grad(pred, grad_pred);
  const Geom g = geom_of(imgs, p);
  const cudaStream_t s = as_stream(stream);
  dispatch_float(pred.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    const int64_t patches = g.B * g.L;
    const Scratch scale(sizeof(A), s);
    loss_scale_kernel<T, A><<<1, kReduceThreads, 0, s>>>(
        grad_loss.data<const T>(), mask.data<const float>(), patches, g.n, scale.as<A>());
    check_cuda(cudaGetLastError());
    launch(patch_loss_backward_kernel<T, A>, patches, kWarpsPerBlock, s, pred.data<const T>(),
           imgs.data<const T>(), mask.data<const float>(), g, norm_pix, A(eps),
           static_cast<const A*>(scale.as<A>()), grad_pred.data<T>());
  });
}

}  // namespace pyssl::masking::cuda
