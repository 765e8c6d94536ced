// The CPU's vector types and their helpers for the Sinkhorn sweeps
// (cpu_sweeps.h: dense lines; cpu_cloud.cpp: point clouds): GCC vector types
// of one AVX-512 register, compiled by target clones for AVX-512, AVX2 and
// the baseline. Included by the CPU files only.
#pragma once

#include <cstdint>
#include <cstring>

#include "sinkhorn.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DC_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DC_VECTOR_CLONES
#endif

// The sweeps' bodies are inlined into each clone (a separate function would
// be compiled once, for the baseline instruction set).
#if defined(__GNUC__)
#define DC_SWEEP inline __attribute__((always_inline))
#else
#define DC_SWEEP inline
#endif

namespace diffcomb {
namespace sinkhorn {
namespace {

constexpr int64_t kBlock = 256;  // float32 sums: blocks summed in float, then in double

// ---------------------------------------------------------------------------
// Vectorized sweeps (one clone per instruction set; float and double).

// The sweeps use GCC vector types of one AVX-512 register (16 floats or 8
// doubles): each clone compiles them to its own instructions (two AVX2
// registers, four SSE registers). Lane k of an accumulator takes the entries
// j = k mod width, so sums do not depend on the instruction set. Float32
// sums run in float over blocks of 256 entries, then in double; values that
// accumulate over rows (backward) are kept in double.
template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  typedef double D __attribute__((vector_size(128)));
  static constexpr int kWidth = 16;
  static DC_SWEEP V exp(V x) { return exp_poly_f32<V, U>(x); }
};
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef uint64_t U __attribute__((vector_size(64)));
  typedef double D __attribute__((vector_size(64)));
  static constexpr int kWidth = 8;
  static DC_SWEEP V exp(V x) { return vmath::exp_f64<V, U>(x); }
};

template <class V, class T>
DC_SWEEP V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T>
DC_SWEEP void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T, class V>
DC_SWEEP double lane_sum(const V& v, int width) {
  T s = 0;
  for (int k = 0; k < width; ++k) s += v[k];
  return double(s);
}

}  // namespace
}  // namespace sinkhorn
}  // namespace diffcomb
