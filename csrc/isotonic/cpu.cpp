// Batched CPU kernels of the isotonic family: OpenMP over the rows, the math
// from isotonic.h, the stable argsort from common/radix_sort.h.
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/radix_sort.h"
#include "api.h"
#include "isotonic.h"

namespace diffcomb {
namespace isotonic {
namespace {

template <class T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

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

template <class T, Reg R, bool kRank>
void project_typed(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                   std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale,
                   int threads, int64_t chunk) {
  const ProjectionBatch<T, R, kRank> batch{ptr<const T>(a), ptr<const T>(c),  ptr<const int32_t>(perm),
                                           ptr<T>(out),     ptr<T>(weights), T(out_scale), n};
  solve_rows(batch, rows, n, threads, chunk, ptr<int32_t>(starts));
}

}  // namespace

void argsort_descending_cpu(std::uintptr_t x, std::uintptr_t sorted, std::uintptr_t perm, int64_t rows,
                            int64_t n, double scale, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(rows, threads, 16 * n, [&](int64_t begin, int64_t end) {
      ArgsortScratch<T> scratch;
      for (int64_t r = begin; r < end; ++r) {
        argsort_descending_row<T>(ptr<const T>(x) + r * n, T(scale), static_cast<int32_t>(n),
                                  ptr<T>(sorted) + r * n, ptr<int32_t>(perm) + r * n, scratch);
      }
    });
  });
}

void project_cpu(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                 std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale,
                 bool rank, bool kl, int dtype, int threads, int64_t chunk) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(rank, [&](auto rank_tag) {
      constexpr bool kRank = decltype(rank_tag)::value;
      if (kl) {
        project_typed<T, Reg::KL, kRank>(a, c, perm, out, starts, weights, rows, n, out_scale, threads, chunk);
      } else {
        project_typed<T, Reg::L2, kRank>(a, c, perm, out, starts, weights, rows, n, out_scale, threads, chunk);
      }
    });
  });
}

void isotonic_cpu(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t starts,
                  std::uintptr_t weights, int64_t rows, int64_t n, double sign, int dtype, int threads,
                  int64_t chunk) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(c != 0, [&](auto weighted_tag) {
      constexpr bool kWeighted = decltype(weighted_tag)::value;
      const IsotonicBatch<T, kWeighted> batch{ptr<const T>(y), ptr<const T>(c), ptr<T>(out), ptr<T>(weights),
                                              T(sign), n};
      solve_rows(batch, rows, n, threads, chunk, ptr<int32_t>(starts));
    });
  });
}

void vjp_cpu(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
             std::uintptr_t dx, int64_t rows, int64_t n, double scale, int mode, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto run = [&](auto mode_tag) {
      constexpr Vjp M = decltype(mode_tag)::value;
      parallel_rows(rows, threads, 4 * n, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t off = r * n;
          vjp_row<T, M>(ptr<const T>(g) + off, M == Vjp::Plain ? nullptr : ptr<const int32_t>(perm) + off,
                        ptr<const int32_t>(starts) + r * (n + 1), ptr<const T>(weights) + off, T(scale),
                        static_cast<int32_t>(n), ptr<T>(dx) + off);
        }
      });
    };
    switch (mode) {
      case kVjpRank: run(std::integral_constant<Vjp, Vjp::Rank>{}); break;
      case kVjpSort: run(std::integral_constant<Vjp, Vjp::Sort>{}); break;
      case kVjpPlain: run(std::integral_constant<Vjp, Vjp::Plain>{}); break;
      default: throw std::invalid_argument("diffcomb native: unknown vjp mode");
    }
  });
}

}  // namespace isotonic
}  // namespace diffcomb
