// Isotonic regression by Pool Adjacent Violators (PAV): the math of the
// permutahedron projections (soft sort, soft rank, soft top-k) and of
// weighted isotonic regression. SPEC.md section 1.
//
// Everything here is header-only and DC_HOST_DEVICE: csrc/isotonic/cpu.cpp
// and csrc/isotonic/cuda.cu call the same functions in the same order, so the
// recursion exists once.
//
// The canonical problem is one row of length n: find the non-increasing v
// (v_0 >= v_1 >= ...) that minimizes a separable objective whose solution is
// constant on contiguous blocks. A block is summarized by sufficient
// statistics (Stats) that pool associatively:
//   MeanStats       (sum, weight): value = sum / weight    (L2, weighted L2)
//   LogSumExpStats  (lse_s, lse_w): value = lse_s - lse_w  (KL)
// PAV keeps a stack of blocks with strictly decreasing values and pools the
// top two while they violate the order.
//
// Parallel PAV (used by the CUDA kernel for long rows, and by tests on the
// CPU): pooling adjacent violators in ANY order ends at the same unique
// solution, so a row is cut into chunks, PAV runs on each chunk
// independently, and the chunk stacks are then merged left to right with
// pav_merge_stack. A merge only pools at the junction: it pops blocks off the
// merged stack's top while they violate, and once a block of the incoming
// chunk is pushed without pooling, the rest of that chunk stays as it is.
// The merged stack is kept as a list of Pieces (runs of stack entries left in
// place in the chunks' work arrays), so nothing is copied while merging; the
// serial merge costs O(number of chunks + number of poolings).
#pragma once

#include "../common/common.h"

