// The soft-DTW family's boundary checks (common.h, check_entry): one function
// per op, called first by its CPU (cpu.cpp) and CUDA (cuda.cu) entry points
// with the op arguments of api.h. CUDA passes its work array as `scratch`
// (work_bytes is positive for every batch > 0). The optional arrays (E of
// the value op, gx, gy, lengths_x, lengths_y) may be 0.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "../common/common.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {

// batch, m, n >= 0, every pair with at least one step on each side (the
// used lengths are clamped into [1, m] and [1, n]), a known dtype; the
// per-pair output `result` (batch) and the scratch non-null when batch > 0.
inline void check_batch(const char* entry, int64_t batch, int64_t m, int64_t n, int dtype, ArrayArg result,
                        std::initializer_list<ArrayArg> scratch) {
  check_entry(entry, {{"batch", batch}, {"m", m}, {"n", n}}, {});
  if (batch > 0 && (m == 0 || n == 0)) {
    entry_error(entry, "every pair needs at least one step in each series, got m = " + std::to_string(m) +
                           ", n = " + std::to_string(n));
  }
  check_code(entry, "dtype", dtype, kDTypeCount);
  check_entry(entry, {{"batch", batch}}, {result});
  check_entry(entry, {{"batch", batch}}, scratch);
}

inline void check_value_and_alignment(std::uintptr_t C, std::uintptr_t value, int64_t batch, int64_t m, int64_t n,
                                      int dtype, std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "softdtw_value_and_alignment";
  check_batch(entry, batch, m, n, dtype, {"value", value}, scratch);
  check_entry(entry, {{"batch", batch}}, {{"C", C}});
}

// x, y may be 0 when D = 0 (every cost is 0).
inline void check_series(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, int64_t batch, int64_t m,
                         int64_t n, int64_t D, int cost, int dtype, std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "softdtw_series";
  check_entry(entry, {{"D", D}}, {});
  check_batch(entry, batch, m, n, dtype, {"value", value}, scratch);
  check_code(entry, "cost", cost, kCostLogAugmented + 1);
  check_entry(entry, {{"batch", batch}, {"D", D}}, {{"x", x}, {"y", y}});
}

inline void check_second_order(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E,
                               std::uintptr_t HZ, int64_t batch, int64_t m, int64_t n, int dtype,
                               std::initializer_list<ArrayArg> scratch = {}) {
  const char* entry = "softdtw_second_order";
  check_batch(entry, batch, m, n, dtype, {"jvp", jvp}, scratch);
  check_entry(entry, {{"batch", batch}}, {{"C", C}, {"Z", Z}, {"E", E}, {"HZ", HZ}});
}

}  // namespace softdtw
}  // namespace diffcomb
