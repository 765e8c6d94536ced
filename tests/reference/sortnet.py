"""Float64 numpy reference for SPEC.md section 5: monotonic differentiable sorting networks.

Written only from SPEC.md, as plain Python loops: slow and obvious on purpose. Every function takes
one 1-D input (one batch row), computes in float64, gives empty results for n = 0 and, following
SPEC section 0, all-NaN outputs (or a NaN scalar) when the input row contains NaN or +/-inf.

Conventions (SPEC 5.1 - 5.3): a network is a list of layers, a layer a list of disjoint comparators
(lo, hi); after a comparator the smaller value is on wire lo and the larger on wire hi, so the network
sorts ascending. P[i, k] = weight of input i at output position k, sorted = P^T x.

Bitonic networks for n not a power of two come from the network on N = 2^ceil(log2 n) wires in one
of two ways (`bitonic_padding`):
- "prune" (SPEC 5.1, the default): the first p = N - n wires are deleted with every comparator that
  touches one of them, and the remaining wires renumbered (index - p): a network on n wires.
- "inf": the network runs on all N wires with the input padded with +inf on wires n..N-1; every
  comparator that meets a +inf routes it exactly (the finite value to lo, never through the relaxed
  swap: 0 * inf = NaN), and the outputs and P are cut back to n.
"""

import math

import numpy as np

__all__ = [
    "NETWORKS",
    "BITONIC_PADDINGS",
    "SIGMOIDS",
    "ART_LAMBDA",
    "odd_even_layers",
    "bitonic_layers",
    "network_layers",
    "network_wires",
    "logistic",
    "logistic_phi",
    "gaussian",
    "reciprocal",
    "cauchy",
    "optimal",
    "sigmoid",
    "sigmoid_grad",
    "relaxed_swap",
    "apply_hard",
    "hard_sorting_network",
    "sorting_network",
    "sorting_network_vjp",
    "ranking_targets",
    "ranking_loss",
    "ranking_loss_grad_P",
    "ranking_loss_vjp",
    "numerical_gradient",
]

NETWORKS = ("odd_even", "bitonic")
BITONIC_PADDINGS = ("prune", "inf")
SIGMOIDS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal")
ART_LAMBDA = 0.25  # SPEC 5.2 default of the activation replacement trick
_PHI_C = 1e-10  # the constant c of logistic_phi (SPEC 5.2)
_BCE_LOG_FLOOR = -100.0  # SPEC 5.5: each log of the cross-entropy is clamped below at -100
_BCE_EPS = 1e-12  # SPEC 5.5: the gradient divides by max(P (1 - P), 1e-12)


# ------------------------------------------------------------------------------------------------
# small helpers


