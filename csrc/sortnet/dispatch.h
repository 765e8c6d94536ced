// Host-side dispatch shared by cpu.cpp and cuda.cu: the sigmoid code becomes
// a template parameter once per call, and the network's arrays a SortNetwork.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "../common/common.h"
#include "sortnet.h"

namespace diffcomb {
namespace sortnet {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

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

// reach = 0 (the CUDA kernels): a network without SortNetwork::active.
inline SortNetwork make_network(std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, int64_t layers,
                                std::uintptr_t reach = 0) {
  return SortNetwork{as_ptr<const int32_t>(lo), as_ptr<const int32_t>(hi), as_ptr<const int32_t>(offsets),
                     static_cast<int32_t>(layers), as_ptr<const int32_t>(reach)};
}

}  // namespace sortnet
}  // namespace diffcomb
