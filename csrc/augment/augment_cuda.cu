// CUDA kernels of the augmentation family (backend="cuda"). They compute what augment_cpu.cpp
// computes, through the same per-pixel math (augment.h), on the caller's stream:
//
//   resample_kernel  one thread per output pixel: the antialiased crop + resize as a 2-D sum of
//                    separable taps (aa_span / aa_tap), clamp, the jitter ops before contrast;
//                    writes a float32 scratch image and one grayscale partial sum per block
//                    (a fixed-order tree, no atomics);
//   colour_kernel    the image's mean from its partials (fixed order), contrast, the rest of the
//                    jitter, grayscale; solarize + normalise into out, or back to scratch when
//                    the image is blurred;
//   blur_pass_kernel rows, then columns with solarize + normalise, for blurred images only.
//
// The tables live on the device, so the host cannot check the crop boxes without a sync (the
// Python layer checks them on its host copy). The kernels guard themselves anyway: a tap outside
// its image is never read.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "augment/augment.h"
#include "augment/augment_checks.h"

namespace pyssl::augment::cuda {
namespace {

constexpr int kThreads = 256;

void check_cuda(cudaError_t err) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyssl CUDA error: ") + cudaGetErrorString(err));
}

// Scratch from the stream-ordered pool, released in stream order when it goes out of scope.
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
  float* data() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// What finish() needs: the view's solarize threshold (0-255 scale) and the normalisation.
struct Norm {
  float threshold;
  float scale[3];
  float shift[3];
};

__global__ void resample_kernel(const uint8_t* base, const int64_t* images, const double* params,
                                int64_t S, int interp, float* scratch, float* partial) {
  __shared__ float sums[kThreads];
  const int64_t b = blockIdx.y;
  const int64_t SS = S * S;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t* im = images + 6 * b;
  const double* p = params + kParams * b;
  float lum = 0.f;
  if (i < SS) {
    const int64_t oy = i / S, ox = i % S;
    const int64_t H = im[1], W = im[2], sy = im[3], sx = im[4], sc = im[5];
    const uint8_t* src = base + im[0];
    const int64_t top = static_cast<int64_t>(p[kTop]), left = static_cast<int64_t>(p[kLeft]);
    const int64_t h = static_cast<int64_t>(p[kHeight]), w = static_cast<int64_t>(p[kWidth]);
    const AaSpan ys = aa_span(oy, h, S, interp);
    const AaSpan xs = aa_span(p[kFlip] != 0.0 ? S - 1 - ox : ox, w, S, interp);
    float r = 0.f, g = 0.f, bl = 0.f;
    for (int64_t ky = 0; ky < ys.count; ++ky) {
      const int64_t y = top + ys.first + ky;
      if (y < 0 || y >= H) continue;
      const float wy = aa_tap(ys, ky, interp);
      float ar = 0.f, ag = 0.f, ab = 0.f;
      for (int64_t kx = 0; kx < xs.count; ++kx) {
        const int64_t x = left + xs.first + kx;
        if (x < 0 || x >= W) continue;
        const float wx = aa_tap(xs, kx, interp);
        const uint8_t* px = src + y * sy + x * sx;
        ar += wx * px[0];
        ag += wx * px[sc];
        ab += wx * px[2 * sc];
      }
      r += wy * ar, g += wy * ag, bl += wy * ab;
    }
    r = clamp255(r), g = clamp255(g), bl = clamp255(bl);
    jitter_range(0, contrast_position(p), r, g, bl, p, 0.f);
    float* o = scratch + b * 3 * SS + i;
    o[0] = r, o[SS] = g, o[2 * SS] = bl;
    lum = gray(r, g, bl);
  }
  sums[threadIdx.x] = lum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[b * gridDim.x + blockIdx.x] = sums[0];
}

template <typename T>
__global__ void colour_kernel(float* scratch, const float* partial, const double* params, int64_t S,
                              Norm norm, T* out) {
  const int64_t b = blockIdx.y;
  const int64_t SS = S * S;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= SS) return;
  const double* p = params + kParams * b;
  float total = 0.f;
  for (unsigned k = 0; k < gridDim.x; ++k) total += partial[b * gridDim.x + k];
  const float mean = total / static_cast<float>(SS);
  float* img = scratch + b * 3 * SS + i;
  float r = img[0], g = img[SS], bl = img[2 * SS];
  after_contrast(contrast_position(p), r, g, bl, p, mean);
  if (p[kSigma] > 0.0) {
    img[0] = r, img[SS] = g, img[2 * SS] = bl;
    return;
  }
  const bool sol = p[kSolarize] != 0.0;
  T* o = out + b * 3 * SS + i;
  store(o, finish(r, sol, norm.threshold, norm.scale[0], norm.shift[0]));
  store(o + SS, finish(g, sol, norm.threshold, norm.scale[1], norm.shift[1]));
  store(o + 2 * SS, finish(bl, sol, norm.threshold, norm.scale[2], norm.shift[2]));
}

