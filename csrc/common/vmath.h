// Branch-free exp and log in double precision that compilers vectorize
// inside `#pragma omp simd` loops (the C library's exp/log are calls, which
// keep a loop scalar). Host code only; CUDA uses its own exp/log. Accuracy:
// within 2 ulp of the correctly rounded result on the domains stated below
// (tests/test_vmath.py checks this through the soft-DTW kernels' results).
//
// No -ffast-math anywhere: infinities and NaNs keep their IEEE meaning in the
// rest of the code, so the special cases here are explicit selects.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.h"

namespace diffcomb {
namespace vmath {

DC_INLINE std::uint64_t bits_of(double x) {
  std::uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

DC_INLINE double double_of(std::uint64_t u) {
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

#if defined(__GNUC__)
#define DC_VMATH_INLINE inline __attribute__((always_inline))
#else
#define DC_VMATH_INLINE inline
#endif

// exp(x): 0 below -708 (where the normal range ends; subnormal results are
// flushed to 0), +inf above 709 (true overflow starts at 709.78), NaN for NaN.
// V is double or a GCC vector of doubles, U the unsigned 64-bit integer
// (vector) of the same width: the same code serves one value (in loops the
// compiler vectorizes) and a whole register (Sinkhorn's explicit vector
// sweeps). Always inlined, so each multiversioned caller compiles it for its
// own instruction set.
template <class V, class U>
DC_VMATH_INLINE V exp_f64(V x) {
  const V zero = V{} + 0.0;
  const V lo = zero - 708.0, hi = zero + 709.0;
  const V clamped = x < lo ? lo : (x > hi ? hi : x);
  // k = round(x / ln 2) sits in the low mantissa bits of kd (adding 1.5 * 2^52 rounds to an integer).
  const V kd = clamped * 1.4426950408889634074 + 6755399441055744.0;
  const V k = kd - 6755399441055744.0;
  V r = clamped - k * 6.93147180369123816490e-01;  // ln 2 = hi + lo part
  r = r - k * 1.90821492927058770002e-10;         // |r| <= ln(2) / 2
  // e^r by its Taylor polynomial of degree 13 (truncation < 5e-18 relative).
  V p = zero + 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // 2^k from the integer in kd's low bits (k in [-1022, 1023]); the shift drops the rest.
  U bits;
  std::memcpy(&bits, &kd, sizeof bits);
  bits = (bits + 1023u) << 52;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  V y = p * scale;
  y = x < lo ? zero : y;
  y = x > hi ? zero + INFINITY : y;
  return x != x ? x : y;
}

DC_VMATH_INLINE double exp(double x) { return exp_f64<double, std::uint64_t>(x); }

// log(x) for positive normal x (0 < x < inf); other inputs are the caller's
// business (the kernels only take logs of sums in [1, 3]).
DC_INLINE double log_positive(double x) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kSqrt2 = 1.41421356237309504880;
  const std::uint64_t u = bits_of(x);
  // x = 2^e * f with f in [1, 2); then f in [sqrt(1/2), sqrt(2)).
  double f = double_of((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  // The exponent field as a double, without an int64 -> double conversion.
  double e = double_of(0x4330000000000000ull | (u >> 52)) - (4503599627370496.0 + 1023.0);
  const bool big = f > kSqrt2;
  f = big ? 0.5 * f : f;
  e = big ? e + 1.0 : e;
  // log f = 2 atanh(s), s = (f - 1) / (f + 1), |s| <= 0.1716, s^2 <= 0.02944:
  // series to s^23 (truncation < 2e-19 relative).
  const double s = (f - 1.0) / (f + 1.0);
  const double z = s * s;
  double p = 1.0 / 23.0;
  p = p * z + 1.0 / 21.0;
  p = p * z + 1.0 / 19.0;
  p = p * z + 1.0 / 17.0;
  p = p * z + 1.0 / 15.0;
  p = p * z + 1.0 / 13.0;
  p = p * z + 1.0 / 11.0;
  p = p * z + 1.0 / 9.0;
  p = p * z + 1.0 / 7.0;
  p = p * z + 1.0 / 5.0;
  p = p * z + 1.0 / 3.0;
  const double log_f = 2.0 * s + 2.0 * s * z * p;
  return e * kLn2Hi + (log_f + e * kLn2Lo);
}

}  // namespace vmath

// The math policy of common.h's LibMath with these functions, inlined into vector loops (log of
// positive normal numbers only).
struct VecMath {
  static inline double exp(double x) { return vmath::exp(x); }
  static inline double log(double x) { return vmath::log_positive(x); }
};

}  // namespace diffcomb
