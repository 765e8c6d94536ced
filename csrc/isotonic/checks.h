// The isotonic family's boundary checks (common.h, check_entry): one function
// per op, called first by its CPU (cpu.cpp) and CUDA (cuda.cu) entry points
// with the op arguments of api.h. CUDA passes its work array as `scratch`,
// an array of the (rows, n) extent. Optional arrays (sample weights, the
// plain VJP's perm) may be 0; everything else must be non-null when the
// problem is not empty. Rows are int32-indexed: n < 2^31.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "../common/common.h"
#include "api.h"
#include "sparse_topk.h"

namespace diffcomb {
namespace isotonic {

constexpr int64_t kMaxRowLength = 2147483647;  // int32 indices (perm, starts)

// rows >= 0, 0 <= n < 2^31 and a known dtype.
inline void check_rows(const char* entry, int64_t rows, int64_t n, int dtype) {
  check_entry(entry, {{"rows", rows}, {"n", n}}, {});
  check_range(entry, "n", n, 0, kMaxRowLength - 1);
  check_code(entry, "dtype", dtype, kDTypeCount);
}

// The block starts (rows, n + 1): non-null when rows > 0, even for n = 0.
inline void check_starts(const char* entry, int64_t rows, std::uintptr_t starts) {
  check_entry(entry, {{"rows", rows}}, {{"starts", starts}});
}

inline void check_argsort(std::uintptr_t x, std::uintptr_t sorted, std::uintptr_t perm, int64_t rows, int64_t n,
                          int dtype) {
  const char* entry = "isotonic_argsort_descending";
  check_rows(entry, rows, n, dtype);
  check_entry(entry, {{"rows", rows}, {"n", n}}, {{"x", x}, {"sorted", sorted}, {"perm", perm}});
}

inline void check_project(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                          std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int dtype,
                          std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "isotonic_project";
  check_rows(entry, rows, n, dtype);
  check_starts(entry, rows, starts);
  check_entry(entry, {{"rows", rows}, {"n", n}},
              {{"a", a}, {"c", c}, {"perm", perm}, {"out", out}, {"weights", weights}});
  check_entry(entry, {{"rows", rows}, {"n", n}}, scratch);
}

inline void check_sort_project(std::uintptr_t x, std::uintptr_t c, std::uintptr_t out, std::uintptr_t perm,
                               std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int dtype) {
  const char* entry = "isotonic_sort_project";
  check_rows(entry, rows, n, dtype);
  check_starts(entry, rows, starts);
  check_entry(entry, {{"rows", rows}, {"n", n}},
              {{"x", x}, {"c", c}, {"out", out}, {"perm", perm}, {"weights", weights}});
}

// c: the sample weights, optional.
inline void check_regression(std::uintptr_t y, std::uintptr_t out, std::uintptr_t starts, std::uintptr_t weights,
                             int64_t rows, int64_t n, int dtype, std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "isotonic_regression";
  check_rows(entry, rows, n, dtype);
  check_starts(entry, rows, starts);
  check_entry(entry, {{"rows", rows}, {"n", n}}, {{"y", y}, {"out", out}, {"weights", weights}});
  check_entry(entry, {{"rows", rows}, {"n", n}}, scratch);
}

// perm is read by the rank and sort modes only.
inline void check_vjp(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
                      std::uintptr_t dx, int64_t rows, int64_t n, int mode, int dtype) {
  const char* entry = "isotonic_vjp";
  check_rows(entry, rows, n, dtype);
  check_starts(entry, rows, starts);
  check_code(entry, "mode", mode, kVjpPlain + 1);
  check_entry(entry, {{"rows", rows}, {"n", n}}, {{"grad", g}, {"weights", weights}, {"dx", dx}});
  if (mode != kVjpPlain) check_entry(entry, {{"rows", rows}, {"n", n}}, {{"perm", perm}});
}

inline void check_sparse_topk(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                              std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int64_t k,
                              int method, int dtype, std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "sparse_topk";
  check_rows(entry, rows, n, dtype);
  check_starts(entry, rows, starts);
  check_range(entry, "k", k, 0, n);
  check_code(entry, "method", method, kTopkPower + 1);
  check_entry(entry, {{"rows", rows}, {"n", n}},
              {{"s", s}, {"perm", perm}, {"out", out}, {"deriv", deriv}, {"weights", weights}});
  check_entry(entry, {{"rows", rows}, {"n", n}}, scratch);
}

}  // namespace isotonic
}  // namespace diffcomb
