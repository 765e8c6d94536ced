// Soft-DTW: the dynamic program over a cost matrix and its expected-alignment
// backward (SPEC.md sections 3.2-3.4, 3.6). Header-only, DC_HOST_DEVICE: the
// CPU kernel (cpu.cpp) runs it cell by cell; a wavefront CUDA kernel runs the
// same cell functions along anti-diagonals.
//
// One problem is a cost matrix C (m x n, row-major with row stride ldc) of
// which the leading mb x nb block is used (variable lengths), smoothing
// gamma >= 0 (0: hard DTW) and an optional Sakoe-Chiba band b (cells with
// |i - j| > b are excluded; b < 0: no band). R[0][0] = 0, the rest of row 0 /
// column 0 is +inf.
//
// The forward stores each cell's three transition weights (SPEC 3.2), so the
// backward (push form: E[mb][nb] = 1 and, in reverse order, every cell passes
// E times its weights to its predecessors) needs no exp or log: measured
// about 2x on value+gradient against recomputing them from R.
#pragma once

#include "../common/common.h"

namespace diffcomb {
namespace softdtw {

// Transition weights of a cell from its predecessors' values (left =
// R[i][j-1], diag = R[i-1][j-1], up = R[i-1][j]) and the soft minimum they
// give. gamma = 0: the argmin one-hot with ties broken diag, up, left (SPEC
// 3.6). All predecessors +inf (outside the band): value +inf, weights 0.
struct Transition {
  double value;
  double left, diag, up;
};

DC_HOST_DEVICE DC_INLINE Transition soft_min3(double left, double diag, double up, double gamma) {
  double lo = diag < up ? diag : up;
  lo = left < lo ? left : lo;
  if (lo == INFINITY) return {INFINITY, 0.0, 0.0, 0.0};
  if (gamma == 0.0) {
    if (diag == lo) return {lo, 0.0, 1.0, 0.0};
    if (up == lo) return {lo, 0.0, 0.0, 1.0};
    return {lo, 1.0, 0.0, 0.0};
  }
  const double inv_gamma = 1.0 / gamma;
  const double el = exp((lo - left) * inv_gamma);
  const double ed = exp((lo - diag) * inv_gamma);
  const double eu = exp((lo - up) * inv_gamma);
  const double sum = el + ed + eu;
  const double inv_sum = 1.0 / sum;
  return {lo - gamma * log(sum), el * inv_sum, ed * inv_sum, eu * inv_sum};
}

DC_HOST_DEVICE DC_INLINE bool in_band(int64_t i, int64_t j, int64_t band) {
  const int64_t d = i - j;
  return band < 0 || (d <= band && -d <= band);
}

// First and last column (1-based, inclusive) of row i inside the band.
DC_HOST_DEVICE DC_INLINE int64_t band_first(int64_t i, int64_t band) {
  return band < 0 || i - band < 1 ? 1 : i - band;
}
DC_HOST_DEVICE DC_INLINE int64_t band_last(int64_t i, int64_t nb, int64_t band) {
  return band < 0 || i + band > nb ? nb : i + band;
}

// ---------------------------------------------------------------------------
// Anti-diagonal engine (SPEC 3.5): value and expected alignment for gamma > 0.
//
// Cell (i, j) lies on anti-diagonal k = i + j and depends on diagonals k - 1
// (left = (i, j-1) at index i, up = (i-1, j) at index i-1) and k - 2 (diag =
// (i-1, j-1) at index i-1). Each diagonal is stored contiguously, indexed by
// i, with one pad slot on each side, so every read of a diagonal sweep is a
// unit-stride load and the cells of a diagonal are independent: the CPU
// vectorizes them across SIMD lanes, the GPU across threads. Only in-band
// cells are stored (memory and time O((N + M) b) with a band b), diagonals
// 0 .. mb + nb + 1, where diagonal 0 holds R[0][0] = 0 and diagonals 1 and
// mb + nb + 1 hold pads only.
//
// Two arrays per problem, both double: A holds R during the forward and is
// overwritten by E in the backward; B holds the costs and is overwritten by
// V = R - C (the cell's soft minimum) in the forward. Pads are +inf in both:
// the forward reads +inf as an unreachable predecessor, and the backward
// masks successors whose V is +inf (never inf - inf arithmetic). The
// backward recomputes the transition weights from V and R (SPEC 3.2):
//   p(s -> c) = exp((V[s] - R[c]) / gamma),
// so nothing of size 3 N M is kept.
struct Diagonals {
  int64_t mb, nb;  // used lengths
  int64_t band;    // < 0: none

