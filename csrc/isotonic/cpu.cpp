// Batched CPU kernels of the isotonic family: OpenMP over the rows, the math
// from isotonic.h (and sparse_topk.h's block solves), the stable argsort from
// common/radix_sort.h.
//
// Long rows (n >= kLongRow) use every thread even when the batch has fewer
// rows than threads: the argsort (packed (key, index) elements, the top
// digit first, then each bucket in cache: argsort_descending_msd_team) runs
// on a team (radix_sort.h: the same permutation), and PAV runs as the chunked
// algorithm of the CUDA long-row kernel (isotonic.h, solve_row_chunked) with
// chunks of kLongRowChunk elements solved by the team, the chunk stacks
// merged by one thread, and the emission split over the team again. The chunk
// size does not depend on the thread count and the path only on n, so a row's
// result depends neither on torch.get_num_threads() nor on its batch.
// isotonic_sort_project runs both in ONE parallel region per row (the team
// sorts, unpacks its range of the sorted row and the permutation, and solves),
// and every work array of a long row comes from the kept Workspace
// (common/workspace.h): no page faults on repeated calls.
#include <algorithm>
#include <memory>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/radix_sort.h"
#include "../common/workspace.h"
#include "api.h"
#include "checks.h"
#include "dispatch.h"
#include "isotonic.h"
#include "sparse_topk.h"