namespace diffcomb {
namespace isotonic {

enum class Reg { L2, KL };

// L2 and weighted L2: the block value is the weighted mean (cached, so a
// comparison reads it instead of dividing). A projection's leaf is s - w with
// weight 1; its parts are also summed apart, so that it can emit
// s_i - mean(s) + mean(w) without s cancelling against a rounded s - w (the
// value and so the pooling decisions stay those of the sum of s - w).
struct MeanStats {
  double sum;
  double weight;
  double mean;
  double sum_s;
  double sum_w;
  DC_HOST_DEVICE DC_INLINE static MeanStats leaf(double value, double weight) {
    return {value * weight, weight, value, 0.0, 0.0};
  }
  // The projection's leaf: value s - w, weight 1.
  DC_HOST_DEVICE DC_INLINE static MeanStats projection_leaf(double s, double w) { return {s - w, 1.0, s - w, s, w}; }
  DC_HOST_DEVICE DC_INLINE double value() const { return mean; }
  // A projection's s - value for an element s of this block, as s - mean(s) + mean(w).
  // A block of one element (most blocks of a long row) skips the divisions by weight 1 (exact).
  DC_HOST_DEVICE DC_INLINE double projection_residual(double s) const {
    if (weight == 1.0) return (s - sum_s) + sum_w;
    return (s - sum_s / weight) + sum_w / weight;
  }
  DC_HOST_DEVICE DC_INLINE MeanStats pooled(const MeanStats& right) const {
    const double s = sum + right.sum;
    const double w = weight + right.weight;
    return {s, w, s / w, sum_s + right.sum_s, sum_w + right.sum_w};
  }
};

// A log-sum-exp kept as anchor + log(sum of exp(x - anchor)), anchor = the
// largest x. In a projection both sorted vectors decrease, so a block's first
// element is its largest: a leaf is (x, 1), pooling costs one exp, and sums
// stay >= 1 (no underflow, no overflow).
struct AnchoredLse {
  double anchor;
  double sum;
  DC_HOST_DEVICE DC_INLINE double lse() const { return anchor + log(sum); }
  DC_HOST_DEVICE DC_INLINE AnchoredLse pooled(const AnchoredLse& other) const {
    if (anchor >= other.anchor) return {anchor, sum + other.sum * exp(other.anchor - anchor)};
    return {other.anchor, other.sum + sum * exp(anchor - other.anchor)};
  }
};

// KL: the block value is LSE(s_B) - LSE(w_B) (SPEC 1.2), cached.
struct LogSumExpStats {
  AnchoredLse s;
  AnchoredLse w;
  double val;
  DC_HOST_DEVICE DC_INLINE static LogSumExpStats leaf(double s, double w) { return {{s, 1.0}, {w, 1.0}, s - w}; }
  DC_HOST_DEVICE DC_INLINE double value() const { return val; }
  DC_HOST_DEVICE DC_INLINE double lse_s() const { return s.lse(); }
  DC_HOST_DEVICE DC_INLINE double lse_w() const { return w.lse(); }
  DC_HOST_DEVICE DC_INLINE LogSumExpStats pooled(const LogSumExpStats& right) const {
    const AnchoredLse ps = s.pooled(right.s);
    const AnchoredLse pw = w.pooled(right.w);
    return {ps, pw, (ps.anchor - pw.anchor) + log(ps.sum / pw.sum)};
  }
};

template <Reg R>
struct StatsFor;
template <>
struct StatsFor<Reg::L2> {
  using type = MeanStats;
};
template <>
struct StatsFor<Reg::KL> {
  using type = LogSumExpStats;
};

// ---------------------------------------------------------------------------
// PAV on a stack stored in two arrays (block starts, block statistics).

// Pushes one block (first element index, statistics) and pools while the
// block below has a value <= the pushed one (ties are pooled too).
template <class Stats>
DC_HOST_DEVICE DC_INLINE void pav_push(int32_t* start, Stats* stats, int32_t& top, int32_t first,
                                       Stats block) {
  while (top > 0 && stats[top - 1].value() <= block.value()) {
    --top;
    block = stats[top].pooled(block);
    first = start[top];
  }
  start[top] = first;
  stats[top] = block;
  ++top;
}

// Runs PAV over the leaves [begin, end) of a row; the stack is written at
// start[0..), stats[0..) and its size returned.
template <class Stats, class Problem>
DC_HOST_DEVICE DC_FORCE_INLINE int32_t pav_run(const Problem& problem, int32_t begin, int32_t end,
                                         int32_t* start, Stats* stats) {
  int32_t top = 0;
  for (int32_t i = begin; i < end; ++i) pav_push(start, stats, top, i, problem.leaf(i));
  return top;
}

// A run [begin, end) of stack entries in a row's work arrays.
struct Piece {
  int32_t begin;
  int32_t end;
};

// Merges the stack of one chunk, stored at work positions [begin, end), onto
// the stack described by pieces[0..npieces). Returns the new piece count.
template <class Stats>
DC_HOST_DEVICE DC_INLINE int32_t pav_merge_stack(Piece* pieces, int32_t npieces, int32_t* start,
                                                 Stats* stats, int32_t begin, int32_t end) {
  if (begin == end) return npieces;
  int32_t k = begin;
  Stats block = stats[k];
  int32_t first = start[k];
  for (;;) {
    while (npieces > 0) {
      Piece& top = pieces[npieces - 1];
      const int32_t t = top.end - 1;
      if (stats[t].value() > block.value()) break;
      block = stats[t].pooled(block);
      first = start[t];
      if (--top.end == top.begin) --npieces;
    }
    if (k + 1 < end && block.value() <= stats[k + 1].value()) {
      block = block.pooled(stats[k + 1]);
      ++k;
    } else {
      break;
    }
  }
  start[k] = first;
  stats[k] = block;
  pieces[npieces] = Piece{k, end};
  return npieces + 1;
}

// Index b of the block that holds element i: the last b with start[b] <= i.
DC_HOST_DEVICE DC_INLINE int32_t find_block(const int32_t* start, int32_t nblocks, int32_t i) {
  int32_t lo = 0, hi = nblocks;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (start[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// ---------------------------------------------------------------------------
// Row problems. Each provides finite(i), leaf(i), emit(i, block) and fail(i);
// a row whose inputs are not all finite becomes NaN (SPEC section 0).

// Projection onto a permutahedron (SPEC 1.2): P(z, w) = z - v, v the
// isotonic solution for the sorted point s and the sorted weights w.
//   rank mode (kRank): a = s (the row's point, sorted descending), c = w
//     (shared, length n); out[perm[i]] = s_i - v_i.
//   sort mode: a = w (the row's values, sorted descending), c = s (shared,
//     rho / eps); out[i] = out_scale * (s_i - v_i).
// weights[i] is the block weight used by the backward: 1/|B| for L2, and the
// softmax of the row vector a over the block for KL (SPEC 1.4).
template <class T, Reg R, bool kRank>
struct Projection {
  using Stats = typename StatsFor<R>::type;
  const T* a;
  const T* c;
  const int32_t* perm;
  T* out;
  T* weights;
  T out_scale;

  DC_HOST_DEVICE DC_INLINE bool finite(int32_t i) const { return is_finite(a[i]) && is_finite(c[i]); }

  DC_HOST_DEVICE DC_INLINE Stats leaf(int32_t i) const {
    const double s = kRank ? double(a[i]) : double(c[i]);
    const double w = kRank ? double(c[i]) : double(a[i]);
    if constexpr (R == Reg::L2) {
      return Stats::projection_leaf(s, w);
    } else {
      return Stats::leaf(s, w);
    }
  }

  DC_HOST_DEVICE DC_INLINE void emit(int32_t i, const Stats& block) const {
    const double s = kRank ? double(a[i]) : double(c[i]);
    const double w = kRank ? double(c[i]) : double(a[i]);
    // p = s - value, arranged so that s never cancels against a rounded copy of itself: with
    // |s| >> |w| (a small regularization) s - (s - w) would lose w to the rounding of s - w.
    double p;
    if constexpr (R == Reg::L2) {
      p = block.projection_residual(s);
    } else {
      p = (s - block.s.anchor) + block.w.anchor - log(block.s.sum / block.w.sum);
    }
    if (kRank) {
      out[perm[i]] = T(p);
    } else {
      out[i] = T(double(out_scale) * p);
    }
    if constexpr (R == Reg::L2) {
      weights[i] = block.weight == 1.0 ? T(1) : T(1.0 / block.weight);
    } else {
      const AnchoredLse& lse = kRank ? block.s : block.w;
      weights[i] = T(exp(double(a[i]) - lse.anchor) / lse.sum);
    }
  }

  DC_HOST_DEVICE DC_INLINE void fail(int32_t i) const {
    if (kRank) {
      out[perm[i]] = quiet_nan<T>();
    } else {
      out[i] = quiet_nan<T>();
    }
    weights[i] = quiet_nan<T>();
  }
};

// Weighted least-squares isotonic regression (scikit-learn's definition):
// solved as the non-increasing fit of sign * y, returned times sign
// (sign = -1 gives the non-decreasing fit). c = sample weights (nullptr: 1).
// weights[i] = c_i / sum_B c, the block weight of the backward.
template <class T, bool kWeighted>
struct Isotonic {
  using Stats = MeanStats;
  const T* y;
  const T* c;
  T* out;
  T* weights;
  T sign;

  DC_HOST_DEVICE DC_INLINE double weight(int32_t i) const { return kWeighted ? double(c[i]) : 1.0; }

  // A non-finite value or weight, or a negative weight, makes the slice NaN.
  DC_HOST_DEVICE DC_INLINE bool finite(int32_t i) const {
    return is_finite(y[i]) && (!kWeighted || (is_finite(c[i]) && c[i] >= T(0)));
  }

  DC_HOST_DEVICE DC_INLINE Stats leaf(int32_t i) const {
    return Stats::leaf(double(sign) * double(y[i]), weight(i));
  }

  DC_HOST_DEVICE DC_INLINE void emit(int32_t i, const Stats& block) const {
    out[i] = T(double(sign) * block.value());
    weights[i] = T(weight(i) / block.weight);
  }

  DC_HOST_DEVICE DC_INLINE void fail(int32_t i) const {
    out[i] = quiet_nan<T>();
    weights[i] = quiet_nan<T>();
  }
};

// Batches: B contiguous rows of length n; row(r) builds row r's Problem.
template <class T, Reg R, bool kRank>
struct ProjectionBatch {
  using Problem = Projection<T, R, kRank>;
  const T* a;
  const T* c;
  const int32_t* perm;
  T* out;
  T* weights;
  T out_scale;
  int64_t n;
  DC_HOST_DEVICE DC_INLINE Problem row(int64_t r) const {
    const int64_t off = r * n;
    return Problem{a + off, c, perm + off, out + off, weights + off, out_scale};
  }
};

template <class T, bool kWeighted>
struct IsotonicBatch {
  using Problem = Isotonic<T, kWeighted>;
  const T* y;
  const T* c;
  T* out;
  T* weights;
  T sign;
  int64_t n;
  DC_HOST_DEVICE DC_INLINE Problem row(int64_t r) const {
    const int64_t off = r * n;
    return Problem{y + off, kWeighted ? c + off : nullptr, out + off, weights + off, sign};
  }
};

// The saved block structure of a row is int32 starts[0..n]: starts[b] is the
// first element of block b for b < nblocks, starts[n] = nblocks (-1 marks a
// non-finite row), and the unused entries hold n so outputs are deterministic.
DC_HOST_DEVICE DC_INLINE void finish_starts(int32_t* starts, int32_t nblocks, int32_t n) {
  for (int32_t b = nblocks < 0 ? 0 : nblocks; b < n; ++b) starts[b] = n;
  starts[n] = nblocks;
}

// The opening of every row solve (solve_row, solve_row_chunked, sparse_topk.h's threshold solve):
// true when every input of the row is finite; otherwise every output of the row is written as NaN
// (problem.fail) with the structure of a non-finite row (starts[n] = -1), and false. A problem
// provides finite(i) and fail(i).
template <class Problem>
DC_HOST_DEVICE DC_INLINE bool finite_or_fail(const Problem& problem, int32_t n, int32_t* starts) {
  for (int32_t i = 0; i < n; ++i) {
    if (!problem.finite(i)) {
      for (int32_t j = 0; j < n; ++j) problem.fail(j);
      finish_starts(starts, -1, n);
      return false;
    }
  }
  return true;
}

// Sequential solve of one row; the stack goes straight to starts (the final
// stack is the block list) with stats as scratch of length n.
template <class Problem>
DC_HOST_DEVICE DC_INLINE int32_t solve_row(const Problem& problem, int32_t n, int32_t* starts,
                                           typename Problem::Stats* stats) {
  if (!finite_or_fail(problem, n, starts)) return -1;
  const int32_t nblocks = pav_run(problem, 0, n, starts, stats);
  for (int32_t b = 0; b < nblocks; ++b) {
    const int32_t end = b + 1 < nblocks ? starts[b + 1] : n;
    for (int32_t i = starts[b]; i < end; ++i) problem.emit(i, stats[b]);
  }
  finish_starts(starts, nblocks, n);
  return nblocks;
}

// Chunked solve of one row: exactly the phases of the CUDA long-row kernel
// (csrc/isotonic/cuda.cu), run one after the other on the host. Tests run it
// against solve_row. Work arrays: ws_start, ws_stats, compact of length n and
// pieces of length ceil(n / chunk).
template <class Problem>
int32_t solve_row_chunked(const Problem& problem, int32_t n, int32_t chunk, int32_t* starts,
                          int32_t* ws_start, typename Problem::Stats* ws_stats,
                          typename Problem::Stats* compact, Piece* pieces) {
  if (!finite_or_fail(problem, n, starts)) return -1;
  int32_t npieces = 0;
  for (int32_t begin = 0; begin < n; begin += chunk) {
    const int32_t end = begin + chunk < n ? begin + chunk : n;
    const int32_t count = pav_run(problem, begin, end, ws_start + begin, ws_stats + begin);
    npieces = pav_merge_stack(pieces, npieces, ws_start, ws_stats, begin, begin + count);
  }
  int32_t nblocks = 0;
  for (int32_t p = 0; p < npieces; ++p) {
    for (int32_t k = pieces[p].begin; k < pieces[p].end; ++k, ++nblocks) {
      starts[nblocks] = ws_start[k];
      compact[nblocks] = ws_stats[k];
    }
  }
  for (int32_t i = 0; i < n; ++i) problem.emit(i, compact[find_block(starts, nblocks, i)]);
  finish_starts(starts, nblocks, n);
  return nblocks;
}

// ---------------------------------------------------------------------------
// Backward (SPEC 1.4). Every VJP of this family is, block by block,
//   r_i = weights[i] * sum_{j in B} u_j
// with u = g gathered through perm (rank: u_i = g[perm[i]], and the result is
// the residual scale * (u_i - r_i) scattered back through perm), or u = g
// (sort: r scattered through perm; plain: r written in place).
enum class Vjp { Rank, Sort, Plain };

template <class T, Vjp M>
DC_HOST_DEVICE DC_INLINE T vjp_input(const T* g, const int32_t* perm, int32_t i) {
  if constexpr (M == Vjp::Rank) {
    return g[perm[i]];
  } else {
    return g[i];
  }
}

template <class T, Vjp M>
DC_HOST_DEVICE DC_INLINE void vjp_write(T* dx, const int32_t* perm, int32_t i, T u, double r, T scale) {
  if constexpr (M == Vjp::Rank) {
    dx[perm[i]] = T(double(scale) * (double(u) - r));
  } else if constexpr (M == Vjp::Sort) {
    dx[perm[i]] = T(r);
  } else {
    dx[i] = T(r);
  }
}

// The VJP receives the block structure and the permutation as tensors, which a direct call of the
// custom op (torch.ops.diffcomb.isotonic_vjp) can fill with anything. Their values are checked
// here, before any use (the Python layer checks shapes, not values; a pass over the row's starts
// and one over its permutation): a row whose structure is not one the forward makes (nblocks in
// [1, n], starts[0] = 0, strictly increasing starts below n) or whose permutation has an index
// outside [0, n) gets NaN gradients instead of reads and writes out of bounds. Entries in range
// are trusted (a permutation with repeats gives wrong values, not a crash).
DC_HOST_DEVICE DC_INLINE bool index_ok(int32_t index, int32_t n) {
  return static_cast<uint32_t>(index) < static_cast<uint32_t>(n);
}

// The structure's bounds, and every step-th pair of consecutive starts from `first` increasing
// (first = 0, step = 1: the whole structure; branch-free, it vectorizes on the CPU).
DC_HOST_DEVICE DC_INLINE bool blocks_ok(const int32_t* starts, int32_t nblocks, int32_t n, int32_t first = 0,
                                        int32_t step = 1) {
  if (nblocks < 1 || nblocks > n || starts[0] != 0 || starts[nblocks - 1] >= n) return false;
  uint32_t bad = 0;  // an integer, not a bool, so that the loop vectorizes
  for (int32_t b = first; b + 1 < nblocks; b += step) bad |= starts[b] >= starts[b + 1];
  return bad == 0;
}

// Every step-th permutation entry from begin (below end) is in [0, n); always true without one.
// One branch-free pass (it vectorizes on the CPU).
template <Vjp M>
DC_HOST_DEVICE DC_INLINE bool perm_ok(const int32_t* perm, int32_t begin, int32_t end, int32_t n,
                                      int32_t step = 1) {
  uint32_t bad = 0;
  if constexpr (M != Vjp::Plain) {
    for (int32_t i = begin; i < end; i += step) bad |= !index_ok(perm[i], n);
  }
  return bad == 0;
}

// One block [begin, end) of one row.
template <class T, Vjp M>
DC_HOST_DEVICE DC_INLINE void vjp_block(const T* g, const int32_t* perm, const T* weights, T scale,
                                        int32_t begin, int32_t end, T* dx) {
  double total = 0.0;
  for (int32_t i = begin; i < end; ++i) total += double(vjp_input<T, M>(g, perm, i));
  for (int32_t i = begin; i < end; ++i) {
    vjp_write<T, M>(dx, perm, i, vjp_input<T, M>(g, perm, i), double(weights[i]) * total, scale);
  }
}

template <class T, Vjp M>
DC_HOST_DEVICE DC_INLINE void vjp_row(const T* g, const int32_t* perm, const int32_t* starts,
                                      const T* weights, T scale, int32_t n, T* dx) {
  if (n == 0) return;
  const int32_t nblocks = starts[n];  // -1: a non-finite row, NaN
  if (!blocks_ok(starts, nblocks, n) || !perm_ok<M>(perm, 0, n, n)) {
    for (int32_t i = 0; i < n; ++i) dx[i] = quiet_nan<T>();
    return;
  }
  for (int32_t b = 0; b < nblocks; ++b) {
    vjp_block<T, M>(g, perm, weights, scale, starts[b], b + 1 < nblocks ? starts[b + 1] : n, dx);
  }
}

}  // namespace isotonic
}  // namespace diffcomb
