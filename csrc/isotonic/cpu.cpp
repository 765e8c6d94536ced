// Batched CPU kernels of the isotonic family: OpenMP over the rows, the math
// from isotonic.h (and sparse_topk.h's block solves), the stable argsort from
// common/radix_sort.h.
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/radix_sort.h"
#include "api.h"
#include "checks.h"
#include "dispatch.h"
#include "isotonic.h"
#include "sparse_topk.h"

namespace diffcomb {
namespace isotonic {
namespace {

// Solves every row of a batch (isotonic.h, ProjectionBatch / IsotonicBatch).
template <class Batch>
void solve_rows(const Batch& batch, int64_t rows, int64_t n, int threads, int64_t chunk, int32_t* starts) {
  using Stats = typename Batch::Problem::Stats;
  const int32_t len = static_cast<int32_t>(n);
  parallel_rows(rows, threads, 8 * n, [&](int64_t begin, int64_t end) {
    std::vector<Stats> stats(n);
    std::vector<int32_t> ws_start;
    std::vector<Stats> compact;
    std::vector<Piece> pieces;
    if (chunk > 0) {
      ws_start.resize(n);
      compact.resize(n);
      pieces.resize((n + chunk - 1) / chunk + 1);
    }
    for (int64_t r = begin; r < end; ++r) {
      int32_t* row_starts = starts + r * (n + 1);
      if (chunk > 0) {
        solve_row_chunked(batch.row(r), len, static_cast<int32_t>(chunk), row_starts, ws_start.data(),
                          stats.data(), compact.data(), pieces.data());
      } else {
        solve_row(batch.row(r), len, row_starts, stats.data());
      }
    }
  });
}

}  // namespace

void argsort_descending_cpu(std::uintptr_t x, std::uintptr_t sorted, std::uintptr_t perm, int64_t rows,
                            int64_t n, double scale, int dtype, int threads) {
  check_argsort(x, sorted, perm, rows, n, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(rows, threads, 16 * n, [&](int64_t begin, int64_t end) {
      ArgsortScratch<T> scratch;
      for (int64_t r = begin; r < end; ++r) {
        argsort_descending_row<T>(as_ptr<const T>(x) + r * n, T(scale), static_cast<int32_t>(n),
                                  as_ptr<T>(sorted) + r * n, as_ptr<int32_t>(perm) + r * n, scratch);
      }
    });
  });
}

void project_cpu(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                 std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale,
                 bool rank, bool kl, int dtype, int threads, int64_t chunk) {
  check_project(a, c, perm, out, starts, weights, rows, n, dtype);
  with_projection_batch(a, c, perm, out, weights, n, out_scale, rank, kl, dtype, [&](const auto& batch) {
    solve_rows(batch, rows, n, threads, chunk, as_ptr<int32_t>(starts));
  });
}

void isotonic_cpu(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t starts,
                  std::uintptr_t weights, int64_t rows, int64_t n, double sign, int dtype, int threads,
                  int64_t chunk) {
  check_regression(y, out, starts, weights, rows, n, dtype);
  with_isotonic_batch(y, c, out, weights, n, sign, dtype, [&](const auto& batch) {
    solve_rows(batch, rows, n, threads, chunk, as_ptr<int32_t>(starts));
  });
}

void sparse_topk_cpu(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                     std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int64_t k, double r,
                     int method, int dtype, int threads, int64_t chunk) {
  check_sparse_topk(s, perm, out, deriv, starts, weights, rows, n, k, method, dtype);
  int32_t* row_starts = as_ptr<int32_t>(starts);
  with_sparse_topk_batch(
      s, perm, out, deriv, weights, n, k, r, method, dtype,
      [&](const auto& batch) { solve_rows(batch, rows, n, threads, chunk, row_starts); },
      [&](const auto& batch) {
        parallel_rows(rows, threads, 8 * n, [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row) batch.solve(row, row_starts);
        });
      });
}

void vjp_cpu(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
             std::uintptr_t dx, int64_t rows, int64_t n, double scale, int mode, int dtype, int threads) {
  check_vjp(g, perm, starts, weights, dx, rows, n, mode, dtype);
  with_vjp_mode(dtype, mode, [&](auto tag, auto mode_tag) {
    using T = decltype(tag);
    constexpr Vjp M = decltype(mode_tag)::value;
    parallel_rows(rows, threads, 4 * n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t off = r * n;
        vjp_row<T, M>(as_ptr<const T>(g) + off, M == Vjp::Plain ? nullptr : as_ptr<const int32_t>(perm) + off,
                      as_ptr<const int32_t>(starts) + r * (n + 1), as_ptr<const T>(weights) + off, T(scale),
                      static_cast<int32_t>(n), as_ptr<T>(dx) + off);
      }
    });
  });
}

}  // namespace isotonic
}  // namespace diffcomb
