// The math of entropic optimal transport by log-domain Sinkhorn (SPEC.md
// section 4), shared by cpu.cpp and cuda.cu: the scale 1/eps, the exponential
// used in the log-sum-exp sweeps, the dual updates, the free marginal error,
// the plan read-out, and the per-entry steps of the two backward passes
// (implicit differentiation by conjugate gradient, SPEC 4.3 b; unrolling,
// SPEC 4.3 a). The algorithms that use them, written once over an abstract
// row/column sweep, are forward.h and backward.h.
//
// Notation for one problem: cost C (n, m) row-major, weights a (n), b (m),
// eps > 0, potentials f (n), g (m). With
//     wa_i = log a_i + f_i / eps,    wb_j = log b_j + g_j / eps
// the plan is P_ij = exp(wa_i + wb_j - C_ij / eps) and the updates are
//     f_i = -eps LSE_j(wb_j - C_ij / eps)     (g-terms only: log b_j + g_j / eps)
//     g_j = -eps LSE_i(wa_i - C_ij / eps)
// The potentials are kept as the full log-sum-exp values even where a weight
// is zero (log a_i = -inf takes that row out of every other sum), so the
// backward has the one-sided derivatives at zero weights; the Python layer
// reports f_i = 0 there (SPEC 4.4).
#pragma once

#include <cstdint>
#include <cstring>

#include "../common/common.h"
#include "../common/vmath.h"

// Forced inlining on the host, so that the CPU's vectorized clones (cpu.cpp)
// compile these helpers for their own instruction set.
#if defined(__CUDACC__)
#define DC_MATH_INLINE DC_HOST_DEVICE DC_INLINE
#elif defined(__GNUC__)
#define DC_MATH_INLINE inline __attribute__((always_inline))
#else
#define DC_MATH_INLINE inline
#endif

