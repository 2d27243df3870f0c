// Shared plumbing for every op family: host/device annotations, tensor views, dtype dispatch,
// scalar conversions for fp16/bf16 and an OpenMP parallel_for. Plain C++17; no libtorch.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define PYSSL_HD __host__ __device__ __forceinline__
#else
#define PYSSL_HD inline
#endif

namespace pyssl {

// Element types that cross the Python boundary. The numbering is private to the core.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3, i64 = 4, i32 = 5, u8 = 6, b8 = 7 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::f16:
      return "float16";
    case DType::bf16:
      return "bfloat16";
    case DType::f64:
      return "float64";
    case DType::i64:
      return "int64";
    case DType::i32:
      return "int32";
    case DType::u8:
      return "uint8";
    case DType::b8:
      return "bool";
  }
  return "unknown";
}

// 16-bit float storage types. Arithmetic always happens in float (or double for f64).
struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

PYSSL_HD float bits_to_float(uint32_t u) {
  float f;
#if defined(__CUDA_ARCH__)
  f = __uint_as_float(u);
#else
  std::memcpy(&f, &u, 4);
#endif
  return f;
}

PYSSL_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

PYSSL_HD float to_float(bfloat16_t v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
PYSSL_HD bfloat16_t to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bfloat16_t{static_cast<uint16_t>(u >> 16)};
}

PYSSL_HD float to_float(half_t v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal: normalise the mantissa
    exp = 1;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    man &= 0x3ffu;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest even, with overflow to inf and gradual underflow.
PYSSL_HD half_t to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return half_t{static_cast<uint16_t>(sign | 0x7e00u)};   // nan
  if (a >= 0x477ff000u) return half_t{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (a < 0x38800000u) {                       // subnormal or zero in fp16
    if (a < 0x33000000u) return half_t{sign};  // rounds to zero
    const uint32_t exp = a >> 23;
    const uint32_t man = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // value / 2^-24 = man * 2^(exp - 126)
    uint32_t r = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return half_t{static_cast<uint16_t>(sign | r)};
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return half_t{static_cast<uint16_t>(sign | (r >> 13))};
}

// Load/store through the accumulation type of each storage type.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

PYSSL_HD float load(const float* p) { return *p; }
PYSSL_HD double load(const double* p) { return *p; }
PYSSL_HD float load(const half_t* p) { return to_float(*p); }
PYSSL_HD float load(const bfloat16_t* p) { return to_float(*p); }
PYSSL_HD void store(float* p, float v) { *p = v; }
PYSSL_HD void store(double* p, double v) { *p = v; }
PYSSL_HD void store(half_t* p, float v) { *p = to_half(v); }
PYSSL_HD void store(bfloat16_t* p, float v) { *p = to_bf16(v); }

// A tensor as the Python layer hands it over: address, element type, shape and strides
// (in elements). The core never owns memory.
struct View {
  uintptr_t ptr = 0;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  // An absent optional argument: no data and no shape (an empty tensor still has a shape).
  bool none() const { return ptr == 0 && shape.empty(); }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t d) const { return shape.at(static_cast<size_t>(d < 0 ? d + dim() : d)); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  bool contiguous() const {
    if (numel() == 0) return true;  // torch keeps any strides on an empty tensor
    int64_t expect = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expect) return false;
      expect *= shape[d];
    }
    return true;
  }
  template <typename T>
  T* data() const {
    return reinterpret_cast<T*>(ptr);
  }
};

// Errors raised by the core. pybind11 turns std::invalid_argument into ValueError.
[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline void check(bool ok, const std::string& msg) {
  if (!ok) fail(msg);
}

inline void check_view(const View& v, const char* name, int64_t ndim, bool float_type) {
  check(v.ptr != 0 || v.numel() == 0, std::string(name) + ": null data pointer");
  check(v.dim() == ndim, std::string(name) + ": expected " + std::to_string(ndim) +
                             " dimensions, got " + std::to_string(v.dim()));
  check(v.contiguous(), std::string(name) + ": expected a contiguous tensor");
  if (float_type) {
    check(v.dtype == DType::f32 || v.dtype == DType::f16 || v.dtype == DType::bf16 ||
              v.dtype == DType::f64,
          std::string(name) + ": expected a floating dtype, got " + dtype_name(v.dtype));
  }
}

inline void check_index_view(const View& v, const char* name, int64_t ndim) {
  check_view(v, name, ndim, false);
  check(v.dtype == DType::i64,
        std::string(name) + ": expected int64 indices, got " + dtype_name(v.dtype));
}

inline void check_same_dtype(const View& a, const char* an, const View& b, const char* bn) {
  check(a.dtype == b.dtype, std::string(bn) + ": dtype " + dtype_name(b.dtype) + " differs from " +
                                an + "'s " + dtype_name(a.dtype));
}

// Calls f(T{}) with T the storage type of a floating dtype.
template <typename F>
decltype(auto) dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    case DType::f16:
      return f(half_t{});
    case DType::bf16:
      return f(bfloat16_t{});
    default:
      fail(std::string("unsupported dtype ") + dtype_name(t));
  }
}

inline size_t element_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::bf16:
      return 2;
    default:
      return 1;
  }
}

// Large outputs are usually fresh allocations whose first touch costs a page fault per 4 KiB.
// Before writing one, the CPU kernels ask for transparent huge pages and fault the range in with
// one call (measured here: 9.2 ms -> about 3 ms to first-write 38.5 MB). PYSSL_HUGE_PAGES=0
// turns this off.
void prepare_output(const View& out);

// Threads used by the CPU kernels; the Python layer mirrors torch.get_num_threads() here.
int num_threads();
void set_num_threads(int n);

}  // namespace pyssl
