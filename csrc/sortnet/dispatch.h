// Host-side dispatch shared by cpu.cpp and cuda.cu: the sigmoid code becomes
// a template parameter once per call, and the layout's arrays a SortNetwork.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "../common/common.h"
#include "api.h"
#include "sortnet.h"

namespace diffcomb {
namespace sortnet {

static_assert(int(Sigmoid::Optimal) + 1 == kSigmoids, "api.h's kSigmoids counts the Sigmoid codes");

// f(std::integral_constant<Sigmoid, S>{}) for the sigmoid code.
template <class F>
void dispatch_sigmoid(int code, F&& f) {
  switch (code) {
    case int(Sigmoid::Logistic): f(std::integral_constant<Sigmoid, Sigmoid::Logistic>{}); break;
    case int(Sigmoid::LogisticPhi): f(std::integral_constant<Sigmoid, Sigmoid::LogisticPhi>{}); break;
    case int(Sigmoid::Gaussian): f(std::integral_constant<Sigmoid, Sigmoid::Gaussian>{}); break;
    case int(Sigmoid::Reciprocal): f(std::integral_constant<Sigmoid, Sigmoid::Reciprocal>{}); break;
    case int(Sigmoid::Cauchy): f(std::integral_constant<Sigmoid, Sigmoid::Cauchy>{}); break;
    case int(Sigmoid::Optimal): f(std::integral_constant<Sigmoid, Sigmoid::Optimal>{}); break;
    default: throw std::invalid_argument("diffcomb native: unknown sigmoid code " + std::to_string(code));
  }
}

inline SortNetwork make_network(const SortLayout& layout) {
  return SortNetwork{as_ptr<const int32_t>(layout.lo), as_ptr<const int32_t>(layout.hi),
                     as_ptr<const int32_t>(layout.offsets), static_cast<int32_t>(layout.layers),
                     as_ptr<const int32_t>(layout.reach)};
}

// The checks every entry point makes before it touches memory: sizes and the
// arrays that must exist (0 = an optional array that is absent).
inline void check_call(const char* entry, int64_t batch, int64_t n, std::uintptr_t x, std::uintptr_t out,
                       std::uintptr_t alpha, const SortLayout& layout) {
  if (batch < 0 || n < 0 || n > INT32_MAX) {
    throw std::invalid_argument(std::string("diffcomb native: ") + entry + " got batch = " + std::to_string(batch) +
                                ", n = " + std::to_string(n));
  }
  if (batch > 0 && n > 0 && (x == 0 || out == 0 || (layout.comparators > 0 && alpha == 0))) {
    throw std::invalid_argument(std::string("diffcomb native: ") + entry + " needs x, its output and alpha");
  }
}

}  // namespace sortnet
}  // namespace diffcomb
