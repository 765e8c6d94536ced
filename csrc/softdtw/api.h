// Entry points of the soft-DTW family (raw addresses from diffcomb/softdtw.py).
//   C: (B, m, n) costs;  P: (B, m, n, 3) transition weights (saved for backward);
//   value, grad: (B);  E: (B, m, n) gradient w.r.t. C;
//   lengths_x, lengths_y: (B) int64 used lengths (0: all rows use m, n);
//   band < 0: no band.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace softdtw {

// Value (B) and, when E != 0, expected alignment E (B, m, n) for gamma > 0
// by the anti-diagonal engine (softdtw.h, Diagonals); E is 0 outside the
// band and the used block, NaN on the used block of a pair with a
// non-finite used cost.
void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads);

void forward_cpu(std::uintptr_t C, std::uintptr_t P, std::uintptr_t value, std::uintptr_t lengths_x,
                 std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma, int64_t band,
                 int dtype, int threads);

void backward_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t grad, std::uintptr_t E,
                  std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                  int64_t band, int dtype, int threads);

// Second order for a direction Z (B, m, n): jvp (B) = <E, Z>, E (B, m, n) the
// expected alignment and HZ (B, m, n) the Hessian-vector product (SPEC 3.8).
void second_order_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t Z, std::uintptr_t jvp,
                      std::uintptr_t E, std::uintptr_t HZ, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                      int64_t batch, int64_t m, int64_t n, double gamma, int64_t band, int dtype, int threads);

}  // namespace softdtw
}  // namespace diffcomb
