// Soft-DTW on anti-diagonals: the forward DP, the expected-alignment
// backward and the second-order pass (SPEC.md sections 3.2-3.8), as cell
// functions and per-diagonal steps shared by the CPU sweeps (cpu.cpp,
// vectorized along a diagonal) and the CUDA wavefront (cuda.cu, threads
// along a diagonal). The layout's geometry, pads and tiles: layout.h.
//
// One problem is a cost matrix of which the leading mb x nb block is used
// (variable lengths), smoothing gamma >= 0 (0: hard DTW, ties broken diag,
// up, left as SPEC 3.6) and an optional Sakoe-Chiba band b (cells with
// |i - j| > b are excluded; b < 0: no band). R[0][0] = 0, the rest of row 0 /
// column 0 is +inf.
//
// Layout. Cell (i, j) lies on anti-diagonal k = i + j and depends on
// diagonals k - 1 (left = (i, j-1) at index i, up = (i-1, j) at index i-1)
// and k - 2 (diag = (i-1, j-1) at index i-1). Each diagonal is stored
// contiguously, indexed by i, with one pad slot on each side, so every read
// of a sweep is a unit-stride load and the cells of a diagonal are
// independent. Only in-band cells are stored (memory and time O((N + M) b)
// with a band b), diagonals 0 .. mb + nb + 1, where diagonal 0 holds
// R[0][0] = 0 and diagonals 1 and mb + nb + 1 hold pads only.
//
// Arrays (double, one value per stored cell, same layout):
//   A: R in the forward, overwritten by E in the backward;
//   B: the costs, overwritten in the forward by the cell's normalizer U
//      relative to its diagonal predecessor (gamma > 0, below) or by the
//      code of the chosen predecessor (gamma = 0: 0 left, 1 diag, 2 up);
//   second order only: D: the tangent dR, overwritten by dE = H Z; Z: the
//   direction, overwritten by mu = dR - Z (SPEC 3.8).
// Pads: +inf in A and B (an unreachable predecessor in the forward; a
// successor the backward masks out, never inf - inf arithmetic), 0 in D.
//
// Transition weights. The backward recomputes them (SPEC 3.2), so nothing
// of size 3 N M is kept. With lo the smallest predecessor of cell s,
// p(s -> q) = exp((lo - R[q]) / gamma) / S, S = sum over the predecessors of
// exp((lo - R[q]) / gamma), sums to 1 over q. Evaluated as
// exp((V - R[q]) / gamma) with the soft minimum V = lo - gamma log S stored
// as a double, it does not once |R| / gamma is large: V carries gamma log S
// only to the ulp of |lo|, and when that ulp is not small against gamma
// (huge costs or tiny gamma) the weights of every cell sum to a factor
// e^{+-ulp/gamma} away from 1, a factor that compounds along the m + n
// steps of the backward (E far outside [0, 1] for tied paths, where the
// weights are 1/2 or 1/3). So B keeps, in units of gamma, small numbers
// relative to R values that the backward still has, with full precision.
// R[d] of the diagonal predecessor d = (i-1, j-1) of s is such a value: d
// precedes the other two predecessors of s (it is their left / up
// predecessor), so any order that respects the dependencies (diagonals,
// tiles) overwrites it with E after every predecessor of s has read it.
//   Near: (R[d] - lo) / gamma <= kFar. B = U = (R[d] - lo) / gamma + log S
//     (at most kFar + log 3: its rounding is ~1e-13), and
//     p(s -> q) = exp((R[d] - R[q]) / gamma - U). R[d] - R[q] is a
//     difference of two stored doubles, exact when they are close, which is
//     when the weight is not negligible.
//   Far: (R[d] - lo) / gamma > kFar: d's weight is below e^{-kFar}, 0 in
//     double, and the left and up predecessors share the flow by a
//     logistic of delta = (R[u] - R[l]) / gamma clamped to [-kFar, kFar]:
//     B = 3 kFar + delta (in [2 kFar, 4 kFar], apart from the near range),
//     p(s -> l) = 1 / (1 + e^{-delta}), p(s -> u) = 1 / (1 + e^{delta}).
// Either way the weights are the normalized softmax of the stored R: every
// successor hands on exactly its E (to rounding), E stays a probability
// flow in [0, 1], and tied predecessors get exactly 1/2 or 1/3. On row 1
// and column 1 (s != (1, 1)) d is a pad (+inf) and s has one finite
// predecessor, of weight 1 (whatever B holds there).
#pragma once

