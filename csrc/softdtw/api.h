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

// Cost codes shared with diffcomb/softdtw.py (SPEC 3.1).
enum CostCode : int { kCostSqEuclidean = 0, kCostHalfSqEuclidean = 1, kCostLogAugmented = 2 };

// Value (B) of series x (B, m, D) and y (B, n, D) under a cost code, the
// costs computed on the fly inside the engine (no (B, m, n) matrix), and,
// when gx / gy != 0, the gradients gx (B, m, D), gy (B, n, D) (0 past the
// lengths; NaN on the used rows of a pair with a non-finite cost).
void series_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                int cost, double gamma, int64_t band, int dtype, int threads);

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

// CUDA versions (csrc/softdtw/cuda.cu), gamma > 0: same arrays, device
// addresses, plus a device work array of softdtw_cuda_work_bytes bytes.
// E, gx and gy must be zeroed by the caller wherever the kernel leaves cells
// out (band, lengths, infeasible band).
int64_t cuda_work_bytes(int64_t batch, int64_t m, int64_t n, int64_t band);
void value_and_alignment_cuda(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                              std::uintptr_t lengths_y, std::uintptr_t work, int64_t batch, int64_t m, int64_t n,
                              double gamma, int64_t band, int dtype, int device, std::uintptr_t stream);
void series_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                 std::uintptr_t lengths_x, std::uintptr_t lengths_y, std::uintptr_t work, int64_t batch, int64_t m,
                 int64_t n, int64_t D, int cost, double gamma, int64_t band, int dtype, int device,
                 std::uintptr_t stream);

}  // namespace softdtw
}  // namespace diffcomb