  // floor(x / 2) for any sign.
  DC_HOST_DEVICE DC_INLINE static int64_t floor_half(int64_t x) { return x >= 0 ? x / 2 : -((1 - x) / 2); }

  DC_HOST_DEVICE DC_INLINE int64_t last() const { return mb + nb; }
  DC_HOST_DEVICE DC_INLINE bool feasible() const {
    const int64_t d = mb > nb ? mb - nb : nb - mb;
    return band < 0 || band >= d;
  }
  // Rows i of diagonal k: lo(k) <= i <= hi(k) (empty when lo > hi).
  DC_HOST_DEVICE DC_INLINE int64_t lo(int64_t k) const {
    if (k == 0) return 0;
    int64_t v = k - nb > 1 ? k - nb : 1;
    if (band >= 0) {
      const int64_t b = floor_half(k - band + 1);  // ceil((k - band) / 2)
      v = b > v ? b : v;
    }
    return v;
  }
  DC_HOST_DEVICE DC_INLINE int64_t hi(int64_t k) const {
    if (k == 0) return 0;
    int64_t v = k - 1 < mb ? k - 1 : mb;
    if (band >= 0) {
      const int64_t b = floor_half(k + band);
      v = b < v ? b : v;
    }
    return v;
  }
  DC_HOST_DEVICE DC_INLINE int64_t length(int64_t k) const {
    const int64_t d = hi(k) - lo(k) + 1;
    return d > 0 ? d : 0;
  }
  // start[k] for k = 0 .. last() + 1: cell (i, k - i) is at start[k] + i and
  // the pads at start[k] + lo(k) - 1 and start[k] + hi(k) + 1 (for an empty
  // diagonal, hi + 1 = lo: the two pads are adjacent). Returns the size.
  DC_HOST_DEVICE int64_t layout(int64_t* start) const {
    int64_t offset = 0;
    for (int64_t k = 0; k <= last() + 1; ++k) {
      start[k] = offset + 1 - lo(k);
      offset += length(k) + 2;
    }
    return offset;
  }
};

// exp and log for the cell functions: the C library's (CUDA, scalar CPU code)
// or the vectorizable ones of common/vmath.h (CPU sweeps).
struct LibMath {
  DC_HOST_DEVICE DC_INLINE static double exp(double x) { return ::exp(x); }
  DC_HOST_DEVICE DC_INLINE static double log(double x) { return ::log(x); }
};

// Soft minimum of a cell's predecessors, branch-free: with lo <= mid <= hi,
// min^gamma = lo - gamma log(1 + e^{(lo - mid)/gamma} + e^{(lo - hi)/gamma})
// (two exponentials; +inf predecessors contribute e^{-inf} = 0). lo is finite
// for every stored cell of a feasible problem.
template <class M>
DC_HOST_DEVICE DC_INLINE double soft_min_value(double left, double diag, double up, double gamma, double inv_gamma) {
  const double a = left < diag ? left : diag;
  const double b = left < diag ? diag : left;
  const double lo = a < up ? a : up;
  const double hi = b < up ? up : b;
  const double t = a < up ? up : a;
  const double mid = t < b ? t : b;
  return lo - gamma * M::log(1.0 + M::exp((lo - mid) * inv_gamma) + M::exp((lo - hi) * inv_gamma));
}

// One successor's share of E[c]: E[s] p(s -> c), 0 for a pad successor.
template <class M>
DC_HOST_DEVICE DC_INLINE double pull(double e_s, double v_s, double r_c, double inv_gamma) {
  const double w = M::exp((v_s - r_c) * inv_gamma);
  return v_s < INFINITY ? e_s * w : 0.0;
}

// Forward over the rows [i0, i1] of diagonal k (any sub-range: cells of a
// diagonal are independent). A, B as above; start from Diagonals::layout.
template <class M>
DC_HOST_DEVICE DC_INLINE void forward_cell(double* A, double* B, const int64_t* start, int64_t k, int64_t i,
                                           double gamma, double inv_gamma) {
  const double* r1 = A + start[k - 1];
  const double v = soft_min_value<M>(r1[i], A[start[k - 2] + i - 1], r1[i - 1], gamma, inv_gamma);
  const int64_t at = start[k] + i;
  A[at] = B[at] + v;
  B[at] = v;
}

// Backward for cell (i, k - i): E[c] from its successors right (k + 1, i),
// down (k + 1, i + 1) and diagonal (k + 2, i + 1); overwrites R[c] with E[c].
template <class M>
DC_HOST_DEVICE DC_INLINE void backward_cell(double* A, const double* B, const int64_t* start, int64_t k, int64_t i,
                                            double inv_gamma) {
  const int64_t s1 = start[k + 1], s2 = start[k + 2], at = start[k] + i;
  const double r = A[at];
  A[at] = pull<M>(A[s1 + i], B[s1 + i], r, inv_gamma) + pull<M>(A[s1 + i + 1], B[s1 + i + 1], r, inv_gamma) +
          pull<M>(A[s2 + i + 1], B[s2 + i + 1], r, inv_gamma);
}

// One soft-DTW problem (see the file comment). C points at the pair's costs
// (row stride ldc); P receives the transition weights of every used cell
// (left, diag, up; row stride ldp = 3 * row length), which is all the backward
// needs. R lives in two scratch rows of length nb + 1 during the forward.
template <class T>
struct Problem {
  const T* C;
  int64_t ldc;
  T* P;
  int64_t ldp;
  int64_t mb, nb;
  double gamma;
  int64_t band;