#include "../common/common.h"
#include "layout.h"

namespace diffcomb {
namespace softdtw {

// The cell functions take exp and log from a math policy M: common.h's
// LibMath (CUDA) or common/vmath.h's VecMath (CPU sweeps).

// Cost codes shared with diffcomb/softdtw.py (SPEC 3.1).
enum CostCode : int { kCostSqEuclidean = 0, kCostHalfSqEuclidean = 1, kCostLogAugmented = 2 };

// h = |x_i - y_j|^2 / 2 of two steps of D features, in double.
template <class T>
DC_HOST_DEVICE DC_INLINE double half_sq(const T* xi, const T* yj, int64_t D) {
  double h = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const double diff = double(xi[d]) - double(yj[d]);
    h += diff * diff;
  }
  return 0.5 * h;
}

// The cost of a pair of steps from h (SPEC 3.1), and the factor f with
// d cost / d x_i = f (x_i - y_j).
template <class M>
DC_HOST_DEVICE DC_INLINE double step_cost(double h, int kind) {
  if (kind == kCostSqEuclidean) return 2.0 * h;
  if (kind == kCostHalfSqEuclidean) return h;
  return h + M::log(2.0 - M::exp(-h));
}
template <class M>
DC_HOST_DEVICE DC_INLINE double step_cost_factor(double h, int kind) {
  if (kind == kCostSqEuclidean) return 2.0;
  if (kind == kCostHalfSqEuclidean) return 1.0;
  const double e = M::exp(-h);
  return 1.0 + e / (2.0 - e);
}

// A pair of series x (mb, D), y (nb, D) under a cost code: the cost of cell
// (i, j) (1-based), and the weight w of the cell's share of the gradients
// (SPEC 3.3) with E_ij = e: gx_i += w (x_i - y_j), gy_j -= w (x_i - y_j).
template <class T>
struct SeriesPair {
  const T* x;
  const T* y;
  int64_t D;
  int kind;
  DC_HOST_DEVICE DC_INLINE const T* xi(int64_t i) const { return x + (i - 1) * D; }
  DC_HOST_DEVICE DC_INLINE const T* yj(int64_t j) const { return y + (j - 1) * D; }
  template <class M>
  DC_HOST_DEVICE DC_INLINE double cost(int64_t i, int64_t j) const {
    return step_cost<M>(half_sq(xi(i), yj(j), D), kind);
  }
  template <class M>
  DC_HOST_DEVICE DC_INLINE double weight(double e, int64_t i, int64_t j) const {
    return e * step_cost_factor<M>(kind == kCostLogAugmented ? half_sq(xi(i), yj(j), D) : 0.0, kind);
  }
  // x_i[d] - y_j[d] in double.
  DC_HOST_DEVICE DC_INLINE double difference(int64_t i, int64_t j, int64_t d) const {
    return double(xi(i)[d]) - double(yj(j)[d]);
  }
};

// Predecessor codes (gamma = 0) and the direction from a successor to the
// cell it pulls from.
constexpr double kLeft = 0.0, kDiag = 1.0, kUp = 2.0;

// Near / far bound of the normalizer (softdtw.h top): e^{-kFar} is 0 in
// double, and kFar + log 3 keeps U's rounding ~1e-13.
constexpr double kFar = 1024.0;

// Soft minimum of a cell's predecessors, branch-free: with lo <= mid <= hi,
// min^gamma = lo - gamma log S,  S = 1 + e^{(lo - mid)/gamma} + e^{(lo - hi)/gamma}
// (two exponentials; +inf predecessors contribute e^{-inf} = 0). Returns lo
// and sets *log_s. lo is finite for every stored cell of a feasible problem.
template <class M>
DC_HOST_DEVICE DC_INLINE double soft_min_parts(double left, double diag, double up, double inv_gamma,
                                               double* log_s) {
  const double a = left < diag ? left : diag;
  const double b = left < diag ? diag : left;
  const double lo = a < up ? a : up;
  const double hi = b < up ? up : b;
  const double ta = a < up ? up : a;
  const double mid = ta < b ? ta : b;
  *log_s = M::log(1.0 + M::exp((lo - mid) * inv_gamma) + M::exp((lo - hi) * inv_gamma));
  return lo;
}

// Forward of one cell with cost c: R (returned) and B's new value (*b): the
// code of the chosen predecessor (hard), or the normalizer (soft; near or
// far, see the top of this file).
template <class M, bool Hard>
DC_HOST_DEVICE DC_INLINE double forward_value(double left, double diag, double up, double c, double gamma,
                                              double inv_gamma, double* b) {
  if (Hard) {
    const double du = diag <= up ? diag : up;
    const double du_code = diag <= up ? kDiag : kUp;
    *b = du <= left ? du_code : kLeft;
    return c + (du <= left ? du : left);
  }
  double log_s;
  const double lo = soft_min_parts<M>(left, diag, up, inv_gamma, &log_s);
  // On row and column 1 (d = +inf; the weight ignores B there) above = +inf picks the far form,
  // finite: delta = +-inf (one of left, up is a pad) clamps to +-kFar. delta is NaN only when
  // both are pads, at (1, 1), where d = R[0][0] = lo makes the near form apply.
  const double above = (diag - lo) * inv_gamma;
  const double delta = (up - left) * inv_gamma;
  const double low = delta > -kFar ? delta : -kFar;  // max and min instructions
  const double clamped = low < kFar ? low : kFar;
  *b = above <= kFar ? above + log_s : 3.0 * kFar + clamped;
  return c + (lo - gamma * log_s);
}

// p(s -> c): the weight successor s (B value b_s, diagonal predecessor's R
// value r_ref) puts on its predecessor c (R value r_c) in direction dir
// (the top of this file); 0 for a pad successor, 1 when c is the only
// finite predecessor of s (r_ref = +inf: s on row or column 1). One
// exponential: e^z (near) or 1 / (1 + e^z) (far).
template <class M, bool Hard>
DC_HOST_DEVICE DC_INLINE double weight(double b_s, double r_ref, double r_c, double inv_gamma, double dir) {
  if (Hard) return b_s == dir ? 1.0 : 0.0;
  const bool far = dir != kDiag && b_s > 1.5 * kFar;  // between the ranges; the diagonal's far weight is e^{-b_s} = 0
  const double delta = b_s - 3.0 * kFar;
  const double z = far ? (dir == kLeft ? -delta : delta) : (r_ref - r_c) * inv_gamma - b_s;
  const double e = M::exp(z);
  const double w = far ? 1.0 / (1.0 + e) : e;
  const double v = r_ref < INFINITY ? w : 1.0;
  return b_s < INFINITY ? v : 0.0;
}

// Successor s's share of E[c]: p(s -> c) E[s]. A pad's E is never used: the
// select drops it, so +inf pads cannot turn into NaN.
template <class M, bool Hard>
DC_HOST_DEVICE DC_INLINE double share(double e_s, double b_s, double r_ref, double r_c, double inv_gamma,
                                      double dir) {
  const double w = weight<M, Hard>(b_s, r_ref, r_c, inv_gamma, dir);
  return w != 0.0 ? w * e_s : 0.0;
}

// Successor s's shares of E[c] and of dE[c] (SPEC 3.8):
//   p(s -> c) E[s]  and  p(s -> c) (E[s] (mu[s] - dR[c]) / gamma + dE[s])
// (the first term of dE is the tangent of the weight; 0 for the hard DTW).
template <class M, bool Hard>
DC_HOST_DEVICE DC_INLINE void second_share(double e_s, double de_s, double mu_s, double b_s, double r_ref, double r_c,
                                           double dr_c, double inv_gamma, double dir, double* e, double* de) {
  const double w = weight<M, Hard>(b_s, r_ref, r_c, inv_gamma, dir);
  const double es = w != 0.0 ? e_s : 0.0;
  const double des = w != 0.0 ? de_s : 0.0;
  const double mus = w != 0.0 ? mu_s : 0.0;
  *e += w * es;
  *de += Hard ? w * des : w * (es * (mus - dr_c) * inv_gamma + des);
}

// The successors of cell (k, i) and the direction they pull from: right
// (k + 1, i) kLeft, down (k + 1, i + 1) kUp, diagonal (k + 2, i + 1) kDiag;
// their diagonal predecessors: (k - 1, i - 1), (k - 1, i) and the cell itself.

// Tangent of the forward at one cell (SPEC 3.8): dR[c] = Z[c] + mu[c],
// mu[c] = sum_q p(c -> q) dR[q] over the predecessors (R values l, d, u;
// tangents dl, dd, du; B value b_c of the cell). Returns mu. All three
// predecessors are at hand here, so the weights are the softmax of their R
// formed directly (normalized for any scale, as the backward's).
template <class M, bool Hard>
DC_HOST_DEVICE DC_INLINE double tangent_mu(double b_c, double l, double d, double u, double dl, double dd, double du,
                                           double inv_gamma) {
  if (Hard) return b_c == kLeft ? dl : (b_c == kDiag ? dd : du);
  // R = +inf predecessors get e^{-inf} = 0 and their tangent is 0 (pads).
  const double ld = l < d ? l : d;
  const double lo = ld < u ? ld : u;
  const double el = M::exp((lo - l) * inv_gamma), ed = M::exp((lo - d) * inv_gamma), eu = M::exp((lo - u) * inv_gamma);
  return (el * dl + ed * dd + eu * du) / (el + ed + eu);
}

// ---------------------------------------------------------------------------
// The passes' steps, one per pass, each the cell update of row i on one
// diagonal k. A step holds the diagonals it reads and writes as pointers
// indexed by i (built once per diagonal), so the CPU sweeps run it as the
// body of a vector loop over a diagonal's rows and the CUDA wavefront as one
// thread's cell: one definition of each update for both devices. With
// interleaved pairs (layout.h, Arrays::lanes = w > 1; Lanes = 0: w read from
// the arrays, else the constant Lanes) the index is i * w + l (pair l) and
// the neighbouring rows are w apart: a diagonal of the group is one vector
// loop over all its lanes. The steps
// are forced inline: the CPU's row loops are compiled once per instruction
// set (cpu.cpp), and a step left out of line would be compiled only for the
// baseline one (about 3x slower).

#define DC_STEP_INLINE DC_FORCE_INLINE

// gamma and the 1 / gamma the weights use (0 for the hard DTW), computed in
// one place so that every pass and device rounds it alike.
struct Smoothing {
  double gamma, inv_gamma;
  DC_HOST_DEVICE DC_INLINE static Smoothing of(double gamma) { return {gamma, gamma == 0.0 ? 0.0 : 1.0 / gamma}; }
};

// Forward: R and B's normalizer (or code) of cell (k, i), from diagonals k - 1 and k - 2.
template <class M, bool Hard, int Lanes = 1>
struct ForwardStep {
  int64_t w;  // lanes: Lanes, or Arrays::lanes when Lanes = 0 (groups)
  const double *r1, *r2;  // R of diagonals k - 1 (left at i, up at i - 1) and k - 2 (diag at i - 1)
  double *r, *b;           // R and B of diagonal k
  Smoothing s;
  DC_HOST_DEVICE DC_STEP_INLINE ForwardStep(const Arrays& a, int64_t k, Smoothing s)
      : w(Lanes > 0 ? Lanes : a.lanes), r1(a.A + a.start[k - 1] * w), r2(a.A + a.start[k - 2] * w),
        r(a.A + a.start[k] * w), b(a.B + a.start[k] * w), s(s) {}
  DC_HOST_DEVICE DC_STEP_INLINE void operator()(int64_t i) const {
    double code;
    r[i] = forward_value<M, Hard>(r1[i], r2[i - w], r1[i - w], b[i], s.gamma, s.inv_gamma, &code);
    b[i] = code;
  }
};

// Forward with its tangent for the direction Z (SPEC 3.8): also dR = Z + mu
// into D and mu into Z.
template <class M, bool Hard, int Lanes = 1>
struct TangentStep {
  int64_t w;  // lanes: Lanes, or Arrays::lanes when Lanes = 0 (groups)
  const double *r1, *r2;  // R of diagonals k - 1 and k - 2
  const double *d1, *d2;  // dR of diagonals k - 1 and k - 2
  double *r, *b, *d, *z;  // R, B, dR and Z of diagonal k
  Smoothing s;
  DC_HOST_DEVICE DC_STEP_INLINE TangentStep(const Arrays& a, int64_t k, Smoothing s)
      : w(Lanes > 0 ? Lanes : a.lanes), r1(a.A + a.start[k - 1] * w), r2(a.A + a.start[k - 2] * w),
        d1(a.D + a.start[k - 1] * w), d2(a.D + a.start[k - 2] * w), r(a.A + a.start[k] * w),
        b(a.B + a.start[k] * w), d(a.D + a.start[k] * w), z(a.Z + a.start[k] * w), s(s) {}
  DC_HOST_DEVICE DC_STEP_INLINE void operator()(int64_t i) const {
    const double l = r1[i], g = r2[i - w], u = r1[i - w];
    double code;
    r[i] = forward_value<M, Hard>(l, g, u, b[i], s.gamma, s.inv_gamma, &code);
    b[i] = code;
    const double mu = tangent_mu<M, Hard>(code, l, g, u, d1[i], d2[i - w], d1[i - w], s.inv_gamma);
    d[i] = z[i] + mu;
    z[i] = mu;
  }
};

// Backward: E of cell (k, i) (overwriting its R) from its successors on
// diagonals k + 1 and k + 2 (above, "The successors of cell (k, i)").
template <class M, bool Hard, int Lanes = 1>
struct BackwardStep {
  int64_t w;  // lanes: Lanes, or Arrays::lanes when Lanes = 0 (groups)
  const double *e1, *b1;  // E and B of diagonal k + 1 (right successor at i, down at i + 1)
  const double *e2, *b2;  // E and B of diagonal k + 2 (diagonal successor at i + 1)
  const double* r0;       // R of the successors' diagonal predecessors, on diagonal k - 1
  double* a;              // R of diagonal k, overwritten by E
  Smoothing s;
  DC_HOST_DEVICE DC_STEP_INLINE BackwardStep(const Arrays& x, int64_t k, Smoothing s)
      : w(Lanes > 0 ? Lanes : x.lanes), e1(x.A + x.start[k + 1] * w), b1(x.B + x.start[k + 1] * w),
        e2(x.A + x.start[k + 2] * w), b2(x.B + x.start[k + 2] * w), r0(x.A + x.start[k - 1] * w),
        a(x.A + x.start[k] * w), s(s) {}
  DC_HOST_DEVICE DC_STEP_INLINE void operator()(int64_t i) const {
    const double r = a[i];
    a[i] = share<M, Hard>(e1[i], b1[i], r0[i - w], r, s.inv_gamma, kLeft) +
           share<M, Hard>(e1[i + w], b1[i + w], r0[i], r, s.inv_gamma, kUp) +
           share<M, Hard>(e2[i + w], b2[i + w], r, r, s.inv_gamma, kDiag);
  }
};

// Backward with its tangent (SPEC 3.8): E into A, dE = H Z into D.
template <class M, bool Hard, int Lanes = 1>
struct SecondBackwardStep {
  int64_t w;  // lanes: Lanes, or Arrays::lanes when Lanes = 0 (groups)
  const double *e1, *b1, *d1, *z1;  // E, B, dE and mu of diagonal k + 1
  const double *e2, *b2, *d2, *z2;  // the same of diagonal k + 2
  const double* r0;                 // as in BackwardStep
  double *a, *d;                    // R and dR of diagonal k, overwritten by E and dE
  Smoothing s;
  DC_HOST_DEVICE DC_STEP_INLINE SecondBackwardStep(const Arrays& x, int64_t k, Smoothing s)
      : w(Lanes > 0 ? Lanes : x.lanes), e1(x.A + x.start[k + 1] * w), b1(x.B + x.start[k + 1] * w),
        d1(x.D + x.start[k + 1] * w), z1(x.Z + x.start[k + 1] * w), e2(x.A + x.start[k + 2] * w),
        b2(x.B + x.start[k + 2] * w),
        d2(x.D + x.start[k + 2] * w), z2(x.Z + x.start[k + 2] * w), r0(x.A + x.start[k - 1] * w),
        a(x.A + x.start[k] * w), d(x.D + x.start[k] * w), s(s) {}
  DC_HOST_DEVICE DC_STEP_INLINE void operator()(int64_t i) const {
    const double r = a[i], dr = d[i], g = s.inv_gamma;
    double e = 0.0, de = 0.0;
    second_share<M, Hard>(e1[i], d1[i], z1[i], b1[i], r0[i - w], r, dr, g, kLeft, &e, &de);
    second_share<M, Hard>(e1[i + w], d1[i + w], z1[i + w], b1[i + w], r0[i], r, dr, g, kUp, &e, &de);
    second_share<M, Hard>(e2[i + w], d2[i + w], z2[i + w], b2[i + w], r, r, dr, g, kDiag, &e, &de);
    a[i] = e;
    d[i] = de;
  }
};

}  // namespace softdtw
}  // namespace diffcomb