def _vec(x):
    """Copy x into a 1-D float64 array."""
    a = np.array(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D input, got shape {a.shape}")
    return a


def _finite(*arrays):
    """True iff every entry of every array is finite (SPEC 0: otherwise the row is all NaN)."""
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _check_beta(beta):
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _check_lambda(art_lambda):
    if not 0.0 <= art_lambda <= 1.0:
        raise ValueError(f"art_lambda must be in [0, 1], got {art_lambda}")


def _check_sigmoid(name):
    if name not in SIGMOIDS:
        raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {name!r}")


# ------------------------------------------------------------------------------------------------
# network layouts (SPEC 5.1)


def odd_even_layers(n):
    """Odd-even transposition network: n layers, layer l = {(i, i+1) : i = l mod 2, l mod 2 + 2, ...,
    i + 1 <= n - 1}. Taken literally, so for n = 1 the single layer and for n = 2 the second layer
    are empty; n = 0 gives no layers."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    layers = []
    for l in range(n):
        layer = []
        i = l % 2
        while i + 1 <= n - 1:
            layer.append((i, i + 1))
            i += 2
        layers.append(layer)
    return layers


def _check_padding(bitonic_padding):
    if bitonic_padding not in BITONIC_PADDINGS:
        raise ValueError(f"bitonic_padding must be one of {BITONIC_PADDINGS}, got {bitonic_padding!r}")


def _next_power_of_two(n):
    N = 1
    while N < n:
        N *= 2
    return N


def bitonic_layers(n, bitonic_padding="prune"):
    """Bitonic network (SPEC 5.1) for n inputs, from the network on N = 2^ceil(log2 n) wires, k = log2 N
    blocks, depth k (k + 1) / 2: for block t and sub-layer u, h = 2^(t - u), comparators (a, a + h)
    for a with bit h clear, reversed when floor(a / 2^(t+1)) is odd.
    "prune": every comparator touching one of the first p = N - n wires is deleted and the others
    renumbered (index - p); layers may become empty (kept, so the depth stays k (k + 1) / 2).
    "inf": all N wires; wires n..N-1 carry the +inf padding. n <= 1 gives no layers."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_padding(bitonic_padding)
    if n <= 1:
        return []
    N = _next_power_of_two(n)
    p = N - n if bitonic_padding == "prune" else 0
    k = N.bit_length() - 1  # log2 N
    layers = []
    for t in range(k):
        for u in range(t + 1):
            h = 2 ** (t - u)
            layer = []
            for i in range(0, N, 2 * h):
                for j in range(h):
                    a = i + j
                    b = a + h
                    if a < p:  # touches a deleted wire (b > a)
                        continue
                    if (a // 2 ** (t + 1)) % 2 == 1:
                        layer.append((b - p, a - p))
                    else:
                        layer.append((a - p, b - p))
            layers.append(layer)
    return layers


def network_wires(network, n, bitonic_padding="prune"):
    """The wires the named network runs on for n inputs: n for odd-even and the pruned bitonic
    network, the next power of two (at least n) for the bitonic network padded with +inf."""
    _check_padding(bitonic_padding)
    if network == "odd_even" or bitonic_padding == "prune" or n <= 1:
        return n
    return _next_power_of_two(n)


def network_layers(network, n, bitonic_padding="prune"):
    """Layers of the named layout ("odd_even" or "bitonic") for n inputs."""
    if network == "odd_even":
        return odd_even_layers(n)
    if network == "bitonic":
        return bitonic_layers(n, bitonic_padding)
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")


# ------------------------------------------------------------------------------------------------
# sigmoids f(d) with steepness beta (SPEC 5.2); v = beta d


def logistic(d, beta):
    """1 / (1 + exp(-v)), evaluated without overflow."""
    v = beta * d
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def logistic_phi(d, beta, art_lambda=ART_LAMBDA):
    """Logistic with the activation replacement trick: 1 / (1 + exp(-beta d / (|d| + 1e-10)^lambda))."""
    return logistic(d / (abs(d) + _PHI_C) ** art_lambda, beta)


def gaussian(d, beta):
    """Phi(v) = 1/2 (1 + erf(v / sqrt 2)), evaluated as 1/2 erfc(-v / sqrt 2) (same value, no
    cancellation for v << 0)."""
    return 0.5 * math.erfc(-beta * d / math.sqrt(2.0))


def reciprocal(d, beta):
    """1/2 (v / (2 + |v|) + 1)."""
    v = beta * d
    return 0.5 * (v / (2.0 + abs(v)) + 1.0)


def cauchy(d, beta):
    """arctan(v) / pi + 1/2."""
    return math.atan(beta * d) / math.pi + 0.5


def optimal(d, beta):
    """v + 1/2 for |v| <= 1/4; 1 - 1/(16 v) for v > 1/4; -1/(16 v) for v < -1/4."""
    v = beta * d
    if abs(v) <= 0.25:
        return v + 0.5
    if v > 0.25:
        return 1.0 - 1.0 / (16.0 * v)
    return -1.0 / (16.0 * v)


def sigmoid(name, d, beta, art_lambda=ART_LAMBDA):
    """f(d) of the named family (SPEC 5.2)."""
    return _sigmoid_value(name, d, beta, art_lambda)


def _sigmoid_value(name, d, beta, art_lambda):
    _check_sigmoid(name)
    if name == "logistic_phi":
        return logistic_phi(d, beta, art_lambda)
    return {"logistic": logistic, "gaussian": gaussian, "reciprocal": reciprocal,
            "cauchy": cauchy, "optimal": optimal}[name](d, beta)


def sigmoid_grad(name, d, beta, art_lambda=ART_LAMBDA):
    """f'(d) = df/dd of the named family, the closed forms of SPEC 5.2."""
    _check_sigmoid(name)
    v = beta * d
    if name == "logistic":
        f = logistic(d, beta)
        return beta * f * (1.0 - f)
    if name == "logistic_phi":
        f = logistic_phi(d, beta, art_lambda)
        x = abs(d)
        # beta ((|x| + c) - lambda |x|) / (|x| + c)^(lambda + 1), written so that it cannot overflow
        return f * (1.0 - f) * beta * ((x + _PHI_C) - art_lambda * x) / (x + _PHI_C) / (x + _PHI_C) ** art_lambda
    if name == "gaussian":
        return beta * math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    if name == "reciprocal":
        return beta / ((2.0 + abs(v)) * (2.0 + abs(v)))
    if name == "cauchy":
        return beta / (math.pi * (1.0 + v * v))
    # optimal
    if abs(v) <= 0.25:
        return beta
    return beta / (16.0 * v * v)


def relaxed_swap(a, b, sigmoid="cauchy", beta=1.0, art_lambda=ART_LAMBDA):
    """Relaxed conditional swap of SPEC 5.2 for the values a (wire lo) and b (wire hi).

    alpha = f(b - a); returns (soft min alpha a + (1 - alpha) b, soft max (1 - alpha) a + alpha b, alpha).
    """
    alpha = _sigmoid_value(sigmoid, b - a, beta, art_lambda)
    return alpha * a + (1.0 - alpha) * b, (1.0 - alpha) * a + alpha * b, alpha


# ------------------------------------------------------------------------------------------------
# forward (SPEC 5.2 / 5.3)


def apply_hard(X, comparators):
    """Exact compare-exchanges (min to wire lo, max to wire hi) in order on every row of X (rows,
    wires); returns a new array."""
    X = np.array(X, copy=True)
    for lo, hi in comparators:
        a, b = X[:, lo].copy(), X[:, hi].copy()
        X[:, lo], X[:, hi] = np.minimum(a, b), np.maximum(a, b)
    return X


def hard_sorting_network(x, network="odd_even", bitonic_padding="prune"):
    """The network with exact compare-exchanges: the beta -> infinity limit of the values, padded
    with +inf like the relaxed one. Used to check the layouts (0-1 principle)."""
    x = _vec(x)
    n = len(x)
    v = np.concatenate([x, np.full(network_wires(network, n, bitonic_padding) - n, np.inf)])
    return apply_hard(v[None], [c for layer in network_layers(network, n, bitonic_padding) for c in layer])[0, :n]


def _forward(x, network, sigmoid_name, beta, art_lambda, with_P, bitonic_padding="prune"):
    """Run the relaxed network on a finite x, padded with +inf to the network's wires. Returns
    (v, P or None, tape) on all N wires; the tape holds one entry (lo, hi, a, b, alpha, exact, c_lo,
    c_hi) per comparator in execution order (c_* None without P). A comparator that meets a +inf is
    exact: alpha is 0 (the finite value moves from hi to lo) or 1 (nothing moves), with no
    derivative."""
    n = len(x)
    N = network_wires(network, n, bitonic_padding)
    v = np.concatenate([x, np.full(N - n, np.inf)])
    P = np.eye(N) if with_P else None
    tape = []
    for layer in network_layers(network, n, bitonic_padding):
        for lo, hi in layer:
            a, b = v[lo], v[hi]
            exact = math.isinf(a) or math.isinf(b)
            if exact:
                alpha = 0.0 if math.isinf(a) and not math.isinf(b) else 1.0
                if alpha == 0.0:
                    v[lo], v[hi] = b, a
            else:
                v[lo], v[hi], alpha = relaxed_swap(a, b, sigmoid_name, beta, art_lambda)
            c_lo = c_hi = None
            if with_P:
                c_lo = P[:, lo].copy()
                c_hi = P[:, hi].copy()
                for i in range(N):
                    P[i, lo] = alpha * c_lo[i] + (1.0 - alpha) * c_hi[i]
                    P[i, hi] = (1.0 - alpha) * c_lo[i] + alpha * c_hi[i]
            tape.append((lo, hi, a, b, alpha, exact, c_lo, c_hi))
    return v, P, tape


def _check_args(network, sigmoid_name, beta, art_lambda, bitonic_padding="prune"):
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    _check_padding(bitonic_padding)
    _check_sigmoid(sigmoid_name)
    _check_beta(beta)
    _check_lambda(art_lambda)


def sorting_network(x, network="odd_even", sigmoid="cauchy", beta=1.0, art_lambda=ART_LAMBDA,
                    descending=False, bitonic_padding="prune"):
    """Relaxed sorting network (SPEC 5.3). Returns (sorted (n,), P (n, n)) with sorted = P^T x.

    descending=True reverses the outputs and the columns of P (SPEC 5.1). n = 0 gives empty arrays;
    a non-finite x gives all-NaN sorted and P (SPEC 0).
    """
    _check_args(network, sigmoid, beta, art_lambda, bitonic_padding)
    x = _vec(x)
    n = len(x)
    if not _finite(x):
        return np.full(n, np.nan), np.full((n, n), np.nan)
    v, P, _ = _forward(x, network, sigmoid, beta, art_lambda, True, bitonic_padding)
    v, P = v[:n], P[:n, :n]
    if descending:
        return v[::-1].copy(), P[:, ::-1].copy()
    return v, P


def sorting_network_vjp(x, g_sorted, g_P=None, network="odd_even", sigmoid="cauchy", beta=1.0,
                        art_lambda=ART_LAMBDA, descending=False, bitonic_padding="prune"):
    """VJP of `sorting_network` (SPEC 5.4): dL/dx given g_sorted = dL/dsorted (n,) and, in P mode,
    g_P = dL/dP (n, n). g_P=None is the values-only mode (the tape has no P columns).
    g_sorted=None means a zero upstream gradient for the values. NaN row for a non-finite x."""
    _check_args(network, sigmoid, beta, art_lambda, bitonic_padding)
    x = _vec(x)
    n = len(x)
    gv = np.zeros(n) if g_sorted is None else _vec(g_sorted)
    if len(gv) != n:
        raise ValueError(f"g_sorted must have length {n}, got {len(gv)}")
    with_P = g_P is not None
    if with_P:
        GP = np.array(g_P, dtype=np.float64)
        if GP.shape != (n, n):
            raise ValueError(f"g_P must have shape {(n, n)}, got {GP.shape}")
    if not _finite(x):
        return np.full(n, np.nan)
    if descending:  # outputs (and columns of P) were reversed after the network
        gv = gv[::-1].copy()
        if with_P:
            GP = GP[:, ::-1].copy()
    # the padding's outputs and rows of P get no upstream gradient
    N = network_wires(network, n, bitonic_padding)
    gv = np.concatenate([gv, np.zeros(N - n)])
    if with_P:
        GP = np.pad(GP, ((0, N - n), (0, N - n)))
    _, _, tape = _forward(x, network, sigmoid, beta, art_lambda, with_P, bitonic_padding)
    for lo, hi, a, b, alpha, exact, c_lo, c_hi in reversed(tape):
        glo, ghi = gv[lo], gv[hi]
        dd = 0.0
        if not exact:
            dalpha = (glo - ghi) * (a - b)
            if with_P:
                dalpha += sum((GP[i, lo] - GP[i, hi]) * (c_lo[i] - c_hi[i]) for i in range(N))
            dd = dalpha * sigmoid_grad(sigmoid, b - a, beta, art_lambda)
        gv[lo] = alpha * glo + (1.0 - alpha) * ghi - dd
        gv[hi] = (1.0 - alpha) * glo + alpha * ghi + dd
        if with_P:
            Glo = GP[:, lo].copy()
            Ghi = GP[:, hi].copy()
            for i in range(N):
                GP[i, lo] = alpha * Glo[i] + (1.0 - alpha) * Ghi[i]
                GP[i, hi] = (1.0 - alpha) * Glo[i] + alpha * Ghi[i]
    return gv[:n]


# ------------------------------------------------------------------------------------------------
# ranking-supervision loss (SPEC 5.5)


def ranking_targets(targets):
    """Ground-truth permutation Q (n, n): Q[i, k] = 1 iff input i has ascending rank k (0-based) among
    the targets, ties broken by a stable argsort."""
    t = _vec(targets)
    n = len(t)
    order = np.argsort(t, kind="stable")
    Q = np.zeros((n, n))
    for k in range(n):
        Q[order[k], k] = 1.0
    return Q


def _floored_log(v):
    """max(log v, -100) for v >= 0 (log 0 = -inf)."""
    return max(math.log(v), _BCE_LOG_FLOOR) if v > 0.0 else _BCE_LOG_FLOOR


def _bce(P, Q):
    """Mean over the n^2 entries of -(Q log P + (1 - Q) log(1 - P)), P clamped to [0, 1] and each
    log clamped below at -100 (SPEC 5.5)."""
    n = P.shape[0]
    total = 0.0
    for i in range(n):
        for k in range(n):
            p = min(max(P[i, k], 0.0), 1.0)
            total += Q[i, k] * _floored_log(p) + (1.0 - Q[i, k]) * _floored_log(1.0 - p)
    return -total / (n * n)


def ranking_loss(x, targets, network="odd_even", sigmoid="cauchy", beta=1.0, art_lambda=ART_LAMBDA,
                 bitonic_padding="prune"):
    """Mean binary cross-entropy between the relaxed P of x and the hard permutation Q of the targets
    (SPEC 5.5), logs clamped below at -100. Returns a float; NaN for n = 0 (mean over no entries)
    and for a non-finite x or targets."""
    x = _vec(x)
    t = _vec(targets)
    if len(t) != len(x):
        raise ValueError(f"x and targets must have the same length, got {len(x)} and {len(t)}")
    _check_args(network, sigmoid, beta, art_lambda, bitonic_padding)
    n = len(x)
    if n == 0 or not _finite(x, t):
        return math.nan
    _, P = sorting_network(x, network, sigmoid, beta, art_lambda, bitonic_padding=bitonic_padding)
    return float(_bce(P, ranking_targets(t)))


def ranking_loss_grad_P(P, Q):
    """The gradient of the BCE in P (SPEC 5.5): (P - Q) / (n^2 max(P (1 - P), 1e-12)) for P in
    [0, 1] (the derivative wherever P (1 - P) >= 1e-12; a bounded stand-in for it at the ends), 0
    outside [0, 1]."""
    P = np.asarray(P, dtype=np.float64)
    n = P.shape[0]
    G = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            p = P[i, k]
            if 0.0 <= p <= 1.0:
                G[i, k] = (p - Q[i, k]) / (n * n * max(p * (1.0 - p), _BCE_EPS))
    return G


def ranking_loss_vjp(x, targets, g=1.0, network="odd_even", sigmoid="cauchy", beta=1.0,
                     art_lambda=ART_LAMBDA, bitonic_padding="prune"):
    """g * dL/dx for `ranking_loss`: dL/dP (above) pushed through the P-mode VJP of SPEC 5.4 with a
    zero upstream gradient for the values. NaN row for a non-finite x or targets."""
    x = _vec(x)
    t = _vec(targets)
    if len(t) != len(x):
        raise ValueError(f"x and targets must have the same length, got {len(x)} and {len(t)}")
    _check_args(network, sigmoid, beta, art_lambda, bitonic_padding)
    n = len(x)
    if not _finite(x, t):
        return np.full(n, np.nan)
    _, P = sorting_network(x, network, sigmoid, beta, art_lambda, bitonic_padding=bitonic_padding)
    G = g * ranking_loss_grad_P(P, ranking_targets(t))
    return sorting_network_vjp(x, None, G, network, sigmoid, beta, art_lambda, bitonic_padding=bitonic_padding)


# ------------------------------------------------------------------------------------------------


def numerical_gradient(f, x, h=1e-6):
    """Central finite-difference gradient of a scalar function f at x, shape (n,)."""
    x = _vec(x)
    grad = np.zeros(len(x))
    for j in range(len(x)):
        xp = x.copy()
        xm = x.copy()
        xp[j] += h
        xm[j] -= h
        grad[j] = (float(f(xp)) - float(f(xm))) / (2.0 * h)
    return grad
