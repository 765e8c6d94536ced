// Entry points of the sorting-network family (raw addresses from
// diffcomb/sortnet.py). Arrays are contiguous and row-major:
//   x, values, dx, g_values: (B, n) of the dtype;
//   alpha: (B, C) the saved mixing weights (C = comparators), the dtype;
//   Pt: (B, n, n) the TRANSPOSED relaxed permutation matrix, Pt[b, k, i] =
//     P[b, i, k] (wire-major: one output position per row); 0 = not requested;
//   g_P: (B, n, n) dL/dP in P's own layout (the CPU backward); g_Pt: dL/dPt
//     (the CUDA backward); 0 = values only;
//   lo, hi: (C) int32 wires, offsets: (layers + 1) int32, reach: (layers) int32 (sortnet.h).
// sigmoid: the Sigmoid code of sortnet.h; steepness = SPEC's beta.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace sortnet {

// values, alpha and (when Pt != 0) Pt of every row.
void forward_cpu(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt,
                 std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, std::uintptr_t reach, int64_t batch,
                 int64_t n, int64_t layers, int sigmoid, double steepness, double art_lambda, int dtype,
                 int threads);

// dx = dL/dx from g_values (0: zero) and g_P (0: values only), replaying the
// network from x and the saved alpha.
void backward_cpu(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t g_P,
                  std::uintptr_t dx, std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets,
                  std::uintptr_t reach, int64_t batch, int64_t n, int64_t layers, int sigmoid, double steepness,
                  double art_lambda, int dtype, int threads);

// CUDA versions (cuda.cu), device addresses, launched on `stream`; comparators = C
// (the layout's last offset, passed so that no device value is read on the host):
//   forward: values/alpha (one block per row, a barrier per layer), then Pt
//     (one thread per row of P) when Pt != 0.
//   p_backward: for rows [0, batch) of this chunk, tape (batch, C, n) of the
//     dtype receives the per-lane terms of the P part of dL/dalpha (the
//     caller sums them over the last axis); state is (batch, n, n) scratch.
//   values_backward: dx from g_values (0: zero), the P part dalpha_p
//     ((B, C) float64, 0: none); work: B * (n * sizeof(T) + 2 * C * 8 + n * 8) bytes.
void forward_cuda(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt,
                  std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, int64_t batch, int64_t n,
                  int64_t layers, int64_t comparators, int sigmoid, double steepness, double art_lambda, int dtype, int device,
                  std::uintptr_t stream);
void p_backward_cuda(std::uintptr_t alpha, std::uintptr_t g_Pt, std::uintptr_t tape, std::uintptr_t state,
                     std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, int64_t batch, int64_t n,
                     int64_t layers, int64_t comparators, int dtype, int device, std::uintptr_t stream);
int64_t values_backward_work_bytes(int64_t batch, int64_t n, int64_t comparators, int dtype);
void values_backward_cuda(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t dalpha_p,
                          std::uintptr_t dx, std::uintptr_t work, std::uintptr_t lo, std::uintptr_t hi,
                          std::uintptr_t offsets, int64_t batch, int64_t n, int64_t layers, int64_t comparators,
                          int sigmoid, double steepness, double art_lambda, int dtype, int device, std::uintptr_t stream);

}  // namespace sortnet
}  // namespace diffcomb
