// The perturb family's boundary checks (common.h, check_entry): one function
// per op, called first by its CPU (cpu*.cpp) and CUDA (cuda.cu) entry points
// with the op arguments of api.h. CUDA passes its work array as `scratch`.
// Every array is required when the problem is not empty; axes are
// int32-indexed, as diffcomb/perturb/solvers.py checks for the custom ops.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "../common/common.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {

constexpr int64_t kMaxAxis = 2147483646;       // int32 indices
constexpr int64_t kMaxGridVertices = 1073741822;  // int32 vertex indices, two per vertex

inline void check_noise(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, int dtype) {
  const char* entry = "perturb_noise";
  check_entry(entry, {{"numel", numel}}, {{"seed", seed}, {"out", out}});
  check_code(entry, "kind", kind, kSumOfGamma + 1);
  check_code(entry, "dtype", dtype, kDTypeCount);
}

// The row solvers (argmax, top-k, ranks) on x, out (rows, n).
inline void check_rows(const char* entry, std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype) {
  check_entry(entry, {{"rows", rows}, {"n", n}}, {{"x", x}, {"out", out}});
  check_range(entry, "n", n, 0, kMaxAxis);
  check_code(entry, "dtype", dtype, kDTypeCount);
}

inline void check_topk(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype) {
  check_rows("perturb_topk", x, out, rows, n, dtype);
  check_range("perturb_topk", "k", k, 0, n);
}

// A batch of `rows` matrices (p, q): the input and output arrays (rows, p, q),
// the scratch, each axis at most `limit` and a known dtype.
inline void check_matrices(const char* entry, int64_t rows, SizeArg p, SizeArg q, int64_t limit,
                           std::initializer_list<ArrayArg> arrays, std::initializer_list<ArrayArg> scratch, int dtype) {
  const std::initializer_list<SizeArg> sizes{{"rows", rows}, p, q};
  check_entry(entry, sizes, arrays);
  check_entry(entry, sizes, scratch);
  check_range(entry, p.name, p.value, 0, limit);
  check_range(entry, q.name, q.value, 0, limit);
  check_code(entry, "dtype", dtype, kDTypeCount);
}

inline void check_grid(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                       std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "perturb_grid_path";
  check_matrices(entry, rows, {"h", h}, {"wd", wd}, kMaxGridVertices, {{"w", w}, {"out", out}}, scratch, dtype);
  check_range(entry, "h * wd", h * wd, 0, kMaxGridVertices);  // h, wd < 2^30: the product does not overflow
}

inline void check_assignment(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m, int dtype,
                             std::initializer_list<ArrayArg> scratch = {}) {
  check_matrices("perturb_assignment", rows, {"n", n}, {"m", m}, kMaxAxis, {{"cost", cost}, {"out", out}}, scratch,
                 dtype);
}

}  // namespace perturb
}  // namespace diffcomb