  DC_HOST_DEVICE DC_INLINE double c(int64_t i, int64_t j) const { return double(C[(i - 1) * ldc + (j - 1)]); }
  DC_HOST_DEVICE DC_INLINE T* p(int64_t i, int64_t j) const { return P + (i - 1) * ldp + 3 * (j - 1); }

  // Only the used mb x nb block and, with a band, only its cells are read:
  // padding and out-of-band costs may hold anything.
  DC_HOST_DEVICE DC_INLINE bool finite_costs() const {
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        if (!is_finite(c(i, j))) return false;
      }
    }
    return true;
  }

  // Forward DP with scratch rows prev, cur (nb + 1 doubles each); returns
  // R[mb][nb]: +inf when the band makes the end unreachable, NaN when a used
  // cost is not finite. The caller zeroes P first (cells never written keep
  // weight 0, so the saved weights are deterministic).
  DC_HOST_DEVICE double forward(double* prev, double* cur) const {
    if (!finite_costs()) return NAN;
    prev[0] = 0.0;
    for (int64_t j = 1; j <= nb; ++j) prev[j] = INFINITY;
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = 0; j <= nb; ++j) cur[j] = INFINITY;
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        const Transition t = soft_min3(cur[j - 1], prev[j - 1], prev[j], gamma);
        cur[j] = c(i, j) + t.value;
        T* w = p(i, j);
        w[0] = T(t.left);
        w[1] = T(t.diag);
        w[2] = T(t.up);
      }
      double* swap = prev;
      prev = cur;
      cur = swap;
    }
    return prev[nb];
  }

  // Backward: E (row stride lde, zeroed by the caller) = grad * expected
  // alignment on the used block, pushed from (mb, nb) back through the saved
  // weights (no transcendental functions). value = the forward's result:
  // NaN gives a NaN gradient, +inf (unreachable end) a zero gradient.
  DC_HOST_DEVICE void backward(double value, double grad, T* E, int64_t lde) const {
    if (value != value) {
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t j = 0; j < nb; ++j) E[i * lde + j] = quiet_nan<T>();
      }
      return;
    }
    if (value == INFINITY) return;
    // E holds probabilities in [0, 1] and each cell receives at most three
    // pushes, so accumulating in T is accurate also for float32.
    E[(mb - 1) * lde + (nb - 1)] = T(1);
    for (int64_t i = mb; i >= 1; --i) {
      for (int64_t j = band_last(i, nb, band); j >= band_first(i, band); --j) {
        const double e = double(E[(i - 1) * lde + (j - 1)]);
        if (e == 0.0) continue;
        const T* w = p(i, j);
        if (j > 1) E[(i - 1) * lde + (j - 2)] += T(double(w[0]) * e);
        if (i > 1 && j > 1) E[(i - 2) * lde + (j - 2)] += T(double(w[1]) * e);
        if (i > 1) E[(i - 2) * lde + (j - 1)] += T(double(w[2]) * e);
      }
    }
    if (grad != 1.0) {
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t j = 0; j < nb; ++j) E[i * lde + j] = T(double(E[i * lde + j]) * grad);
      }
    }
  }

  // Second order (SPEC 3.8), for a direction Z (row stride ldz) on the used
  // block: the tangent dR of the DP (dR[mb][nb] = <E, Z>, returned) and the
  // Hessian-vector product HZ = dE, by the forward-on-backward pass. Scratch:
  // dR (mb + 1) x (nb + 1), E and HZ mb x nb, all double and row-major with
  // the stated sizes as strides. Needs the saved weights P; value = the
  // forward's result (NaN -> NaN everywhere, +inf -> +inf and zeros).
  DC_HOST_DEVICE double second_order(double value, const T* Z, int64_t ldz, double* dR, double* E,
                                     double* HZ) const {
    const int64_t ld = nb + 1;
    for (int64_t k = 0; k < mb * nb; ++k) {
      E[k] = value != value ? NAN : 0.0;
      HZ[k] = E[k];
    }
    if (value != value) return NAN;
    if (value == INFINITY) return INFINITY;
    for (int64_t k = 0; k < (mb + 1) * ld; ++k) dR[k] = 0.0;
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        const T* w = p(i, j);
        dR[i * ld + j] = double(Z[(i - 1) * ldz + (j - 1)]) + double(w[0]) * dR[i * ld + j - 1] +
                         double(w[1]) * dR[(i - 1) * ld + j - 1] + double(w[2]) * dR[(i - 1) * ld + j];
      }
    }
    E[(mb - 1) * nb + (nb - 1)] = 1.0;
    for (int64_t i = mb; i >= 1; --i) {
      for (int64_t j = band_last(i, nb, band); j >= band_first(i, band); --j) {
        const double e = E[(i - 1) * nb + (j - 1)];
        const double de = HZ[(i - 1) * nb + (j - 1)];
        if (e == 0.0 && de == 0.0) continue;
        const T* w = p(i, j);
        const double wl = double(w[0]), wd = double(w[1]), wu = double(w[2]);
        const double rl = dR[i * ld + j - 1], rd = dR[(i - 1) * ld + j - 1], ru = dR[(i - 1) * ld + j];
        // Tangent of the weights: dp_k = p_k (mu - dR_k) / gamma (0 for the hard DTW).
        const double mu = wl * rl + wd * rd + wu * ru;
        const double s = gamma > 0.0 ? 1.0 / gamma : 0.0;
        if (j > 1) {
          E[(i - 1) * nb + (j - 2)] += wl * e;
          HZ[(i - 1) * nb + (j - 2)] += wl * (mu - rl) * s * e + wl * de;
        }
        if (i > 1 && j > 1) {
          E[(i - 2) * nb + (j - 2)] += wd * e;
          HZ[(i - 2) * nb + (j - 2)] += wd * (mu - rd) * s * e + wd * de;
        }
        if (i > 1) {
          E[(i - 2) * nb + (j - 1)] += wu * e;
          HZ[(i - 2) * nb + (j - 1)] += wu * (mu - ru) * s * e + wu * de;
        }
      }
    }
    return dR[mb * ld + nb];
  }
};

}  // namespace softdtw
}  // namespace diffcomb
