// Entry points of the soft-DTW family (raw addresses from diffcomb/softdtw).
// The CPU driver (cpu.cpp) and the CUDA driver (cuda.cu) run the engine of
// softdtw.h and layout.h. Both devices take the same op arguments in the
// same layouts, then their execution context: `threads` on the CPU; on CUDA
// the address of a work array of work_bytes(batch, m, n, band, second_order)
// bytes, the device index and the stream.
//   C, Z, E, HZ: (B, m, n);  x: (B, m, D), y: (B, n, D);  value, jvp: (B);
//   lengths_x, lengths_y: (B) int64 used lengths (0: every pair uses m, n;
//   values outside [1, m] / [1, n] are clamped);
//   band < 0: no band;  gamma >= 0 (0: hard DTW);  dtype: common.h DType;
//   cost: softdtw.h CostCode.
// Outputs E, HZ, gx and gy are written on the used block of each pair (its
// lengths), inside the band: the caller zeroes them first when a band or
// lengths leave cells out. Results for a pair: +inf (and no derivative
// written) when the band makes (m, n) unreachable; NaN (and NaN derivatives
// on the used block) when a used cost is not finite.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace softdtw {

// Values, and when E != 0 the expected alignments E.
void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads);

// Values of series x and y under a cost code, the costs computed on the fly
// inside the engine (no (B, m, n) matrix), and, when gx / gy != 0, the
// gradients gx (B, m, D), gy (B, n, D).
void series_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                int cost, double gamma, int64_t band, int dtype, int threads);

// Second order (SPEC 3.8) for directions Z: jvp = <E, Z>, E the expected
// alignment and HZ the Hessian-vector product.
void second_order_cpu(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                      std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                      double gamma, int64_t band, int dtype, int threads);

// CUDA versions (cuda.cu): device addresses, then the context.
int64_t cuda_work_bytes(int64_t batch, int64_t m, int64_t n, int64_t band, bool second_order);
void value_and_alignment_cuda(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                              std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                              int64_t band, int dtype, std::uintptr_t work, int device, std::uintptr_t stream);
void series_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                 std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                 int cost, double gamma, int64_t band, int dtype, std::uintptr_t work, int device,
                 std::uintptr_t stream);
void second_order_cuda(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                       std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                       double gamma, int64_t band, int dtype, std::uintptr_t work, int device,
                       std::uintptr_t stream);

}  // namespace softdtw
}  // namespace diffcomb
