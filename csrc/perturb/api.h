// Entry points of the perturb family (SPEC.md section 6). The CPU and CUDA
// entry points of an op take the same op arguments in the same layouts: raw
// addresses of contiguous arrays owned by the Python layer (diffcomb/perturb/),
// the batch shape, a dtype code (common.h); then the execution context: on
// the CPU a thread count; on CUDA the address of a work array where the op
// needs one (at least *_work_bytes bytes), the device index and the stream.
// Argument names are those of the bindings (bind_args.h).
//
// Shapes (row-major, contiguous):
//   noise:       seed (1) int64, out (numel) of the dtype
//   argmax/topk/ranks: x, out (rows, n) of the dtype
//   grid:        w, out (rows, h, wd) of the dtype
//   assignment:  cost, out (rows, n, m) of the dtype
// A row (instance) with a NaN or +/-inf input gives an all-NaN output row.
//
// Files: perturb.h (the math, shared by both devices); cpu.cpp (noise,
// argmax, top-k, ranks), cpu_grid_sweep.cpp + cpu_grid_buckets.cpp +
// cpu_grid_heap.cpp (grid shortest path), cpu_assignment.cpp; cuda.cu.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace perturb {

// out = the noise stream of `*seed` (perturb.h, noise_group), numel values;
// kind: NoiseCode; k, tau, s: Sum-of-Gamma parameters (ignored otherwise).
void noise_cpu(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, double k, double tau, int64_t s,
               int dtype, int threads);
void argmax_onehot_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads);
void topk_mask_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype,
                   int threads);
// Ascending 1-based ranks, stable on ties.
void ranks_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads);
void grid_shortest_path_cpu(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                            int threads);
void linear_assignment_cpu(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m,
                           bool maximize, int dtype, int threads);

// CUDA versions (cuda.cu): the same op arguments (device addresses).
void noise_cuda(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, double k, double tau, int64_t s,
                int dtype, int device, std::uintptr_t stream);
void argmax_onehot_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int device,
                        std::uintptr_t stream);
void topk_mask_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype, int device,
                    std::uintptr_t stream);
void ranks_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int device,
                std::uintptr_t stream);
int64_t grid_work_bytes(int64_t rows, int64_t h, int64_t wd);
void grid_shortest_path_cuda(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                             std::uintptr_t work, int device, std::uintptr_t stream);
int64_t assignment_work_bytes(int64_t rows, int64_t n, int64_t m);
void linear_assignment_cuda(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m,
                            bool maximize, int dtype, std::uintptr_t work, int device, std::uintptr_t stream);

}  // namespace perturb
}  // namespace diffcomb
