// Host-side dispatch shared by cpu.cpp and cuda.cu: turns an entry point's
// runtime arguments (dtype code, rank/sort, L2/KL, weighted, VJP mode) into
// the compile-time batch types of isotonic.h, chosen once per call.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "../common/common.h"
#include "api.h"
#include "isotonic.h"

namespace diffcomb {
namespace isotonic {

// f(batch) with batch a ProjectionBatch<T, R, kRank>.
template <class F>
void with_projection_batch(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                           std::uintptr_t weights, int64_t n, double out_scale, bool rank, bool kl, int dtype,
                           F&& f) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(rank, [&](auto rank_tag) {
      constexpr bool kRank = decltype(rank_tag)::value;
      dispatch_bool(kl, [&](auto kl_tag) {
        constexpr Reg R = decltype(kl_tag)::value ? Reg::KL : Reg::L2;
        f(ProjectionBatch<T, R, kRank>{as_ptr<const T>(a), as_ptr<const T>(c), as_ptr<const int32_t>(perm),
                                       as_ptr<T>(out), as_ptr<T>(weights), T(out_scale), n});
      });
    });
  });
}

// f(batch) with batch an IsotonicBatch<T, kWeighted> (weighted when c != 0).
template <class F>
void with_isotonic_batch(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t weights,
                         int64_t n, double sign, int dtype, F&& f) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(c != 0, [&](auto weighted_tag) {
      constexpr bool kWeighted = decltype(weighted_tag)::value;
      f(IsotonicBatch<T, kWeighted>{as_ptr<const T>(y), as_ptr<const T>(c), as_ptr<T>(out), as_ptr<T>(weights),
                                    T(sign), n});
    });
  });
}

// f(T{}, std::integral_constant<Vjp, M>{}) for the dtype and VJP mode codes.
template <class F>
void with_vjp_mode(int dtype, int mode, F&& f) {
  dispatch_float(dtype, [&](auto tag) {
    switch (mode) {
      case kVjpRank: f(tag, std::integral_constant<Vjp, Vjp::Rank>{}); break;
      case kVjpSort: f(tag, std::integral_constant<Vjp, Vjp::Sort>{}); break;
      case kVjpPlain: f(tag, std::integral_constant<Vjp, Vjp::Plain>{}); break;
      default: throw std::invalid_argument("diffcomb native: unknown vjp mode");
    }
  });
}

}  // namespace isotonic
}  // namespace diffcomb
