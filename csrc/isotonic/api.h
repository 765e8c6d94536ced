// Entry points of the isotonic family (bound in bind.h as diffcomb._C /
// diffcomb._C_cuda's isotonic_* and sparse_topk*). Arguments are raw addresses
// of contiguous arrays owned by the Python layer (diffcomb/_isotonic_ops.py,
// diffcomb/topk.py), the batch shape and scalars, a dtype code (common.h),
// then the execution context that diffcomb._native.launch appends: on the CPU
// a thread count (and chunk, a test hook); on CUDA the work array where the
// entry point needs one, the device index and the stream to launch on.
//
// Array shapes (B rows of length n, all row-major and contiguous):
//   a, out, weights, g, dx: (B, n) of the dtype;  perm: (B, n) int32;
//   starts: (B, n + 1) int32 (isotonic.h, finish_starts);  c: (n) shared
//   for projections, (B, n) sample weights for isotonic regression.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace isotonic {

// Vjp mode codes shared with diffcomb/_isotonic_ops.py.
enum VjpCode : int { kVjpRank = 0, kVjpSort = 1, kVjpPlain = 2 };

// sorted = (scale * x) sorted descending (stable), perm = its input indices.
void argsort_descending_cpu(std::uintptr_t x, std::uintptr_t sorted, std::uintptr_t perm, int64_t rows,
                            int64_t n, double scale, int dtype, int threads);

// Permutahedron projection on rows already sorted descending (isotonic.h,
// Projection). rank=true: out[perm[i]] = a_i - v_i; rank=false: out[i] =
// out_scale * (c_i - v_i). chunk > 0 runs the chunked (GPU) algorithm.
void project_cpu(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                 std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale,
                 bool rank, bool kl, int dtype, int threads, int64_t chunk);

// argsort_descending_cpu then project_cpu in one call (the sorted rows are
// scratch of the call): the soft rank / sort / top-k forward. scale: the
// argsort's (a = sort_desc(scale * x)); out_scale, rank, kl: project_cpu's.
// The same outputs as the two calls.
void sort_project_cpu(std::uintptr_t x, std::uintptr_t c, std::uintptr_t out, std::uintptr_t perm,
                      std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double scale,
                      double out_scale, bool rank, bool kl, int dtype, int threads);

// Weighted isotonic regression, non-increasing fit of sign * y times sign;
// c = sample weights (0: unweighted).
void isotonic_cpu(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t starts,
                  std::uintptr_t weights, int64_t rows, int64_t n, double sign, int dtype, int threads,
                  int64_t chunk);

// Block VJP (isotonic.h, vjp_row); perm is ignored for kVjpPlain.
void vjp_cpu(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
             std::uintptr_t dx, int64_t rows, int64_t n, double scale, int mode, int dtype, int threads);

// Sparse soft top-k (sparse_topk.h) on rows s already sorted descending
// (s = x / eps): out[perm[i]] = the mask, deriv[perm[i]] = psi' (always
// written), weights[i] = the VJP's block weights. method: TopkMethod code; r =
// 1 / (p - 1) for the general method. chunk > 0 runs the chunked (GPU) PAV.
void sparse_topk_cpu(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                     std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int64_t k, double r,
                     int method, int dtype, int threads, int64_t chunk);

// CUDA versions (csrc/isotonic/cuda.cu): the same arguments in the same order
// (device addresses), then the execution context: the device work array
// (solves only; at least isotonic_work_bytes / sparse_topk_work_bytes(rows,
// n) bytes), the device index and the stream. No argsort: torch.sort serves
// it on the GPU.
int64_t cuda_work_bytes(int64_t rows, int64_t n);
void project_cuda(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                  std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale, bool rank,
                  bool kl, int dtype, std::uintptr_t work, int device, std::uintptr_t stream);
void isotonic_cuda(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t starts,
                   std::uintptr_t weights, int64_t rows, int64_t n, double sign, int dtype, std::uintptr_t work,
                   int device, std::uintptr_t stream);
int64_t sparse_topk_cuda_work_bytes(int64_t rows, int64_t n);
void sparse_topk_cuda(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                      std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int64_t k, double r,
                      int method, int dtype, std::uintptr_t work, int device, std::uintptr_t stream);
void vjp_cuda(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
              std::uintptr_t dx, int64_t rows, int64_t n, double scale, int mode, int dtype, int device,
              std::uintptr_t stream);

}  // namespace isotonic
}  // namespace diffcomb