// One separable pass of the Gaussian blur over the blurred images; the vertical pass ends in
// solarize + normalise into out.
template <typename T, bool kVertical>
__global__ void blur_pass_kernel(const float* in, float* rows, const double* params, int64_t S,
                                 int64_t k, Norm norm, T* out) {
  const int64_t b = blockIdx.y;
  const int64_t SS = S * S;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const double* p = params + kParams * b;
  if (i >= SS || !(p[kSigma] > 0.0)) return;
  const float sigma = static_cast<float>(p[kSigma]);
  const float total = gaussian_total(k, sigma);
  const int64_t y = i / S, x = i % S, rad = k / 2;
  const float* img = in + b * 3 * SS;
  float r = 0.f, g = 0.f, bl = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    const float w = gaussian_tap(j, k, sigma, total);
    const int64_t idx =
        kVertical ? reflect(y + j - rad, S) * S + x : y * S + reflect(x + j - rad, S);
    r += w * img[idx], g += w * img[SS + idx], bl += w * img[2 * SS + idx];
  }
  if (!kVertical) {
    float* o = rows + b * 3 * SS + i;
    o[0] = r, o[SS] = g, o[2 * SS] = bl;
    return;
  }
  const bool sol = p[kSolarize] != 0.0;
  T* o = out + b * 3 * SS + i;
  store(o, finish(r, sol, norm.threshold, norm.scale[0], norm.shift[0]));
  store(o + SS, finish(g, sol, norm.threshold, norm.scale[1], norm.shift[1]));
  store(o + 2 * SS, finish(bl, sol, norm.threshold, norm.scale[2], norm.shift[2]));
}

}  // namespace

void augment_view(uintptr_t base, const View& images, const View& params, int64_t size,
                  int64_t interpolation, int64_t blur_kernel, double solarize_threshold,
                  const std::vector<double>& mean, const std::vector<double>& std, const View& out,
                  uintptr_t stream) {
  const int64_t B = check_augment(images, params, size, interpolation, blur_kernel,
                                  solarize_threshold, mean, std, out, /*host_tables=*/false);
  check(B <= 65535, "images: at most 65535 images per call on CUDA");
  if (B == 0) return;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t SS = size * size;
  const int64_t blocks = (SS + kThreads - 1) / kThreads;
  check(blocks <= 2147483647, "size: too large");
  Norm norm;
  norm.threshold = static_cast<float>(solarize_threshold);
  for (int c = 0; c < 3; ++c) {
    norm.scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    norm.shift[c] = static_cast<float>(-mean[c] / std[c]);
  }
  Scratch scratch(sizeof(float) * static_cast<size_t>(B * 3 * SS), st);
  Scratch partial(sizeof(float) * static_cast<size_t>(B * blocks), st);
  Scratch rows(sizeof(float) * static_cast<size_t>(B * 3 * SS), st);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(B));
  const auto* src = reinterpret_cast<const uint8_t*>(base);
  const auto* tab = images.data<int64_t>();
  const auto* prm = params.data<double>();
  resample_kernel<<<grid, kThreads, 0, st>>>(src, tab, prm, size, static_cast<int>(interpolation),
                                             scratch.data(), partial.data());
  check_cuda(cudaGetLastError());
  dispatch_float(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    colour_kernel<T><<<grid, kThreads, 0, st>>>(scratch.data(), partial.data(), prm, size, norm, o);
    check_cuda(cudaGetLastError());
    blur_pass_kernel<T, false>
        <<<grid, kThreads, 0, st>>>(scratch.data(), rows.data(), prm, size, blur_kernel, norm, o);
    check_cuda(cudaGetLastError());
    blur_pass_kernel<T, true>
        <<<grid, kThreads, 0, st>>>(rows.data(), nullptr, prm, size, blur_kernel, norm, o);
    check_cuda(cudaGetLastError());
  });
}

}  // namespace pyssl::augment::cuda
