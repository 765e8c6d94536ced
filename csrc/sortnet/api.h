// Entry points of the sorting-network family (raw addresses from
// diffcomb/_sortnet_ops.py). The CPU and CUDA entry points of an op take the
// same arguments in the same layouts, then their execution context (CPU:
// threads; CUDA: [work,] device, stream). Arrays are contiguous, row-major:
//   x, values, dx, g_values: (B, n) of the dtype;
//   alpha: (B, C) the saved mixing weights (C = comparators), the dtype;
//   Pt: (B, n, n) the TRANSPOSED relaxed permutation matrix, Pt[b, k, i] =
//     P[b, i, k] (wire-major: one output position per row); 0 = not requested;
//   g_P: (B, n, n) dL/dP, in P's layout (g_P[b, i, k] at b n^2 + i n + k) or,
//     when g_P_transposed, in Pt's (at b n^2 + k n + i): the two layouts that
//     autograd hands back, taken without a copy; 0 = values only.
// The network and the sigmoid come grouped (SortLayout, Relaxation below).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace diffcomb {
namespace sortnet {

// The comparators of a network on n wires (sortnet.h, "Layout of a network"):
// addresses of int32 arrays on the device of the call, built once per
// (network, n, device) by diffcomb/_sortnet_ops.py. The constructor checks the
// counts (comparators < 2^31, the int32 indices) and that the arrays exist.
struct SortLayout {
  std::uintptr_t lo;       // (comparators)
  std::uintptr_t hi;       // (comparators)
  std::uintptr_t offsets;  // (layers + 1)
  std::uintptr_t reach;    // (layers); the CPU's range skipping
  int64_t layers;
  int64_t comparators;  // = offsets[layers], passed so that no device value is read on the host

  SortLayout(std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, std::uintptr_t reach, int64_t layers,
             int64_t comparators)
      : lo(lo), hi(hi), offsets(offsets), reach(reach), layers(layers), comparators(comparators) {
    if (layers < 0 || comparators < 0 || comparators > INT32_MAX || (comparators > 0 && layers == 0)) {
      throw std::invalid_argument("diffcomb native: SortLayout got layers = " + std::to_string(layers) +
                                  ", comparators = " + std::to_string(comparators));
    }
    if (offsets == 0 || (layers > 0 && reach == 0) || (comparators > 0 && (lo == 0 || hi == 0))) {
      throw std::invalid_argument("diffcomb native: SortLayout needs the addresses of its arrays");
    }
  }
};

constexpr int kSigmoids = 6;  // the codes of enum Sigmoid (sortnet.h)

// How every comparator is relaxed (SPEC 5.2): sigmoid is a Sigmoid code of
// sortnet.h, steepness > 0 and finite (beta in the papers), art_lambda in
// [0, 1] (logistic_phi only). The constructor checks all three.
struct Relaxation {
  int sigmoid;
  double steepness;
  double art_lambda;

  Relaxation(int sigmoid, double steepness, double art_lambda)
      : sigmoid(sigmoid), steepness(steepness), art_lambda(art_lambda) {
    if (sigmoid < 0 || sigmoid >= kSigmoids || !(steepness > 0.0 && std::isfinite(steepness)) ||
        !(art_lambda >= 0.0 && art_lambda <= 1.0)) {
      throw std::invalid_argument("diffcomb native: Relaxation got sigmoid = " + std::to_string(sigmoid) +
                                  ", steepness = " + std::to_string(steepness) +
                                  ", art_lambda = " + std::to_string(art_lambda));
    }
  }
};

// values, alpha and (when Pt != 0) Pt of every row.
void forward_cpu(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt, int64_t batch,
                 int64_t n, int dtype, const SortLayout& layout, const Relaxation& relaxation, int threads);

// dx = dL/dx from g_values (0: zero) and g_P (0: values only), replaying the
// network from x and the saved alpha.
void backward_cpu(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t g_P,
                  bool g_P_transposed, std::uintptr_t dx, int64_t batch, int64_t n, int dtype,
                  const SortLayout& layout, const Relaxation& relaxation, int threads);

// CUDA versions (cuda.cu), device addresses, launched on `stream`.
//   forward: values/alpha (one block per row, a barrier per layer), then Pt
//     (one thread per row of P) when Pt != 0.
//   backward: the P part of dL/dalpha in chunks of the batch (a tape of
//     per-lane terms, summed per comparator), then dx; `work` is scratch of
//     backward_work_bytes(batch, n, comparators, dtype, g_P != 0) bytes.
void forward_cuda(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt, int64_t batch,
                  int64_t n, int dtype, const SortLayout& layout, const Relaxation& relaxation, int device,
                  std::uintptr_t stream);
int64_t backward_work_bytes(int64_t batch, int64_t n, int64_t comparators, int dtype, bool with_P);
void backward_cuda(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t g_P,
                   bool g_P_transposed, std::uintptr_t dx, int64_t batch, int64_t n, int dtype,
                   const SortLayout& layout, const Relaxation& relaxation, std::uintptr_t work, int device,
                   std::uintptr_t stream);

}  // namespace sortnet
}  // namespace diffcomb
