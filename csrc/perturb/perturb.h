// The math of the perturb family (SPEC.md section 6), header-only and shared by
// cpu.cpp and cuda.cu: a counter-based random number generator and the noise
// distributions drawn from it, and the steps of the MAP solvers (top-k and
// rank order, the grid shortest-path relaxation and backtrack, the shortest
// augmenting path step of linear assignment).
//
// Randomness. Every noise value is a pure function of (seed, element index,
// term, attempt) through Philox-4x32-10, so a sample does not depend on how
// the work is split over threads, and the CPU and the GPU draw the same
// numbers for the same seed (to the rounding of their exp/log: the CPU's
// Gumbel draws use common/vmath.h's log, within 2 ulp). The Python layer
// draws the seed from the user's torch.Generator.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/common.h"

namespace diffcomb {
namespace perturb {

// ---------------------------------------------------------------------------
// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).

struct U32x4 {
  uint32_t v[4];
};

DC_HOST_DEVICE DC_INLINE void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

DC_HOST_DEVICE DC_INLINE U32x4 philox(uint64_t seed, uint64_t index, uint32_t term, uint32_t attempt) {
  uint32_t c0 = uint32_t(index), c1 = uint32_t(index >> 32), c2 = term, c3 = attempt;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c0, hi0, lo0);
    mulhilo32(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// A double uniform in the open interval (0, 1) from two 32-bit words (53 bits).
DC_HOST_DEVICE DC_INLINE double open_uniform(uint32_t a, uint32_t b) {
  const uint64_t bits = (uint64_t(a) << 21) ^ uint64_t(b >> 11);  // 53 random bits
  return (double(bits & ((uint64_t(1) << 53) - 1)) + 0.5) * (1.0 / 9007199254740992.0);
}

// Noise kinds shared with diffcomb/perturb.py.
enum NoiseCode : int { kGumbel = 0, kNormal = 1, kSumOfGamma = 2 };

// A double uniform in (0, 1) from one 32-bit word (for rejection tests and the
// Gamma sampler, where 32 bits of resolution are plenty).
DC_HOST_DEVICE DC_INLINE double open_uniform32(uint32_t a) { return (double(a) + 0.5) * (1.0 / 4294967296.0); }

// A Gamma(shape, 1) variate for shape in (0, 1]: Marsaglia-Tsang for shape + 1,
// then the boost G(a) = G(a + 1) U^(1/a). Attempt t uses one Philox block:
// words 0-1 give the proposal's normal (Box-Muller), word 2 the acceptance
// uniform, word 3 the boost uniform (independent of the acceptance decision, so
// it stays uniform given acceptance). For tiny shapes (large k) the boost may
// underflow to 0, where the true value is below 1e-300 anyway.
DC_HOST_DEVICE DC_INLINE double gamma_small_shape(uint64_t seed, uint64_t index, uint32_t term, double shape) {
  const double d = shape + 1.0 - 1.0 / 3.0;
  const double c = 1.0 / sqrt(9.0 * d);
  for (uint32_t attempt = 0;; ++attempt) {
    const U32x4 r = philox(seed, index, term, attempt);
    const double x = sqrt(-2.0 * log(open_uniform32(r.v[0]))) * cos(6.283185307179586 * open_uniform32(r.v[1]));
    const double t = 1.0 + c * x;
    if (t <= 0.0) continue;
    const double v = t * t * t;
    const double u = open_uniform32(r.v[2]);
    const double x2 = x * x;
    // Squeeze first (no logarithm in ~98% of the draws), then the exact test.
    if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + d - d * v + d * log(v)) {
      return d * v * exp(log(open_uniform32(r.v[3])) / shape);
    }
  }
}

// Sum-of-Gamma noise SoG(k, tau, s) = (tau / k) (sum_{i=1}^{s} G_i - log s),
// G_i ~ Gamma(shape 1/k, scale k/i) (SPEC.md 6.4).
DC_HOST_DEVICE DC_INLINE double sum_of_gamma(uint64_t seed, uint64_t index, double k, double tau, int32_t s) {
  const double shape = 1.0 / k;
  double sum = 0.0;
  for (int32_t i = 1; i <= s; ++i) sum += gamma_small_shape(seed, index, uint32_t(i), shape) * (k / double(i));
  return (tau / k) * (sum - log(double(s)));
}

// A uniform in (0, 1) from the top 24 bits of a word, exact in double (its
// largest value is 1 - 2^-25, so the Gumbel variate below stays finite).
DC_HOST_DEVICE DC_INLINE double open_uniform24(uint32_t a) {
  return (double(a >> 8) + 0.5) * (1.0 / 16777216.0);
}

// A standard Gumbel variate -log(-log(u)) of a uniform u in (0, 1), in double, with the log of
// M: common.h's LibMath (CUDA, the CPU's scalar draws) or vmath.h's VecMath (cpu.cpp's vector loops).
template <class M>
DC_HOST_DEVICE DC_INLINE double gumbel_of(double u) {
  return -M::log(-M::log(u));
}

// Noise values come in groups: group q of the stream fills elements
// [q G, q G + G) from one Philox block, G = noise_group_size<T>(kind):
//   Gumbel, float output: G = 4, one 24-bit uniform per element;
//   Gumbel, double output: G = 2, one 53-bit uniform per element
//   (both: -log(-log(u)) in double, rounded once to the output dtype);
//   normal: G = 2, Box-Muller's pair (cos and sin), in double for both dtypes;
//   Sum-of-Gamma: G = 1 (its own Philox blocks per Gamma term and attempt).
template <class T>
DC_HOST_DEVICE DC_INLINE int noise_group_size(int kind) {
  if (kind == kGumbel) return sizeof(T) == 4 ? 4 : 2;
  return kind == kNormal ? 2 : 1;
}

template <class T>
DC_HOST_DEVICE DC_INLINE void noise_group(int kind, uint64_t seed, uint64_t q, double k, double tau, int32_t s,
                                          T* values) {
  if (kind == kSumOfGamma) {
    values[0] = static_cast<T>(sum_of_gamma(seed, q, k, tau, s));
    return;
  }
  const U32x4 r = philox(seed, q, 0, 0);
  if (kind == kNormal) {
    const double radius = sqrt(-2.0 * log(open_uniform(r.v[0], r.v[1])));
    const double angle = 6.283185307179586 * open_uniform(r.v[2], r.v[3]);
    values[0] = static_cast<T>(radius * cos(angle));
    values[1] = static_cast<T>(radius * sin(angle));
  } else if (sizeof(T) == 4) {
    for (int l = 0; l < 4; ++l) values[l] = static_cast<T>(gumbel_of<LibMath>(open_uniform24(r.v[l])));
  } else {
    values[0] = static_cast<T>(gumbel_of<LibMath>(open_uniform(r.v[0], r.v[1])));
    values[1] = static_cast<T>(gumbel_of<LibMath>(open_uniform(r.v[2], r.v[3])));
  }
}

// ---------------------------------------------------------------------------
// Order of a row for top-k and ranks: element i comes before j when
// x_i > x_j, or x_i == x_j and i < j (descending, stable: SPEC.md 6.1).

template <class T>
DC_HOST_DEVICE DC_INLINE bool before(T xi, int32_t i, T xj, int32_t j) {
  return xi > xj || (xi == xj && i < j);
}

// Position of element i in the stable descending order (0 = largest), by
// counting: O(n), used by the GPU one element per thread.
template <class T>
DC_HOST_DEVICE DC_INLINE int32_t descending_position(const T* x, int32_t n, int32_t i) {
  const T xi = x[i];
  int32_t pos = 0;
  for (int32_t j = 0; j < n; ++j) pos += before(x[j], j, xi, i) ? 1 : 0;
  return pos;
}

// 1-based stable ascending rank of element i (element j comes first when
// x_j < x_i, or x_j == x_i and j < i), by counting: O(n), the GPU's ranks.
template <class T>
DC_HOST_DEVICE DC_INLINE int32_t ascending_rank(const T* x, int32_t n, int32_t i) {
  const T xi = x[i];
  int32_t below = 0;
  for (int32_t j = 0; j < n; ++j) below += (x[j] < xi || (x[j] == xi && j < i)) ? 1 : 0;
  return below + 1;
}

// ---------------------------------------------------------------------------
// Grid shortest path (SPEC.md 6.1 item 4): vertex weights W (H x Wd, clamped
// at 0), king moves, source (0, 0), target (H-1, Wd-1), cost = sum of the
// weights of the visited vertices. Labels are (dist, hops): the cost and, among
// paths of equal cost, the fewest vertices; comparing labels
// lexicographically makes the backtrack strictly decrease hops, so zero
// weights cannot make it cycle, and the CPU (vectorized Gauss-Seidel sweeps
// with hop counts from the tight edges, or Dijkstra: cpu.cpp) and the GPU
// (min-plus sweeps) reach the same labels.

// The fixed neighbour order of the backtrack.
DC_HOST_DEVICE DC_INLINE int neighbour_di(int d) {
  const int di[8] = {-1, -1, -1, 0, 0, 1, 1, 1};
  return di[d];
}
DC_HOST_DEVICE DC_INLINE int neighbour_dj(int d) {
  const int dj[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
  return dj[d];
}

template <class T>
DC_HOST_DEVICE DC_INLINE double clamped_weight(T w) {
  const double v = double(w);
  return v > 0.0 ? v : 0.0;
}

DC_HOST_DEVICE DC_INLINE bool label_less(double da, int32_t ha, double db, int32_t hb) {
  return da < db || (da == db && ha < hb);
}

// One min-plus relaxation of vertex v from its 8 neighbours' labels (src); the
// new label goes to (dist_out, hops_out). Returns true when it improved.
template <class T>
DC_HOST_DEVICE DC_INLINE bool relax_vertex(const T* w, const double* dist, const int32_t* hops, int32_t H,
                                           int32_t Wd, int32_t v, double& dist_out, int32_t& hops_out) {
  const int32_t i = v / Wd, j = v % Wd;
  double best = dist[v];
  int32_t best_hops = hops[v];
  const double wv = clamped_weight(w[v]);
  bool improved = false;
  for (int d = 0; d < 8; ++d) {
    const int32_t a = i + neighbour_di(d), b = j + neighbour_dj(d);
    if (a < 0 || a >= H || b < 0 || b >= Wd) continue;
    const int32_t u = a * Wd + b;
    const double cand = dist[u] + wv;
    const int32_t cand_hops = hops[u] + 1;
    if (label_less(cand, cand_hops, best, best_hops)) {
      best = cand;
      best_hops = cand_hops;
      improved = true;
    }
  }
  dist_out = best;
  hops_out = best_hops;
  return improved;
}

// Writes the 0/1 path mask (out must be zeroed) from the final labels:
// from the target, step to the first neighbour u in the fixed order with
// dist[u] + W[v] == dist[v] and hops[u] + 1 == hops[v].
template <class T>
DC_HOST_DEVICE DC_INLINE void backtrack_path(const T* w, const double* dist, const int32_t* hops, int32_t H,
                                             int32_t Wd, T* out) {
  int32_t v = H * Wd - 1;
  out[v] = T(1);
  while (v != 0) {
    const int32_t i = v / Wd, j = v % Wd;
    const double wv = clamped_weight(w[v]);
    int32_t next = -1;
    for (int d = 0; d < 8 && next < 0; ++d) {
      const int32_t a = i + neighbour_di(d), b = j + neighbour_dj(d);
      if (a < 0 || a >= H || b < 0 || b >= Wd) continue;
      const int32_t u = a * Wd + b;
      if (hops[u] + 1 == hops[v] && dist[u] + wv == dist[v]) next = u;
    }
    if (next < 0) return;  // unreachable with consistent labels
    v = next;
    out[v] = T(1);
  }
}

// ---------------------------------------------------------------------------
// Linear assignment: shortest augmenting paths with potentials (Kuhn-Munkres
// in the Jonker-Volgenant form), rows n <= columns m, costs c (n x m, double,
// already negated for maximization). State per problem, all arrays 1-based
// over columns with column 0 the virtual start:
//   u (n + 1), v (m + 1) potentials; p (m + 1): row matched to column j
//   (0: free); way (m + 1): previous column on the alternating tree;
//   minv (m + 1): slack of column j; used (m + 1).
// Row r is added by repeating dijkstra steps until a free column is reached.
// The CPU runs each step's column loop serially; the GPU splits it over a
// thread block (scan_column for every j, then a reduction of the minimum with
// the smaller column index winning ties, exactly as the serial loop does).

// Costs are loaded as sign * c * scale: a matrix with an entry above 2^1000
// in magnitude (only float64 gets there) is scaled by 2^-24, exactly, so that
// the slacks c - u - v cannot overflow to inf (the search would never end);
// the assignment does not change.
constexpr double kAssignmentHuge = 1.0715086071862673e+301;  // 2^1000
constexpr double kAssignmentScale = 5.9604644775390625e-08;  // 2^-24
DC_HOST_DEVICE DC_INLINE bool assignment_huge(double c) { return fabs(c) > kAssignmentHuge; }

struct AssignmentState {
  double* u;
  double* v;
  double* minv;
  int32_t* p;
  int32_t* way;
  int8_t* used;
};

// Step of column j (not used) from the current column j0 / row i0: updates
// its slack and tree link; returns the slack to compete in the minimum.
DC_HOST_DEVICE DC_INLINE double scan_column(const double* c, int32_t m, const AssignmentState& s, int32_t i0,
                                           int32_t j0, int32_t j) {
  const double cur = c[int64_t(i0 - 1) * m + (j - 1)] - s.u[i0] - s.v[j];
  if (cur < s.minv[j]) {
    s.minv[j] = cur;
    s.way[j] = j0;
  }
  return s.minv[j];
}

// After choosing the minimum slack delta at column j1: updates potentials of
// column j (tree columns and their rows) and slacks.
DC_HOST_DEVICE DC_INLINE void update_column(const AssignmentState& s, int32_t j, double delta) {
  if (s.used[j]) {
    s.u[s.p[j]] += delta;
    s.v[j] -= delta;
  } else {
    s.minv[j] -= delta;
  }
}

// Flips the alternating path ending at the free column j0.
DC_HOST_DEVICE DC_INLINE void augment(const AssignmentState& s, int32_t j0) {
  do {
    const int32_t j1 = s.way[j0];
    s.p[j0] = s.p[j1];
    j0 = j1;
  } while (j0 != 0);
}

// The whole problem on one thread (CPU). c is (n x m), n <= m; assignment of
// row i (0-based) goes to col[i] (0-based).
inline void solve_assignment(const double* c, int32_t n, int32_t m, const AssignmentState& s, int32_t* col) {
  for (int32_t j = 0; j <= m; ++j) {
    s.v[j] = 0.0;
    s.p[j] = 0;
    s.way[j] = 0;
  }
  for (int32_t i = 0; i <= n; ++i) s.u[i] = 0.0;
  for (int32_t i = 1; i <= n; ++i) {
    s.p[0] = i;
    int32_t j0 = 0;
    for (int32_t j = 0; j <= m; ++j) {
      s.minv[j] = INFINITY;
      s.used[j] = 0;
    }
    do {
      s.used[j0] = 1;
      const int32_t i0 = s.p[j0];
      double delta = INFINITY;
      int32_t j1 = 0;
      for (int32_t j = 1; j <= m; ++j) {
        if (s.used[j]) continue;
        const double slack = scan_column(c, m, s, i0, j0, j);
        if (slack < delta) {
          delta = slack;
          j1 = j;
        }
      }
      for (int32_t j = 0; j <= m; ++j) update_column(s, j, delta);
      j0 = j1;
    } while (s.p[j0] != 0);
    augment(s, j0);
  }
  for (int32_t j = 1; j <= m; ++j) {
    if (s.p[j] != 0) col[s.p[j] - 1] = j - 1;
  }
}

}  // namespace perturb
}  // namespace diffcomb
