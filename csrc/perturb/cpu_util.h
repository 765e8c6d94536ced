// Helpers of the perturb family's CPU files (cpu*.cpp): the finite-row test and the NaN fill of a row whose input
// is not finite (api.h: such a row gives an all-NaN output).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/common.h"

namespace diffcomb {
namespace perturb {

// x - x is 0 for finite x and NaN for inf and NaN: a loop the compiler vectorizes.
template <class T>
bool all_finite(const T* x, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= !(x[i] - x[i] == T(0));
  return bad == 0;
}

template <class T>
void fill_nan(T* out, int64_t n) {
  std::fill(out, out + n, quiet_nan<T>());
}

}  // namespace perturb
}  // namespace diffcomb