namespace diffcomb {
namespace sinkhorn {

// eps and 1/eps of a problem. 1/eps is computed here and nowhere else, in
// double, the same on both devices; a sweep that runs in float (the CPU's
// float32 sweeps) rounds this one value to float.
struct Scale {
  double eps, inv_eps;
};

DC_HOST_DEVICE DC_INLINE Scale make_scale(double eps) { return Scale{eps, 1.0 / eps}; }

// ---------------------------------------------------------------------------
// exp without branches, so that a loop of it vectorizes (GCC target clones on
// the CPU). Double: vmath::exp_f64 (common/vmath.h, shared with soft-DTW).
// Float: the same scheme here, Cody-Waite reduction x = k ln2 + r,
// |r| <= ln2/2, a degree-6 Taylor polynomial for exp(r) (~1 ulp) and 2^k built
// in the exponent bits. Arguments below the smallest normal result give 0 (so
// exp(-inf) = 0: zero weights drop out of sums); float arguments above the
// largest give a large finite value, NaN arguments unspecified values: rows
// with non-finite inputs are handled before (SPEC 0). On the GPU the device's
// own exp is used.

// V is a float (double) or a GCC vector of them, U the unsigned integer
// (vector) of the same width: the same code serves one value and a register.
template <class V, class U>
DC_MATH_INLINE V exp_poly_f32(V x) {
  const V zero = V{} + 0.0f;
  const V lo = zero - 87.0f, hi = zero + 88.0f;
  const auto underflow = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V shifter = zero + 12582912.0f;  // 1.5 * 2^23: rounds x log2(e) to an integer in the low bits
  const V t = x * 1.44269504088896341f + shifter;
  const V k = t - shifter;
  V r = x - k * 0.693145751953125f;
  r = r - k * 1.428606765330187045e-06f;
  V p = zero + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  U bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 127u) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const V out = p * scale;
  return underflow ? zero : out;
}

DC_MATH_INLINE float exp_fast(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return exp_poly_f32<float, uint32_t>(x);
#endif
}

DC_MATH_INLINE double exp_fast(double x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return vmath::exp(x);
#endif
}

DC_HOST_DEVICE DC_INLINE double log_weight(double w) {
  // log of a non-negative weight; log 0 = -inf (the row/column drops out).
  return w > 0 ? log(w) : -INFINITY;
}

// One term of a log-sum-exp sweep: w - c / eps, written with 1/eps.
template <class T>
DC_MATH_INLINE T term(T w, T c, T inv_eps) {
  return w - c * inv_eps;
}

// The potential from a sweep's maximum and its sum of exp(term - max):
// -eps (max + log sum). A sweep whose terms are all -inf (every weight zero)
// cannot happen for valid marginals; it gives +inf.
DC_HOST_DEVICE DC_INLINE double potential(double max, double sum, double eps) {
  return -eps * (max + log(sum));
}

// Row marginal error of the state (f_old, g): the f-update from g computes
// f_new with exp(-f_new_i / eps) = sum_j b_j exp((g_j - C_ij) / eps), so the
// row sums of P(f_old, g) are a_i exp((f_old_i - f_new_i) / eps): the error
// of SPEC 4.1 costs nothing beyond the next f-update.
DC_HOST_DEVICE DC_INLINE double row_error(double a, double f_old, double f_new, double inv_eps) {
  return a > 0 ? fabs(a * (exp((f_old - f_new) * inv_eps) - 1.0)) : 0.0;
}

// Whether iteration t (1-based) of a run of at most `last` is a convergence
// check (SPEC 4.1: every check_every iterations and at the last one).
DC_HOST_DEVICE DC_INLINE bool is_check(int64_t t, int64_t last, int64_t check_every) {
  return t == last || t % check_every == 0;
}

// The forward's stopping rule (forward.h, cpu_scaling.h) for a run of at most
// `last` iterations: with tol > 0 the f-update of iteration t carries the
// convergence test of iteration t - 1 (at the checks, is_check), and the run
// stops at the first tested error <= tol (n_iter = t - 1) or after `last`
// iterations; with tol <= 0 it runs exactly `last`.
struct StopRule {
  int64_t last, check_every;
  double tol;
  // Before iteration t: whether a fixed count is complete.
  DC_HOST_DEVICE DC_INLINE bool counted(int64_t t) const { return t > last && !(tol > 0); }
  // Whether the f-update of iteration t tests iteration t - 1.
  DC_HOST_DEVICE DC_INLINE bool tests(int64_t t) const {
    return t >= 2 && tol > 0 && is_check(t - 1, last, check_every);
  }
  // After that f-update (err: the tested error, when tested): whether the run stops, and its n_iter.
  DC_HOST_DEVICE DC_INLINE bool stops(int64_t t, bool tested, double err, int64_t* iters) const {
    if (tested && err <= tol) {
      *iters = t - 1;
      return true;
    }
    if (t > last) {
      *iters = last;
      return true;
    }
    return false;
  }
};

// n = 1 or m = 1: one iteration gives the exact plan a b^T (SPEC 4.4).
DC_HOST_DEVICE DC_INLINE int64_t iteration_limit(int64_t n, int64_t m, int64_t max_iter) {
  return (n == 1 || m == 1) ? (max_iter < 1 ? max_iter : 1) : max_iter;
}

// ---------------------------------------------------------------------------
// Options of the extended entry points (api.h, *_ext): per problem, the
// target eps, the start of epsilon scaling and the marginal penalties of
// unbalanced transport, read from a (B, kParams) float64 array.
//
// Epsilon scaling: iteration t (1-based) runs at eps_t = max(eps, eps0 q^(t-1))
// (q in (0, 1): one iteration per value while annealing, as in geomloss),
// then at eps until the convergence test passes; the test is only made at eps.
//
// Unbalanced transport (KL-relaxed marginals, rho = POT's reg_m, +inf: the
// marginal is a constraint): the f-update becomes f = lambda_a f_bal with
// lambda = rho / (rho + eps) (ott-jax's tau) and f_bal the balanced update;
// the fixed point has row sums r_i = a_i exp(-f_i / rho_a) (columns alike).
//
// Symmetric problems (C = C^T, a = b: the debiasing terms OT(x, x) of a
// Sinkhorn divergence): the solution has g = f, and one symmetrized update
// f <- (f + T(f)) / 2 per iteration (T: the f-update) replaces the two
// half-steps (geomloss's and ott-jax's debiasing updates); honored for n = m.
constexpr int kParams = 5;  // eps, eps0, rho_a, rho_b, symmetric (0 or 1)

struct Options {
  double eps, eps0, rho_a, rho_b;
  bool symmetric;
};

// A marginal penalty rho = +inf: the marginal is a constraint.
DC_HOST_DEVICE DC_INLINE bool unbounded(double rho) { return !(rho < INFINITY); }

DC_HOST_DEVICE DC_INLINE Options options_at(const double* params, int64_t bi, double eps) {
  if (!params) return Options{eps, eps, INFINITY, INFINITY, false};
  const double* q = params + bi * kParams;
  return Options{q[0], q[1], q[2], q[3], q[4] != 0.0};
}

DC_HOST_DEVICE DC_INLINE bool is_balanced(const Options& o) { return unbounded(o.rho_a) && unbounded(o.rho_b); }

// eps_t of iteration t >= 1 (above: eps0 q^(t-1), never below eps).
DC_HOST_DEVICE DC_INLINE double annealed_eps(const Options& o, double q, int64_t t) {
  if (!(o.eps0 > o.eps) || !(q < 1.0)) return o.eps;
  const double e = o.eps0 * pow(q, double(t - 1));
  return e > o.eps ? e : o.eps;
}

// lambda = rho / (rho + eps), 1 for rho = +inf; 1 / rho (0 for +inf).
DC_HOST_DEVICE DC_INLINE double damping(double rho, double eps) { return unbounded(rho) ? 1.0 : rho / (rho + eps); }
DC_HOST_DEVICE DC_INLINE double inverse(double rho) { return unbounded(rho) ? 0.0 : 1.0 / rho; }

// The row marginal error of the state (f_old, g) against the fixed point's
// row sums a_i exp(-f_old_i / rho_a) (a_i for the balanced row, row_error),
// from the balanced update f_bal of g (sinkhorn.h, row_error).
DC_HOST_DEVICE DC_INLINE double row_error_ext(double a, double f_old, double f_bal, double inv_eps, double inv_rho) {
  return a > 0 ? fabs(a * (exp((f_old - f_bal) * inv_eps) - exp(-f_old * inv_rho))) : 0.0;
}

// The unbalanced cost's derivative in a weight a_i (envelope, the dual
//   D = -rho_a <a, e^{-f/rho_a} - 1> - rho_b <b, e^{-g/rho_b} - 1> - eps <a b^T, e^{(f+g-C)/eps} - 1>
// at the fixed point e^{(f_i + g_j - C_ij) / eps} summed against b = e^{-f_i / rho_a}):
//   rho_a (1 - e^{-f_i / rho_a}) - eps (e^{-f_i / rho_a} - mass_b)
// (f_i - eps (1 - mass_b) for a balanced side; the other side is alike).
DC_HOST_DEVICE DC_INLINE double unbalanced_weight_gradient(double potential, double eps, double rho,
                                                           double other_mass) {
  if (unbounded(rho)) return potential - eps * (1.0 - other_mass);
  const double e = exp(-potential / rho);
  return -rho * expm1(-potential / rho) - eps * (e - other_mass);
}

// The unbalanced cost's penalty of one side from its potentials: with the
// fixed point's marginal r = w e^{-h / rho}, rho KL(r | w) = rho sum (r log(r / w) - r + w)
// = sum (-r h - rho r + rho w); 0 for a balanced side.
DC_HOST_DEVICE DC_INLINE double marginal_penalty(double w, double h, double rho) {
  if (unbounded(rho) || !(w > 0)) return 0.0;
  const double r = w * exp(-h / rho);
  return -r * h - rho * r + rho * w;
}

// rho KL(r | w) of one entry from the plan's own marginal r (rows: the
// returned plan is not exactly at the row fixed point).
DC_HOST_DEVICE DC_INLINE double marginal_kl(double r, double w, double rho) {
  if (unbounded(rho)) return 0.0;
  if (!(w > 0)) return rho * r;
  return rho * ((r > 0 ? r * log(r / w) : 0.0) - r + w);
}

// ---------------------------------------------------------------------------
// Implicit backward (SPEC 4.3 b), for the plan P that the forward returned.
// That plan has the form exp((F_i + G_j - C_ij) / eps), so it is the exact
// entropic plan of its own marginals r = P 1 and c = P^T 1, which differ from
// a and b by the forward's tolerance (the rows by up to tol, the columns by
// rounding). The optimality conditions are differentiated with those
// marginals:
//   H [u; v] = [Q 1; Q^T 1],  H = [[diag(r), P], [P^T, diag(c)]],  Q = G o P.
// H is singular with the null vector [1; -1], and the right-hand side is
// orthogonal to it (both blocks sum to sum(Q)), so the system is consistent
// and conjugate gradient from 0 converges. (With a and b in H the system is
// inconsistent for any plan that is not exactly feasible: conjugate gradient
// then drifts along the near-null direction and the gradients are off by
// O(1) at the default tol.) It is preconditioned with diag(r, c), a zero
// marginal keeping its variable at 0. Then
//   dC_ij = (P_ij (u_i + v_j) - Q_ij) / eps + gcost P_ij
//   da_i  = sum_j P_ij (G_ij - v_j) / r_i + gcost (f_i - eps/2)
//   db_j  = sum_i P_ij (G_ij - u_i) / c_j + gcost (g_j - eps/2)
// (SPEC's (Q 1 - P v)/a and (Q^T 1 - P^T u)/b with the plan's marginals).
// Where r_i = 0 (a zero weight, or a row that underflowed) da_i is the
// one-sided limit sum_j K_ij (G_ij - v_j) with K_ij = P_ij / r_i the row's
// conditional plan, softmax_j(log b_j + (g_j - C_ij) / eps), which does not
// need P (likewise db_j with softmax_i(log a_i + (f_i - C_ij) / eps)).
DC_HOST_DEVICE DC_INLINE double precondition(double x, double w) { return w > 0 ? x / w : 0.0; }

// dC_ij from the plan entry, the solution (u_i, v_j) and the upstream G_ij.
// The returned cost <f, a> + <g, b> = <P, C> + eps sum_ij P_ij log(P_ij / (a_i b_j)) has the
// gradient f_i - eps/2 in a_i and g_j - eps/2 in b_j (SPEC 4.2). The potentials are defined up to
// (f + c, g - c), which no direction that keeps sum(a) = sum(b) can see; the -eps/2 is what makes a
// change of the total mass (a and b scaled together) come out right.
DC_HOST_DEVICE DC_INLINE double cost_weight_gradient(double potential, double eps) { return potential - 0.5 * eps; }

DC_HOST_DEVICE DC_INLINE double implicit_cost_gradient(double p, double u, double v, double G, double inv_eps,
                                                       double gcost) {
  return p * (u + v - G) * inv_eps + gcost * p;
}

// The weight gradient of a line of the plan (a row for da, a column for db)
// from sum_k P_k (G_k - y_k) and the line's marginal; zero_marginal is the
// limit below, used where the marginal is 0.
DC_HOST_DEVICE DC_INLINE double implicit_weight_gradient(double weighted, double marginal, double zero_marginal) {
  return marginal > 0 ? weighted / marginal : zero_marginal;
}

// sum_k K_k (G_k - y_k), K = softmax_k(log w_k + (h_k - c_k) / eps), over a
// line of len entries: c and G strided by `stride` (a row of C: 1, a column:
// m), the weights w, potentials h and solution y contiguous. A line whose
// every weight is zero gives 0.
template <class T>
DC_HOST_DEVICE DC_INLINE double zero_marginal_gradient(const T* c, const T* G, const T* w, const T* h, const double* y,
                                                       int64_t len, int64_t stride, double inv_eps) {
  double mx = -INFINITY;
  for (int64_t k = 0; k < len; ++k) {
    const double t = log_weight(double(w[k])) + (double(h[k]) - double(c[k * stride])) * inv_eps;
    mx = t > mx ? t : mx;
  }
  if (mx == -INFINITY) return 0.0;
  double sum = 0.0, weighted = 0.0;
  for (int64_t k = 0; k < len; ++k) {
    const double t = log_weight(double(w[k])) + (double(h[k]) - double(c[k * stride])) * inv_eps;
    const double e = exp(t - mx);
    sum += e;
    weighted += e * (double(G[k * stride]) - y[k]);
  }
  return weighted / sum;
}

// The weight gradient of a line (row i: da_i; column j: db_j), from
// weighted = sum_k P_k (G_k - y_k) and the line's marginal, with the
// zero-marginal limit above where the marginal is 0; plus the envelope term
// gcost (h - eps/2) of the line's potential h.
template <class T>
DC_HOST_DEVICE DC_INLINE double line_weight_gradient(double weighted, double marginal, const T* c, const T* G,
                                                     const T* w, const T* h, const double* y, int64_t len,
                                                     int64_t stride, double potential, const Scale& s, double gcost) {
  const double limit = marginal > 0 ? 0.0 : zero_marginal_gradient(c, G, w, h, y, len, stride, s.inv_eps);
  return implicit_weight_gradient(weighted, marginal, limit) + gcost * cost_weight_gradient(potential, s.eps);
}

// The unrolled backward replays n_iter recorded iterations; a count outside
// [0, max_iter] (only possible from a direct call of the raw op) is clamped so
// that the history is never read out of bounds (0: the NaN result).
DC_HOST_DEVICE DC_INLINE int64_t replayed_iterations(int64_t n_iter, int64_t max_iter) {
  return n_iter < 0 ? 0 : (n_iter > max_iter ? max_iter : n_iter);
}

// ---------------------------------------------------------------------------
// Unrolled backward (SPEC 4.3 a), one iteration t in reverse, for row i:
//   g-update adjoint: K'_ij = a_i E'_ij, E'_ij = exp((f^t_i + g^t_j - C_ij)/eps)
//     fbar_i -= a_i sum_j E'_ij gbar_j;  Cbar_ij += a_i E'_ij gbar_j;  da_i -= eps sum_j E'_ij gbar_j
//   f-update adjoint: K_ij = b_j E_ij, E_ij = exp((f^t_i + g^{t-1}_j - C_ij)/eps)
//     gbar'_j -= b_j E_ij fbar_i;  Cbar_ij += b_j E_ij fbar_i;  db_j -= eps E_ij fbar_i
// after which fbar restarts at 0 and gbar = gbar'. The read-out adds
// fbar = Q 1 / eps, gbar = Q^T 1 / eps, Cbar = -Q / eps, da = sum_j b_j E G,
// db = sum_i a_i E G with E from the final potentials. E is computed from the
// scaled potentials fe = f / eps, ge = g / eps as exp(fe_i + ge_j - C_ij / eps).

template <class W, class T>
DC_MATH_INLINE W scaled_exp(W fe, W ge, T c, W inv_eps) {
  return exp_fast(fe + term(ge, W(c), inv_eps));
}

// One entry of the read-out: e = E_ij, G = G_ij. q = G P_ij goes to fbar and
// gbar (divided by eps), cbar is the entry's Cbar, row (col) its term of
// da_i (db_j).
struct ReadoutEntry {
  double q, cbar, row, col;
};

DC_HOST_DEVICE DC_INLINE ReadoutEntry readout_entry(double G, double ai, double bj, double e, double inv_eps,
                                                    double gcost) {
  const double pij = ai * bj * e;
  const double q = G * pij;
  return ReadoutEntry{q, -q * inv_eps + gcost * pij, G * bj * e, G * ai * e};
}

}  // namespace sinkhorn
}  // namespace diffcomb
