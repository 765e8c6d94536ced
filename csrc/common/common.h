// Shared helpers of the native core: host/device qualifiers, dtype dispatch,
// finite checks and a small OpenMP parallel_for. No torch headers here: the
// Python layer hands us raw pointers, shapes and a dtype code.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__CUDACC__)
#define DC_HOST_DEVICE __host__ __device__
#define DC_INLINE __forceinline__
#else
#define DC_HOST_DEVICE
#define DC_INLINE inline
#endif

// Forced inline on both devices: for a hot loop whose caller must see its body (a CPU compiler
// may keep a plain `inline` function out of line once it has several callers).
#if defined(__CUDACC__)
#define DC_FORCE_INLINE __forceinline__
#elif defined(__GNUC__)
#define DC_FORCE_INLINE inline __attribute__((always_inline))
#else
#define DC_FORCE_INLINE inline
#endif

// A CPU entry point compiled for several instruction sets (GCC function multiversioning), the
// best picked at load time: its vector loops use AVX-512 or AVX2 where the machine has them,
// in a wheel built for the baseline x86-64. What it calls must be inlined into it (a function
// left out of line is compiled for the baseline only).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define DC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DC_SIMD_CLONES
#endif

namespace diffcomb {

// exp and log for math written once over a math policy M (M::exp, M::log): the C library's here
// (CUDA, and CPU code that stays scalar); common/vmath.h's VecMath for CPU vector loops.
struct LibMath {
  DC_HOST_DEVICE DC_INLINE static double exp(double x) { return ::exp(x); }
  DC_HOST_DEVICE DC_INLINE static double log(double x) { return ::log(x); }
};

// dtype codes shared with diffcomb/_native.py (DTYPE_CODES there).
enum class DType : int { Float32 = 0, Float64 = 1 };
constexpr int64_t kDTypeCount = 2;  // the number of dtype codes (check_code)

inline DType to_dtype(int code) {
  if (code == 0) return DType::Float32;
  if (code == 1) return DType::Float64;
  throw std::invalid_argument("diffcomb native: unsupported dtype code " + std::to_string(code));
}

// A raw address argument of an entry point as a typed pointer (0: nullptr).
template <class T>
DC_HOST_DEVICE DC_INLINE T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// The native boundary checks what it is handed before it touches memory: the
// Python layer validates tensors (shapes, dtypes, devices) once, so a failure
// here is a bug in diffcomb or a direct call of an entry point with bad
// arguments, and it raises (ValueError in Python) instead of reading out of
// bounds. Cheap scalar tests, once per call. Messages name the entry point as
// Python sees it (the binding's name) and, in the named forms, the argument.
[[noreturn]] inline void entry_error(const char* entry, const std::string& text) {
  throw std::invalid_argument(std::string("diffcomb native ") + entry + ": " + text);
}

inline void check_entry(const char* entry, std::initializer_list<int64_t> sizes,
                        std::initializer_list<std::uintptr_t> arrays) {
  bool empty = false;
  for (int64_t size : sizes) {
    if (size < 0) entry_error(entry, "negative size " + std::to_string(size));
    empty = empty || size == 0;
  }
  if (empty) return;
  int index = 0;
  for (std::uintptr_t address : arrays) {
    if (address == 0) {
      entry_error(entry, "array argument " + std::to_string(index) + " is null for a non-empty problem");
    }
    ++index;
  }
}

// A size or an array argument with its binding name (py::arg).
struct SizeArg {
  const char* name;
  int64_t value;
};
struct ArrayArg {
  const char* name;
  std::uintptr_t address;
};

// The named form: every size must be >= 0, and when none is 0 (the arrays
// hold elements) every array must be non-null. An entry point whose arrays
// have different extents calls it once per group, e.g. {rows, n} for the
// (rows, n) arrays and {rows} for a (rows, n + 1) one. Optional arrays (0
// meaning "absent") are not listed.
inline void check_entry(const char* entry, std::initializer_list<SizeArg> sizes,
                        std::initializer_list<ArrayArg> arrays) {
  bool empty = false;
  for (const SizeArg& size : sizes) {
    if (size.value < 0) {
      entry_error(entry, std::string(size.name) + " = " + std::to_string(size.value) + " is negative");
    }
    empty = empty || size.value == 0;
  }
  if (empty) return;
  for (const ArrayArg& array : arrays) {
    if (array.address == 0) {
      entry_error(entry, std::string(array.name) + " is null (address 0) for a non-empty problem");
    }
  }
}

// A code argument (dtype, mode, method, kind, cost) must be in [0, count).
inline void check_code(const char* entry, const char* name, int64_t code, int64_t count) {
  if (code < 0 || code >= count) {
    entry_error(entry, "unknown " + std::string(name) + " code " + std::to_string(code) + " (expected 0 to " +
                           std::to_string(count - 1) + ")");
  }
}

// An integer argument must lie in [low, high] (a count such as k <= n).
inline void check_range(const char* entry, const char* name, int64_t value, int64_t low, int64_t high) {
  if (value < low || value > high) {
    entry_error(entry, std::string(name) + " = " + std::to_string(value) + " is outside [" + std::to_string(low) +
                           ", " + std::to_string(high) + "]");
  }
}

// Calls f(T{}) with T = float or double according to the dtype code.
template <class F>
void dispatch_float(int dtype_code, F&& f) {
  switch (to_dtype(dtype_code)) {
    case DType::Float32: f(float{}); break;
    case DType::Float64: f(double{}); break;
  }
}

// Calls f(std::integral_constant<bool, b>{}) so a runtime flag becomes a
// compile-time template parameter chosen once at the entry point.
template <class F>
void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <class T>
DC_HOST_DEVICE DC_INLINE bool is_finite(T x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

template <class T>
DC_HOST_DEVICE DC_INLINE T quiet_nan() {
  return static_cast<T>(NAN);
}

// log(exp(a) + exp(b)) without overflow; -inf + -inf = -inf.
DC_HOST_DEVICE DC_INLINE double logaddexp(double a, double b) {
  const double hi = a > b ? a : b;
  const double lo = a > b ? b : a;
  if (hi == -INFINITY) return hi;
  return hi + log1p(exp(lo - hi));
}

}  // namespace diffcomb