namespace diffcomb {
namespace isotonic {
namespace {

constexpr int64_t kLongRow = int64_t{1} << 16;       // rows at least this long: the team paths
constexpr int64_t kLongRowChunk = int64_t{1} << 14;  // the chunk of their PAV

// Work arrays of the team's chunked PAV of one row of length n (chunk c), and the values the
// team shares. start and stats (n entries each) come from a Workspace.
template <class Stats>
struct TeamWork {
  int32_t* start;                // (n): the chunks' stacks, in place
  Stats* stats;                  // (n)
  std::vector<int32_t> count;    // (chunks): stack size of each chunk
  std::vector<Piece> pieces;     // (chunks + 1): the merged stack
  std::vector<int32_t> first;    // (chunks + 1): block index of each piece's first entry
  bool bad = false;              // the row has a non-finite input
  int32_t nblocks = 0, merged = 0;  // the merged stack's blocks and pieces
  static size_t bytes(int64_t n) { return Workspace::size_of<int32_t>(n) + Workspace::size_of<Stats>(n); }
  TeamWork(int64_t n, int64_t c, Workspace& space)
      : start(space.take<int32_t>(n)), stats(space.take<Stats>(n)), count((n + c - 1) / c),
        pieces((n + c - 1) / c + 1), first((n + c - 1) / c + 1) {}
};

// Emits the elements [i0, i1) of a row from the merged stack (pieces of the work arrays, block
// b of piece p at first[p] + k - pieces[p].begin) and writes the block starts found there: what
// solve_row_chunked writes for them.
template <class Problem, class Stats>
void emit_range(const Problem& problem, const TeamWork<Stats>& w, int32_t npieces, int32_t n, int32_t i0,
                int32_t i1, int32_t* starts) {
  if (i0 >= i1) return;
  const int32_t* start = w.start;
  const Piece* pieces = w.pieces.data();
  int32_t lo = 0, hi = npieces;  // the piece holding i0: the last p with start[pieces[p].begin] <= i0
  while (hi - lo > 1) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (start[pieces[mid].begin] <= i0) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  int32_t p = lo;
  int32_t k = pieces[p].begin + find_block(start + pieces[p].begin, pieces[p].end - pieces[p].begin, i0);
  int32_t b = w.first[p] + (k - pieces[p].begin);
  auto block_end = [&]() {
    if (k + 1 < pieces[p].end) return start[k + 1];
    return p + 1 < npieces ? start[pieces[p + 1].begin] : n;
  };
  int32_t end = block_end();
  for (int32_t i = i0; i < i1; ++i) {
    if (i == end) {
      if (++k == pieces[p].end) k = pieces[++p].begin;
      ++b;
      end = block_end();
    }
    if (i == start[k]) starts[b] = i;
    problem.emit(i, w.stats[k]);
  }
}

// solve_row_chunked's result for one row, its phases run by the calling team (inside a parallel
// region every member calls it; a team of one outside any region). w.bad, w.nblocks and w.merged
// are zero on entry.
template <class Problem>
void team_solve_row(const Problem& problem, int32_t n, int32_t chunk, int32_t* starts,
                    TeamWork<typename Problem::Stats>& w) {
  const int32_t chunks = (n + chunk - 1) / chunk;
  const auto [t, team] = team_member();
  const int32_t i0 = static_cast<int32_t>(int64_t{n} * t / team);
  const int32_t i1 = static_cast<int32_t>(int64_t{n} * (t + 1) / team);
  bool mine = false;
  for (int32_t i = i0; i < i1; ++i) mine = mine || !problem.finite(i);
  if (mine) {
#if defined(_OPENMP)
#pragma omp critical(diffcomb_isotonic_team)
#endif
    w.bad = true;
  }
  team_barrier();
  if (w.bad) {  // a non-finite row is NaN (finite_or_fail)
    for (int32_t i = i0; i < i1; ++i) problem.fail(i);
  } else {
    for (int32_t c = chunks * t / team; c < chunks * (t + 1) / team; ++c) {
      const int32_t begin = c * chunk, end = std::min(n, begin + chunk);
      w.count[c] = pav_run(problem, begin, end, w.start + begin, w.stats + begin);
    }
    team_barrier();
#if defined(_OPENMP)
#pragma omp single
#endif
    {
      int32_t npieces = 0;
      for (int32_t c = 0; c < chunks; ++c) {
        npieces = pav_merge_stack(w.pieces.data(), npieces, w.start, w.stats, c * chunk, c * chunk + w.count[c]);
      }
      for (int32_t p = 0; p < npieces; ++p) {
        w.first[p] = w.nblocks;
        w.nblocks += w.pieces[p].end - w.pieces[p].begin;
      }
      w.merged = npieces;
    }  // implicit barrier
    emit_range(problem, w, w.merged, n, i0, i1, starts);
  }
#if defined(_OPENMP)
#pragma omp single nowait
#endif
  finish_starts(starts, w.bad ? -1 : w.nblocks, n);  // the entries no member's emit_range writes
}

// team_solve_row on a team of up to `threads` threads.
template <class Problem>
void solve_row_team(const Problem& problem, int32_t n, int32_t chunk, int32_t* starts, int threads,
                    TeamWork<typename Problem::Stats>& w) {
  w.bad = false;
  w.nblocks = w.merged = 0;
#if defined(_OPENMP)
#pragma omp parallel num_threads(std::max(threads, 1)) if (threads > 1)
#endif
  team_solve_row(problem, n, chunk, starts, w);
}

// The long-row argsort's buffers (argsort_descending_msd_team) and sorted row of one worker.
template <class T>
struct SortWork {
  using Elem = KeyIndex<typename RadixKey<T>::type>;
  Elem* a;
  Elem* b;
  uint32_t* counts;
  T* sorted;
  static size_t bytes(int64_t n, int team) {
    return 2 * Workspace::size_of<Elem>(n) + Workspace::size_of<uint32_t>(int64_t{team} * counts_per_thread()) +
           Workspace::size_of<T>(n);
  }
  static constexpr int counts_per_thread() { return msd_counts<typename RadixKey<T>::type>(); }
  SortWork(int64_t n, int team, Workspace& space)
      : a(space.take<Elem>(n)), b(space.take<Elem>(n)),
        counts(space.take<uint32_t>(int64_t{team} * counts_per_thread())), sorted(space.take<T>(n)) {}
};

// Inside a team (as team_solve_row): sorted = (scale * x) sorted descending, perm, for one row.
// The members write their own ranges of sorted and perm; a barrier must follow before any reads
// another member's range.
template <class T>
void team_argsort_row(const T* x, T scale, int64_t n, T* sorted, int32_t* perm, SortWork<T>& w) {
  argsort_descending_msd_team<T>(x, scale, n, w.a, w.b, w.counts, sorted, perm);
}

// Runs f(begin, end, team) over the rows of a long-row batch: the rows one after the other on a
// team of `threads` when there are fewer rows than threads, else parallel_rows with teams of one.
template <class F>
void long_rows(int64_t rows, int64_t n, int threads, F&& f) {
  if (rows < threads) {
    f(int64_t{0}, rows, threads);
    return;
  }
  parallel_rows(rows, threads, 8 * n, [&](int64_t begin, int64_t end) { f(begin, end, 1); });
}

// Solves every row of a batch (isotonic.h, ProjectionBatch / IsotonicBatch). chunk (a test hook
// of the entry points): 0 chooses by length (the team's chunked PAV for rows of at least
// kLongRow), > 0 runs solve_row_chunked with that chunk (the CUDA algorithm), < 0 the team's
// chunked PAV with chunk -chunk (the same result as solve_row_chunked with that chunk).
template <class Batch>
void solve_rows(const Batch& batch, int64_t rows, int64_t n, int threads, int64_t chunk, int32_t* starts) {
  using Stats = typename Batch::Problem::Stats;
  const int32_t len = static_cast<int32_t>(n);
  const int64_t team_chunk = chunk < 0 ? -chunk : (chunk == 0 && n >= kLongRow ? kLongRowChunk : 0);
  if (team_chunk > 0 && n > 0) {
    const int32_t c = static_cast<int32_t>(std::min<int64_t>(team_chunk, n));
    long_rows(rows, n, threads, [&](int64_t begin, int64_t end, int team) {
      Workspace space(TeamWork<Stats>::bytes(n));
      TeamWork<Stats> w(n, c, space);
      for (int64_t r = begin; r < end; ++r) solve_row_team(batch.row(r), len, c, starts + r * (n + 1), team, w);
    });
    return;
  }
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
    if (n >= kLongRow) {
      long_rows(rows, n, threads, [&](int64_t begin, int64_t end, int team) {
        Workspace space(SortWork<T>::bytes(n, team));
        SortWork<T> w(n, team, space);
        for (int64_t r = begin; r < end; ++r) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
          team_argsort_row<T>(as_ptr<const T>(x) + r * n, T(scale), n, as_ptr<T>(sorted) + r * n,
                              as_ptr<int32_t>(perm) + r * n, w);
        }
      });
      return;
    }
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

void sort_project_cpu(std::uintptr_t x, std::uintptr_t c, std::uintptr_t out, std::uintptr_t perm,
                      std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double scale,
                      double out_scale, bool rank, bool kl, int dtype, int threads) {
  check_sort_project(x, c, out, perm, starts, weights, rows, n, dtype);
  if (n >= kLongRow) {  // one team region per row: the team's argsort, then its chunked PAV
    with_projection_batch(x, c, perm, out, weights, n, out_scale, rank, kl, dtype, [&](const auto& batch) {
      using Problem = typename std::decay_t<decltype(batch)>::Problem;
      using T = std::decay_t<decltype(*batch.out)>;
      const int32_t len = static_cast<int32_t>(n);
      long_rows(rows, n, threads, [&](int64_t begin, int64_t end, int team) {
        Workspace space(SortWork<T>::bytes(n, team) + TeamWork<typename Problem::Stats>::bytes(n));
        SortWork<T> sort(n, team, space);
        TeamWork<typename Problem::Stats> w(n, kLongRowChunk, space);
        for (int64_t r = begin; r < end; ++r) {
          const int64_t off = r * n;
          int32_t* row_perm = as_ptr<int32_t>(perm) + off;
          const Problem problem{sort.sorted, batch.c, row_perm, batch.out + off, batch.weights + off, batch.out_scale};
          w.bad = false;
          w.nblocks = w.merged = 0;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
          {
            team_argsort_row<T>(as_ptr<const T>(x) + off, T(scale), n, sort.sorted, row_perm, sort);
            team_barrier();
            team_solve_row(problem, len, static_cast<int32_t>(kLongRowChunk), as_ptr<int32_t>(starts) + r * (n + 1),
                           w);
          }
        }
      });
    });
    return;
  }
  // Each row sorted into a row of scratch, then solved while it is in cache (solve_row, as
  // solve_rows does for rows shorter than kLongRow).
  with_projection_batch(x, c, perm, out, weights, n, out_scale, rank, kl, dtype, [&](const auto& batch) {
    using Problem = typename std::decay_t<decltype(batch)>::Problem;
    using T = std::decay_t<decltype(*batch.out)>;
    const int32_t len = static_cast<int32_t>(n);
    parallel_rows(rows, threads, 24 * n, [&](int64_t begin, int64_t end) {
      ArgsortScratch<T> scratch;
      std::vector<T> sorted(n);
      std::vector<typename Problem::Stats> stats(n);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t off = r * n;
        int32_t* row_perm = as_ptr<int32_t>(perm) + off;
        argsort_descending_row<T>(as_ptr<const T>(x) + off, T(scale), len, sorted.data(), row_perm, scratch);
        const Problem problem{sorted.data(), batch.c, row_perm, batch.out + off, batch.weights + off,
                              batch.out_scale};
        solve_row(problem, len, as_ptr<int32_t>(starts) + r * (n + 1), stats.data());
      }
    });
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
