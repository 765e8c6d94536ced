"""Differentiable sorting networks (diffcomb/sortnet.py, csrc/sortnet) against SPEC.md section 5
and 7.5 and the float64 numpy reference in tests/reference/sortnet.py (which builds the network
and applies every comparator's mix to the dense P): values, P and gradients for both networks
(the bitonic one with both paddings), all sigmoids, n in {1, 2, 3, 5, 8, 33, 64}; against the
papers' code diffsort when it is installed; properties (double stochasticity, the hard limit,
monotonicity), gradcheck, opcheck, torch.compile, edge cases, errors and the raw ops' argument
checks; CUDA against the CPU."""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import diffcomb
from diffcomb._sortnet_layout import _bitonic_layers, _pruned_bitonic_sorts, network_layout
from tests.conftest import CUDA_SKIP_REASON, DEVICES, DTYPES, HAS_CUDA, assert_close
from tests.reference import sortnet as ref

NETWORKS = list(ref.NETWORKS)
PADDINGS = list(ref.BITONIC_PADDINGS)
# (network, bitonic_padding): every distinct layout (odd-even ignores the padding)
LAYOUTS = [("odd_even", "prune"), ("bitonic", "prune"), ("bitonic", "inf")]
SIGMOIDS = list(ref.SIGMOIDS)
MONOTONE = ["reciprocal", "cauchy", "optimal"]  # SPEC 5.2
SIZES = [1, 2, 3, 5, 8, 33, 64]


def separated_np(rng: np.random.Generator, shape, scale: float = 2.0, min_gap: float = 0.05) -> np.ndarray:
    """Random rows whose sorted values differ by at least min_gap (no ties)."""
    while True:
        x = rng.normal(size=shape) * scale
        if shape[-1] < 2 or np.min(np.diff(np.sort(x, axis=-1), axis=-1)) >= min_gap:
            return x


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def run(x: torch.Tensor, G_values=None, G_P=None, **kwargs):
    """(values, P, dx) of sorting_network with the loss <G_values, values> + <G_P, P>."""
    x = x.detach().clone().requires_grad_(True)
    r = diffcomb.sorting_network(x, **kwargs)
    loss = x.new_zeros(())
    if G_values is not None:
        loss = loss + (r.values * G_values).sum()
    if G_P is not None:
        loss = loss + (r.matrix * G_P).sum()
    loss.backward()
    return r.values.detach(), None if r.matrix is None else r.matrix.detach(), x.grad


# ------------------------------------------------------------------------------------------------
# SPEC 7.5


ALPHA_N2 = {"logistic": 0.268941, "logistic_phi": 0.268941, "gaussian": 0.158655,
            "reciprocal": 0.333333, "cauchy": 0.25, "optimal": 0.0625}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_spec_7_5_n2(sigmoid, network):
    a = ALPHA_N2[sigmoid]
    for dtype in (torch.float32, torch.float64):
        r = diffcomb.sorting_network(torch.tensor([1.0, 0.0], dtype=dtype), network=network, sigmoid=sigmoid,
                                     steepness=1.0)
        assert_close(r.values, [a, 1 - a], rtol=0, atol=1e-6)
        assert_close(r.matrix, [[a, 1 - a], [1 - a, a]], rtol=0, atol=1e-6)


def test_spec_7_5_n3_and_ranking_loss():
    expected = {
        "cauchy": ([0.537310, 0.972528, 1.490162],
                   [[0.177087, 0.230116, 0.592796], [0.639777, 0.257589, 0.102634], [0.183135, 0.512295, 0.304570]]),
        "logistic": ([0.507635, 0.973187, 1.519179],
                     [[0.162417, 0.237144, 0.600439], [0.654782, 0.263957, 0.081261], [0.182800, 0.498899, 0.318300]]),
    }
    x = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    for sigmoid, (values, P) in expected.items():
        r = diffcomb.sorting_network(x, sigmoid=sigmoid, steepness=1.0)
        assert_close(r.values, values, rtol=0, atol=1e-6)
        assert_close(r.matrix, P, rtol=0, atol=1e-6)
    P = diffcomb.sorting_network(x, sigmoid="cauchy", steepness=1.0).matrix
    assert_close(diffcomb.ranking_loss(P, torch.tensor([30.0, 10.0, 20.0])), 0.340718, rtol=0, atol=1e-6)


def test_spec_7_5_bitonic_depths():
    for padding in PADDINGS:
        for n, depth, comparators in [(2, 1, 1), (4, 3, 6), (8, 6, 24), (16, 10, 80), (5, 6, 11)]:
            layout = network_layout("bitonic", n, padding)
            assert len(layout.offsets) - 1 == depth
            assert layout.offsets[-1] == comparators == len(layout.lo) == len(layout.hi)
    # n a power of two: one network whatever the padding
    for part_p, part_i in zip(network_layout("bitonic", 16, "prune"), network_layout("bitonic", 16, "inf")):
        np.testing.assert_array_equal(part_p, part_i)


def _apply_layout_hard(X: np.ndarray, layout) -> np.ndarray:
    """Exact compare-exchanges of a layout on every row of X, read out through layout.output."""
    return ref.apply_hard(X, zip(layout.lo, layout.hi))[:, layout.output]


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_layout_is_the_reference_network(network, padding):
    """The kernels' layout is the reference network: pruned, the same comparators on the same
    wires in the same layers; padded with +inf, only the comparators between real values, on
    renamed wires. And what the kernels rely on."""
    rng = rng_for("layout", network, padding)
    for n in range(0, 41):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n = 22, 38 (test_pruned_bitonic_warns_where_it_does_not_sort)
            layout = network_layout(network, n, padding)
        lo, hi, offsets, reach, output = layout
        assert sorted(output.tolist()) == list(range(n))
        if padding == "prune":  # exactly the reference's comparators, layer by layer
            layers = [sorted(layer) for layer in ref.network_layers(network, n, padding) if layer]
            assert len(offsets) - 1 == len(layers)
            for l, layer in enumerate(layers):
                assert sorted(zip(lo[offsets[l]:offsets[l + 1]].tolist(), hi[offsets[l]:offsets[l + 1]].tolist())) \
                    == layer
            assert not layout.permuted
        elif n:  # every comparator of the reference that mixes two finite values, and no other
            _, _, tape = ref._forward(rng.normal(size=n), network, "cauchy", 1.0, ref.ART_LAMBDA, False, padding)
            assert len(lo) == sum(not exact for *_, exact, _, _ in tape)
        for l in range(len(offsets) - 1):  # what the kernels rely on (sortnet.h)
            a = np.minimum(lo[offsets[l]:offsets[l + 1]], hi[offsets[l]:offsets[l + 1]])
            b = np.maximum(lo[offsets[l]:offsets[l + 1]], hi[offsets[l]:offsets[l + 1]])
            assert np.all(np.diff(a) > 0) and len(set(a) | set(b)) == 2 * len(a)  # sorted, disjoint
            assert reach[l] == np.max(b - a) and 0 <= a.min() and b.max() < n
        X = rng.normal(size=(20, n))
        hard = _apply_layout_hard(X, layout)
        np.testing.assert_array_equal(hard, np.stack([ref.hard_sorting_network(x, network, padding) for x in X]))
        if network == "odd_even" or padding == "inf" or _pruned_bitonic_sorts(n):
            np.testing.assert_array_equal(hard, np.sort(X, axis=1))
        else:  # n = 22, 38
            assert not np.array_equal(hard, np.sort(X, axis=1))
    if padding == "inf":
        # the padding renames wires: outputs may end on other wires than their positions (n = 11)
        # and a layer may mix spans (n = 7)
        assert network_layout("bitonic", 11, "inf").permuted and not network_layout("bitonic", 16, "inf").permuted
        lo, hi, offsets = network_layout("bitonic", 7, "inf")[:3]
        assert any(len(set(np.abs(hi - lo)[offsets[l]:offsets[l + 1]])) > 1 for l in range(len(offsets) - 1))


def _pruned_bitonic_sorts_exhaustively(n: int) -> bool:
    """Whether the pruned bitonic network on n wires sorts every 0/1 input (the 0-1 principle),
    without enumerating all 2^n of them: the network on N wires is built of blocks, and after
    block t every group of 2^(t+1) wires has been through its own sorter. A group without deleted
    wires is a full bitonic sorter, whose outputs are exactly the sorted 0/1 patterns (ascending
    or descending by the group's direction); a group of deleted wires only has no outputs; only
    the group holding wire p = N - n, the first real wire, has some deleted. Its reachable 0/1
    outputs are computed exactly, block by block, from its own and its sibling's."""
    N = 1 << max(n - 1, 0).bit_length()
    p = N - n
    if p == 0:
        return True
    layers = _bitonic_layers(N)
    reach = np.array([[0], [1]], dtype=np.uint8)  # the outputs of the group holding wire p (its real wires)
    first = 0
    for t in range(N.bit_length() - 1):
        size, half = 2 << t, 1 << t
        start = p - p % size
        if p < start + half:  # the group's first half holds wire p, its second half is a full sorter
            sorted_patterns = np.tril(np.ones((half + 1, half), dtype=np.uint8), -1)[:, ::-1]
            if (start + half) >> t & 1:  # the second half was sorted descending
                sorted_patterns = sorted_patterns[:, ::-1]
            X = np.concatenate([np.repeat(reach, len(sorted_patterns), 0),
                                np.tile(sorted_patterns, (len(reach), 1))], 1)
        else:  # the first half is deleted
            X = reach
        for lo, hi in layers[first:first + t + 1]:
            keep = (np.minimum(lo, hi) >= p) & (np.maximum(lo, hi) < start + size)
            lo, hi = lo[keep] - p, hi[keep] - p
            a, b = X[:, lo].copy(), X[:, hi].copy()
            X[:, lo], X[:, hi] = np.minimum(a, b), np.maximum(a, b)
        first += t + 1
        reach = np.unique(X, axis=0)
    return bool(np.all(np.diff(reach.astype(np.int8), axis=1) >= 0))


def test_pruned_bitonic_sorts_rule():
    """SPEC 5.1's pruned bitonic network (the papers' code) is not a sorting network for every n:
    _pruned_bitonic_sorts's closed form against the exhaustive 0-1 check (n < 80) and against
    random inputs (every n < 600: a failure on them is a certain counterexample)."""
    failing = [n for n in range(80) if not _pruned_bitonic_sorts_exhaustively(n)]
    assert failing == [22, 38, 42, 43, 44, 45, 46, 54, 70, 74, 75, 76, 77, 78]
    assert failing == [n for n in range(80) if not _pruned_bitonic_sorts(n)]
    # the sizes of the papers' experiments (3, 5, 7, 9, 15, 32) and of issue 12 sort
    assert all(_pruned_bitonic_sorts(n) for n in (3, 5, 6, 7, 9, 11, 12, 15, 32, 33))
    rng = rng_for("prune-rule")
    for n in range(80, 600):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layout = network_layout("bitonic", n, "prune")
        X = rng.normal(size=(64, n))
        for begin, end in zip(layout.offsets[:-1], layout.offsets[1:]):  # exact compare-exchanges, by layers
            lo, hi = layout.lo[begin:end], layout.hi[begin:end]
            X[:, lo], X[:, hi] = np.minimum(X[:, lo], X[:, hi]), np.maximum(X[:, lo], X[:, hi])
        assert bool(np.all(np.diff(X, axis=1) >= 0)) == _pruned_bitonic_sorts(n), n


def test_pruned_bitonic_warns_where_it_does_not_sort():
    """Where the pruned network does not sort, its steep limit is not the sort: the values are
    still diffsort's, with a warning (once per n, when the layout is built) naming the fix; no
    warning where it sorts or with bitonic_padding="inf"."""
    for cache in (network_layout, diffcomb._sortnet_ops._layout_tensors,
                  diffcomb._sortnet_layout.warn_if_pruned_bitonic_unsorted):
        cache.cache_clear()
    x = torch.tensor(separated_np(rng_for("warn"), (2, 22), min_gap=0.01))
    with pytest.warns(UserWarning, match=r"not a sorting network for n = 22.*bitonic_padding='inf'"):
        r = diffcomb.sorting_network(x, network="bitonic", steepness=1e9)
    assert not bool(torch.allclose(r.values, x.sort(-1).values, atol=1e-3))
    with pytest.warns(UserWarning, match="n = 38"):
        diffcomb.DiffSortNet("bitonic", 38)  # at construction
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in (21, 23, 33):
            diffcomb.sorting_network(torch.randn(2, n), network="bitonic")
        r = diffcomb.sorting_network(x, network="bitonic", steepness=1e9, bitonic_padding="inf")
        assert_close(r.values, x.sort(-1).values, rtol=0, atol=1e-6)
        diffcomb.sorting_network(x, network="bitonic")  # warned once per n
        diffcomb.DiffSortNet("bitonic", 38)
        network_layout.cache_clear()
        diffcomb.sorting_network(x, network="bitonic")


def test_bitonic_default_is_pruned_and_differs_from_inf_padding():
    """Issue 12.3: the default bitonic network for n not a power of two is the pruned one of SPEC
    5.1 and the papers' code (the reference's default); +inf padding is an option and a different
    relaxation (soft values differ by about 1 at n = 5)."""
    rng = rng_for("default-prune")
    x = separated_np(rng, (4, 5))
    for sorter in (lambda t, **kw: diffcomb.sorting_network(t, network="bitonic", sigmoid="cauchy", steepness=1.0,
                                                             **kw),
                   lambda t, **kw: diffcomb.DiffSortNet("bitonic", 5, steepness=1.0, **kw)(t)):
        default = sorter(torch.tensor(x))
        pruned = sorter(torch.tensor(x), bitonic_padding="prune")
        padded = sorter(torch.tensor(x), bitonic_padding="inf")
        assert_close(default.values, pruned.values, rtol=0, atol=0)
        assert_close(default.matrix, pruned.matrix, rtol=0, atol=0)
        for b in range(4):
            for padding, r in (("prune", pruned), ("inf", padded)):
                s, p = ref.sorting_network(x[b], "bitonic", "cauchy", 1.0, bitonic_padding=padding)
                assert_close(r.values[b], s, rtol=1e-12, atol=1e-12)
                assert_close(r.matrix[b], p, rtol=1e-12, atol=1e-12)
        assert float((pruned.values - padded.values).abs().max()) > 0.1
    # n a power of two, or odd-even: the padding changes nothing
    x = torch.tensor(separated_np(rng, (3, 8)))
    for network in NETWORKS:
        a = diffcomb.sorting_network(x, network=network, bitonic_padding="prune")
        b = diffcomb.sorting_network(x, network=network, bitonic_padding="inf")
        assert_close(a.values, b.values, rtol=0, atol=0)
        assert_close(a.matrix, b.matrix, rtol=0, atol=0)
    assert "bitonic_padding='prune'" in repr(diffcomb.DiffSortNet("bitonic", 5))
    assert "bitonic_padding='inf'" in repr(diffcomb.DiffSortNet("bitonic", 5, bitonic_padding="inf"))


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_bitonic_pads_with_values_that_sort_last(sigmoid):
    """bitonic_padding="inf", n not a power of two: the network on the next power of two with
    +inf appended, routed exactly and stripped (the reference pads and routes explicitly). For
    the logistic and gaussian sigmoids a finite pad far above the inputs is exact in float64 too
    (f = 1 and f' = 0 exactly), so the padded network on the next power of two, run by diffcomb
    itself, must agree as well."""
    rng = rng_for("pad", sigmoid)
    for n in (3, 6, 7, 11, 12, 20):
        N = 1 << (n - 1).bit_length()
        x = separated_np(rng, (2, n), min_gap=0.05)
        g = rng.normal(size=(2, n))
        G = rng.normal(size=(2, n, n))
        v, P, dx = run(torch.tensor(x), torch.tensor(g), torch.tensor(G), network="bitonic", sigmoid=sigmoid,
                       steepness=3.0, bitonic_padding="inf")
        for b in range(2):
            s, p = ref.sorting_network(x[b], "bitonic", sigmoid, 3.0, bitonic_padding="inf")
            assert_close(v[b], s)
            assert_close(P[b], p)
            assert_close(dx[b], ref.sorting_network_vjp(x[b], g[b], G[b], "bitonic", sigmoid, 3.0,
                                                        bitonic_padding="inf"))
        if sigmoid in ("logistic", "gaussian"):
            G_full = np.zeros((2, N, N))
            G_full[:, :n, :n] = G
            vf, Pf, dxf = run(torch.tensor(np.concatenate([x, np.full((2, N - n), 1e3)], -1)),
                              torch.tensor(np.concatenate([g, np.zeros((2, N - n))], -1)), torch.tensor(G_full),
                              network="bitonic", sigmoid=sigmoid, steepness=3.0)
            assert_close(v, vf[:, :n], rtol=0, atol=1e-10)
            assert_close(P, Pf[:, :n, :n], rtol=0, atol=1e-12)
            assert float(Pf[:, :n, n:].abs().max()) == 0 and float(Pf[:, n:, :n].abs().max()) == 0  # never mixed
            assert_close(dx, dxf[:, :n], rtol=0, atol=1e-10)


@pytest.mark.parametrize("padding", PADDINGS)
def test_bitonic_wide_layers_against_reference(padding):
    """n = 101: padded, layers whose comparators span different distances and outputs on renamed
    wires (the CPU's range skipping by reach); pruned, 27 deleted wires. One row alone (lanes
    split among threads) and in a batch."""
    rng = rng_for("wide101", padding)
    n = 101
    lo, hi, offsets, _, output = network_layout("bitonic", n, padding)
    if padding == "inf":
        assert np.any(output != np.arange(n))
        assert any(len(set(np.abs(hi - lo)[offsets[l]:offsets[l + 1]])) > 1 for l in range(len(offsets) - 1))
    x = separated_np(rng, (2, n), scale=1.0, min_gap=1e-3)
    g = rng.normal(size=(2, n))
    G = rng.normal(size=(2, n, n))
    s, p = ref.sorting_network(x[1], "bitonic", "cauchy", 3.0, bitonic_padding=padding)
    dref = ref.sorting_network_vjp(x[1], g[1], G[1], "bitonic", "cauchy", 3.0, bitonic_padding=padding)
    for rows in (slice(1, 2), slice(0, 2)):
        v, P, dx = run(torch.tensor(x[rows]), torch.tensor(g[rows]), torch.tensor(G[rows]), network="bitonic",
                       steepness=3.0, bitonic_padding=padding)
        assert_close(v[-1], s)
        assert_close(P[-1], p)
        assert_close(dx[-1], dref)


DIFFSORT_SIZES = [3, 5, 6, 7, 11, 12, 33]


def _diffsort_optimal_without_guard(x):
    """diffsort's optimal sigmoid without the 1e-10 it adds to |v| (SPEC 5.2's formula)."""
    outer = x.abs() > 0.25
    safe = torch.where(outer, x, torch.ones_like(x))
    return torch.where(outer, torch.where(x > 0, 1 - 1 / (16 * safe), -1 / (16 * safe)), x + 0.5)


def _compare_with_diffsort(diffsort, network, sigmoid, rng, tol_of):
    """sorting_network against diffsort.DiffSortNet for DIFFSORT_SIZES at steepness 2 and 1.7:
    values, P and the gradient of <g, values> + <G, P>, float64; tol_of(steepness) gives the
    (values and P, gradient) tolerances."""
    for n in DIFFSORT_SIZES:
        for steepness in (2.0, 1.7):
            x = torch.tensor(separated_np(rng, (3, n), scale=1.0, min_gap=1e-3))
            g = torch.tensor(rng.normal(size=(3, n)))
            G = torch.tensor(rng.normal(size=(3, n, n)))
            v, P, dx = run(x, g, G, network=network, sigmoid=sigmoid, steepness=steepness)
            xd = x.clone().requires_grad_(True)
            vd, Pd = diffsort.DiffSortNet(network, n, steepness=steepness, distribution=sigmoid)(xd)
            ((vd * g).sum() + (Pd * G).sum()).backward()
            tol, tol_grad = tol_of(steepness)
            assert_close(v, vd.detach(), **tol, msg=f"values, n = {n}, steepness {steepness}")
            assert_close(P, Pd.detach(), **tol, msg=f"P, n = {n}, steepness {steepness}")
            assert_close(dx, xd.grad, **tol_grad, msg=f"gradient, n = {n}, steepness {steepness}")


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network", NETWORKS)
def test_matches_diffsort(network, sigmoid):
    """Issue 12.3: the papers' own code. diffsort's DiffSortNet(network, n, steepness=b,
    distribution=s) returns (sorted values, P) with P[b, i, k] as diffcomb's; its bitonic network
    for n not a power of two drops the first N - n wires. Values, P and gradients in float64 for
    every sigmoid, to rounding, except where diffsort's own numbers are not exact: its optimal
    sigmoid adds 1e-10 to |v| (relative changes of about 1e-10; without that guard it agrees to
    rounding, next test), and its gaussian backward rounds sigma = 1/steepness to float32 (exact
    for steepness 2, about 1e-7 relative at 1.7)."""
    diffsort = pytest.importorskip("diffsort", reason="diffsort (the papers' code) is not installed")
    exact = dict(rtol=1e-12, atol=1e-12)

    def tol_of(steepness):
        if sigmoid == "optimal":
            return dict(rtol=1e-8, atol=1e-8), dict(rtol=1e-8, atol=1e-8)
        if sigmoid == "gaussian" and steepness == 1.7:
            return exact, dict(rtol=1e-6, atol=1e-6)
        return exact, exact

    _compare_with_diffsort(diffsort, network, sigmoid, rng_for("diffsort", network, sigmoid), tol_of)


@pytest.mark.parametrize("network", NETWORKS)
def test_matches_diffsort_optimal_without_its_guard(network, monkeypatch):
    """diffsort's optimal sigmoid with SPEC 5.2's formula instead of 1/(16 (|v| + 1e-10)): then
    values, P and gradients agree to rounding, so the 1e-8 tolerance above is that guard only."""
    diffsort = pytest.importorskip("diffsort", reason="diffsort (the papers' code) is not installed")
    import diffsort.functional

    monkeypatch.setattr(diffsort.functional, "s_best", _diffsort_optimal_without_guard)
    exact = dict(rtol=1e-12, atol=1e-12)
    _compare_with_diffsort(diffsort, network, "optimal", rng_for("diffsort-exact", network), lambda _: (exact, exact))


# ------------------------------------------------------------------------------------------------
# Against the reference: values, P and the VJP, both networks, all sigmoids, SIZES, f32 and f64.


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_against_reference(network, padding, sigmoid, n):
    rng = rng_for("ref", network, padding, sigmoid, n)
    rows = 2 if n <= 8 else 1
    steepness = 3.0
    x = separated_np(rng, (rows, n), scale=1.0 if n > 8 else 2.0, min_gap=1e-3 if n > 8 else 0.05)
    g_values = rng.normal(size=(rows, n))
    g_P = rng.normal(size=(rows, n, n))
    values, P, vjp_full, vjp_values = [], [], [], []
    for b in range(rows):
        s, p = ref.sorting_network(x[b], network, sigmoid, steepness, bitonic_padding=padding)
        values.append(s)
        P.append(p)
        vjp_full.append(ref.sorting_network_vjp(x[b], g_values[b], g_P[b], network, sigmoid, steepness,
                                                bitonic_padding=padding))
        vjp_values.append(ref.sorting_network_vjp(x[b], g_values[b], None, network, sigmoid, steepness,
                                                  bitonic_padding=padding))
    for dtype in (torch.float32, torch.float64):
        xt = torch.tensor(x, dtype=dtype)
        gv = torch.tensor(g_values, dtype=dtype)
        gP = torch.tensor(g_P, dtype=dtype)
        kw = dict(network=network, sigmoid=sigmoid, steepness=steepness, bitonic_padding=padding)
        v, p, dx = run(xt, gv, gP, **kw)
        # float32: the mixing weights are rounded to float32 at every comparator
        tol = dict(rtol=1e-4, atol=2e-4) if dtype == torch.float32 else {}
        assert_close(v, np.stack(values), **tol)
        assert_close(p, np.stack(P), **tol)
        assert_close(dx, np.stack(vjp_full), **(dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else {}))
        v2, p2, dx2 = run(xt, gv, None, return_matrix=False, **kw)
        assert p2 is None
        assert_close(v2, v, rtol=0, atol=0)
        assert_close(dx2, np.stack(vjp_values), **tol)


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_descending(network, padding):
    rng = rng_for("desc", network, padding)
    x = torch.tensor(separated_np(rng, (3, 7)))
    g = torch.tensor(rng.normal(size=(3, 7)))
    G = torch.tensor(rng.normal(size=(3, 7, 7)))
    v, P, dx = run(x, g, G, network=network, descending=True, bitonic_padding=padding)
    for b in range(3):
        s, p = ref.sorting_network(x[b].numpy(), network, "cauchy", 10.0, descending=True, bitonic_padding=padding)
        assert_close(v[b], s)
        assert_close(P[b], p)
        assert_close(dx[b], ref.sorting_network_vjp(x[b].numpy(), g[b].numpy(), G[b].numpy(), network, "cauchy",
                                                    10.0, descending=True, bitonic_padding=padding))


@pytest.mark.parametrize("sigmoid", ["logistic", "cauchy", "optimal"])
@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_ranking_loss_against_reference(network, padding, sigmoid):
    rng = rng_for("rank", network, padding, sigmoid)
    x = separated_np(rng, (3, 6))
    targets = np.stack([rng.permutation(6) for _ in range(3)])
    xt = torch.tensor(x, requires_grad=True)
    P = diffcomb.sorting_network(xt, network=network, sigmoid=sigmoid, steepness=2.0, bitonic_padding=padding).matrix
    loss = diffcomb.ranking_loss(P, torch.tensor(targets), reduction="none")
    expected = [ref.ranking_loss(x[b], targets[b], network, sigmoid, 2.0, bitonic_padding=padding) for b in range(3)]
    assert_close(loss, expected)
    loss.sum().backward()
    grads = np.stack([ref.ranking_loss_vjp(x[b], targets[b], 1.0, network, sigmoid, 2.0, bitonic_padding=padding)
                      for b in range(3)])
    assert_close(xt.grad, grads)
    assert_close(diffcomb.ranking_loss(P, torch.tensor(targets)), np.mean(expected))
    assert_close(diffcomb.ranking_loss(P, torch.tensor(targets), reduction="sum"), np.sum(expected))
    module = diffcomb.RankingLoss(reduction="sum")
    assert "sum" in repr(module)
    assert_close(module(P, torch.tensor(targets)), np.sum(expected))


def test_ranking_loss_ranks_and_values_agree():
    P = diffcomb.sorting_network(torch.tensor([[0.3, -1.0, 2.0, 0.5]])).matrix
    ranks = torch.tensor([[1, 0, 3, 2]])
    values = torch.tensor([[10.0, -5.0, 99.0, 11.0]])
    assert_close(diffcomb.ranking_loss(P, ranks), diffcomb.ranking_loss(P, values), rtol=0, atol=0)
    assert math.isnan(float(diffcomb.ranking_loss(P, torch.tensor([[1.0, math.nan, 2.0, 3.0]]))))


# ------------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network", NETWORKS)
def test_doubly_stochastic_and_values_are_PT_x(network, sigmoid):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 37, generator=gen, dtype=torch.float64) * 3
    r = diffcomb.sorting_network(x, network=network, sigmoid=sigmoid)
    P = r.matrix
    assert bool((P >= 0).all()) and bool((P <= 1).all())
    assert_close(P.sum(-1), torch.ones(4, 37))
    assert_close(P.sum(-2), torch.ones(4, 37))
    assert_close(r.values, (P.mT @ x.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network", NETWORKS)
def test_steep_limit_is_the_hard_sort(network, sigmoid):
    rng = rng_for("hard", network, sigmoid)
    x = torch.tensor(separated_np(rng, (3, 33), min_gap=0.01))
    r = diffcomb.sorting_network(x, network=network, sigmoid=sigmoid, steepness=1e9)
    hard = torch.sort(x, dim=-1)
    assert_close(r.values, hard.values, rtol=0, atol=1e-6)
    perm = torch.zeros(3, 33, 33, dtype=torch.float64).scatter_(-2, hard.indices.unsqueeze(-2), 1.0)
    assert_close(r.matrix, perm, rtol=0, atol=1e-6)
    r32 = diffcomb.sorting_network(x.float(), network=network, sigmoid=sigmoid, steepness=1e9)
    assert_close(r32.values, hard.values, rtol=0, atol=1e-5)
    assert_close(r32.matrix, perm, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigmoid", MONOTONE)
@pytest.mark.parametrize("network", NETWORKS)
def test_monotonic_sigmoids_have_nonnegative_jacobian(network, sigmoid):
    gen = torch.Generator().manual_seed(11)
    for n in (5, 16):
        for _ in range(3):
            x = torch.randn(n, generator=gen, dtype=torch.float64) * 0.3
            J = torch.autograd.functional.jacobian(
                lambda t: diffcomb.sorting_network(t, network=network, sigmoid=sigmoid, steepness=4.0,
                                                   return_matrix=False).values, x)
            assert float(J.min()) >= -1e-12, float(J.min())


def test_logistic_is_not_monotonic():
    # SPEC 5.2: the logistic sigmoid can give negative entries of d sorted / d x.
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(20):
        x = torch.randn(8, generator=gen, dtype=torch.float64) * 0.3
        J = torch.autograd.functional.jacobian(
            lambda t: diffcomb.sorting_network(t, sigmoid="logistic", steepness=4.0).values, x)
        worst = min(worst, float(J.min()))
    assert worst < -1e-3


def test_ties_blend_evenly_with_finite_gradients():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    for sigmoid in SIGMOIDS:
        r = diffcomb.sorting_network(x, network="bitonic", sigmoid=sigmoid)
        assert_close(r.values, [[1.0] * 4])
        assert_close(r.matrix.sum(-1), [[1.0] * 4])
        (g,) = torch.autograd.grad((r.values * torch.arange(4.0)).sum() + r.matrix[..., 0, 0], x)
        assert bool(torch.isfinite(g).all())
        expected = ref.sorting_network_vjp([1.0] * 4, np.arange(4.0), np.eye(4)[0][:, None] * np.eye(4)[0][None, :],
                                           "bitonic", sigmoid, 10.0)
        assert_close(g[0], expected)


# ------------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile.


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network", NETWORKS)
def test_gradcheck(network, sigmoid):
    rng = rng_for("gradcheck", network, sigmoid)
    x = torch.tensor(separated_np(rng, (2, 5), min_gap=0.1), requires_grad=True)
    for return_matrix in (True, False):
        def fn(t):
            r = diffcomb.sorting_network(t, network=network, sigmoid=sigmoid, steepness=2.0,
                                         return_matrix=return_matrix)
            return (r.values, r.matrix) if return_matrix else r.values
        assert gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_opcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    G = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    for network, padding in LAYOUTS:
        net, pad = NETWORKS.index(network), PADDINGS.index(padding)
        for with_matrix in (True, False):
            torch.library.opcheck(torch.ops.diffcomb.sorting_network.default,
                                  (x, net, pad, 4, 5.0, 0.25, with_matrix))
        alpha = diffcomb._sortnet_ops._sortnet_op(x.detach(), net, pad, 1, 5.0, 0.25, True)[2]
        torch.library.opcheck(torch.ops.diffcomb.sorting_network_backward.default,
                              (x.detach(), alpha, g, G, net, pad, 1, 5.0, 0.25))
        torch.library.opcheck(torch.ops.diffcomb.sorting_network_backward.default,
                              (x.detach(), alpha, None, G, net, pad, 1, 5.0, 0.25))
        torch.library.opcheck(torch.ops.diffcomb.sorting_network_backward.default,  # dL/dP stored as Pt
                              (x.detach(), alpha, g, G.mT.contiguous().mT, net, pad, 1, 5.0, 0.25))


def assert_compiles_like_eager(loss_fn, x):
    """loss_fn under torch.compile(fullgraph=True) gives the eager loss and gradient."""
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    eager = loss_fn(x)
    (g_eager,) = torch.autograd.grad(eager, x)
    out = compiled(x)
    (g_compiled,) = torch.autograd.grad(out, x)
    assert_close(out, eager)
    assert_close(g_compiled, g_eager)


@pytest.mark.parametrize("network", NETWORKS)
def test_compile_fullgraph(network):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(2, 3, 9, generator=gen, dtype=torch.float64)

    def loss_fn(t):
        r = diffcomb.sorting_network(t, network=network, sigmoid="optimal", steepness=5.0)
        return diffcomb.ranking_loss(r.matrix, targets) + r.values.square().mean()

    assert_compiles_like_eager(loss_fn, x)


# ------------------------------------------------------------------------------------------------
# Batches, dtypes, edge cases, errors.


@pytest.mark.parametrize("dtype", DTYPES)
def test_leading_dims_and_non_contiguous(dtype):
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(9, 2, 3, generator=gen, dtype=torch.float64).to(dtype)
    x = base.permute(1, 2, 0)  # (2, 3, 9), non-contiguous
    assert not x.is_contiguous()
    g = torch.randn(2, 3, 9, generator=gen, dtype=torch.float64).to(dtype)
    v, P, dx = run(x, g, None, network="bitonic")
    assert v.shape == (2, 3, 9) and P.shape == (2, 3, 9, 9) and dx.shape == (2, 3, 9)
    assert v.dtype == dtype and P.dtype == dtype
    v2, P2, dx2 = run(x.contiguous().reshape(6, 9), g.reshape(6, 9), None, network="bitonic")
    assert_close(v.reshape(6, 9), v2, rtol=0, atol=0)
    assert_close(P.reshape(6, 9, 9), P2, rtol=0, atol=0)
    assert_close(dx.reshape(6, 9), dx2, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 12, generator=gen)
    r = diffcomb.sorting_network(x.to(dtype), network="bitonic")
    full = diffcomb.sorting_network(x.to(dtype).float(), network="bitonic")
    assert r.values.dtype == dtype and r.matrix.dtype == dtype
    assert_close(r.values.float(), full.values, rtol=1e-2, atol=1e-2)
    assert_close(r.matrix.float(), full.matrix, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("network", NETWORKS)
def test_empty_and_n1(network):
    for shape in [(0,), (3, 0), (0, 5), (2, 0, 4)]:
        x = torch.zeros(shape, requires_grad=True)
        r = diffcomb.sorting_network(x, network=network)
        assert r.values.shape == shape and r.matrix.shape == (*shape, shape[-1])
        (r.values.sum() + r.matrix.sum()).backward()
        assert x.grad.shape == shape
    x = torch.tensor([[3.5], [-1.0]], dtype=torch.float64, requires_grad=True)
    r = diffcomb.sorting_network(x, network=network)
    assert_close(r.values, x)
    assert_close(r.matrix, torch.ones(2, 1, 1))
    loss = diffcomb.ranking_loss(r.matrix, torch.zeros(2, 1))
    (g,) = torch.autograd.grad((r.values * 2).sum() + loss, x)
    assert_close(g, [[2.0], [2.0]])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("network", NETWORKS)
def test_nonfinite_rows_are_nan(network, bad):
    x = torch.tensor([[0.5, 2.0, -1.0, 0.0, 3.0], [0.5, bad, -1.0, 0.0, 3.0]], dtype=torch.float64,
                     requires_grad=True)
    r = diffcomb.sorting_network(x, network=network)
    assert bool(torch.isnan(r.values[1]).all()) and bool(torch.isnan(r.matrix[1]).all())
    assert bool(torch.isfinite(r.values[0]).all()) and bool(torch.isfinite(r.matrix[0]).all())
    (g,) = torch.autograd.grad(r.values.sum() + r.matrix[..., 0].sum(), x)
    assert bool(torch.isnan(g[1]).all()) and bool(torch.isfinite(g[0]).all())
    good = diffcomb.sorting_network(x[:1].detach(), network=network)
    assert_close(r.values[0], good.values[0], rtol=0, atol=0)


def test_module():
    sorter = diffcomb.DiffSortNet("bitonic", 6, steepness=20.0, sigmoid="reciprocal")
    assert "bitonic" in repr(sorter) and "reciprocal" in repr(sorter)
    x = torch.randn(4, 6, dtype=torch.float64)
    values, P = sorter(x)
    expected = diffcomb.sorting_network(x, network="bitonic", steepness=20.0, sigmoid="reciprocal")
    assert_close(values, expected.values, rtol=0, atol=0)
    assert_close(P, expected.matrix, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"DiffSortNet: expected x of shape \(\.\.\., 6\)"):
        sorter(torch.randn(4, 5))
    with pytest.raises(ValueError, match="network"):
        diffcomb.DiffSortNet("bubble", 4)
    with pytest.raises(ValueError, match="size"):
        diffcomb.DiffSortNet("bitonic", -1)
    with pytest.raises(ValueError, match="steepness"):
        diffcomb.DiffSortNet("bitonic", 4, steepness=0.0)


def test_errors():
    x = torch.randn(3, 4)
    sn = diffcomb.sorting_network
    with pytest.raises(TypeError, match="sorting_network: x must be a torch.Tensor"):
        sn([1.0, 2.0])
    with pytest.raises(TypeError, match="x must be a real tensor"):
        sn(torch.ones(4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        sn(torch.tensor(1.0))
    with pytest.raises(ValueError, match="network must be one of 'odd_even', 'bitonic', got 'bubble'"):
        sn(x, network="bubble")
    with pytest.raises(ValueError, match="sigmoid must be one of"):
        sn(x, sigmoid="relu")
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="steepness must be positive and finite"):
            sn(x, steepness=bad)
    with pytest.raises(TypeError, match="steepness must be a Python float"):
        sn(x, steepness=torch.tensor(1.0))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"art_lambda must be in \[0\.0, 1\.0\]"):
            sn(x, art_lambda=bad)
    with pytest.raises(ValueError, match="bitonic_padding must be one of 'prune', 'inf', got 'zero'"):
        sn(x, network="bitonic", bitonic_padding="zero")
    with pytest.raises(ValueError, match="bitonic_padding must be one of"):
        sn(x, bitonic_padding=None)  # checked for odd-even too
    with pytest.raises(ValueError, match="DiffSortNet: bitonic_padding must be one of"):
        diffcomb.DiffSortNet("bitonic", 4, bitonic_padding="Inf")
    with pytest.raises(TypeError):
        sn(x, "bitonic")  # keyword-only options
    P = sn(x).matrix
    with pytest.raises(ValueError, match=r"target_ranks must have shape \(3, 4\)"):
        diffcomb.ranking_loss(P, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"P must have shape \(\.\.\., n, n\)"):
        diffcomb.ranking_loss(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        diffcomb.ranking_loss(P, torch.zeros(3, 4), reduction="avg")


def test_flags_must_be_bools():
    """Issue 12.4: a flag taken by truthiness would read descending="no" as True."""
    x = torch.randn(3, 4)
    for name in ("return_matrix", "descending"):
        for bad in ("no", 1, None, torch.tensor(True)):
            with pytest.raises(TypeError, match=f"sorting_network: {name} must be a bool"):
                diffcomb.sorting_network(x, **{name: bad})
            with pytest.raises(TypeError, match=f"DiffSortNet: {name} must be a bool"):
                diffcomb.DiffSortNet("odd_even", 4, **{name: bad})


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_integer_and_bool_inputs(network, padding):
    """Issue 12.4: integer and bool values are sorted in torch's default float dtype."""
    kw = dict(network=network, bitonic_padding=padding, steepness=2.0)
    x = torch.tensor([[3, -1, 2, 7, 0], [1, 1, 0, 5, 2]])
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        xi = (x > 1) if dtype == torch.bool else x.to(dtype)
        r = diffcomb.sorting_network(xi, **kw)
        expected = diffcomb.sorting_network(xi.to(torch.get_default_dtype()), **kw)
        assert r.values.dtype == r.matrix.dtype == torch.get_default_dtype()
        assert_close(r.values, expected.values, rtol=0, atol=0)
        assert_close(r.matrix, expected.matrix, rtol=0, atol=0)
        module = diffcomb.DiffSortNet(network, 5, steepness=2.0, bitonic_padding=padding)
        assert_close(module(xi).values, expected.values, rtol=0, atol=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        r = diffcomb.sorting_network(x, **kw)
        assert r.values.dtype == torch.float64
        for b in range(2):
            s, p = ref.sorting_network(x[b].numpy(), network, "cauchy", 2.0, bitonic_padding=padding)
            assert_close(r.values[b], s)
            assert_close(r.matrix[b], p)
    finally:
        torch.set_default_dtype(previous)


def test_ranking_loss_tensors_on_one_device():
    """Issue 12.4: P and target_ranks on different devices raise, naming both."""
    P = torch.eye(3)
    with pytest.raises(RuntimeError, match="ranking_loss: all tensor arguments must be on the same device, got P on "
                                           "cpu and target_ranks on meta"):
        diffcomb.ranking_loss(P, torch.zeros(3, device="meta"))
    with pytest.raises(RuntimeError, match="got P on meta and target_ranks on cpu"):
        diffcomb.RankingLoss()(P.to("meta"), torch.zeros(3))


def _bad_forward_calls(x):
    """(name, args) of diffcomb::sorting_network calls that must raise."""
    good = (x, 1, 0, 4, 2.0, 0.25, True)

    def with_(i, value):
        return good[:i] + (value,) + good[i + 1:]

    return [
        ("x 1-D", with_(0, x[0])), ("x 3-D", with_(0, x[None])), ("x float16", with_(0, x.half())),
        ("x int64", with_(0, x.long())), ("x non-contiguous", with_(0, x.t().contiguous().t())),
        ("x expanded", with_(0, x[:1].expand(3, -1))),
        ("network 2", with_(1, 2)), ("network -1", with_(1, -1)), ("padding 2", with_(2, 2)),
        ("padding -1", with_(2, -1)), ("sigmoid 6", with_(3, 6)), ("sigmoid -1", with_(3, -1)),
        ("steepness 0", with_(4, 0.0)), ("steepness -1", with_(4, -1.0)), ("steepness inf", with_(4, math.inf)),
        ("steepness nan", with_(4, math.nan)), ("art_lambda -0.5", with_(5, -0.5)), ("art_lambda 2", with_(5, 2.0)),
    ]


def _bad_backward_calls(x, alpha, g, G):
    """(name, args) of diffcomb::sorting_network_backward calls that must raise."""
    good = (x, alpha, g, G, 1, 0, 4, 2.0, 0.25)

    def with_(i, value):
        return good[:i] + (value,) + good[i + 1:]

    return [
        ("x 1-D", with_(0, x[0])), ("x float32", with_(0, x.float())),
        ("x non-contiguous", with_(0, x.t().contiguous().t())),
        ("alpha short", with_(1, alpha[:, :-1].contiguous())), ("alpha few rows", with_(1, alpha[:-1])),
        ("alpha 1-D", with_(1, alpha[0])), ("alpha float32", with_(1, alpha.float())),
        ("alpha non-contiguous", with_(1, alpha.t().contiguous().t())), ("alpha on meta", with_(1, alpha.to("meta"))),
        ("grad_values short", with_(2, g[:, :-1].contiguous())), ("grad_values float32", with_(2, g.float())),
        ("grad_values non-contiguous", with_(2, g.t().contiguous().t())),
        ("grad_values expanded", with_(2, g[:1].expand(3, -1))),
        ("grad_P short", with_(3, G[:, :, :-1].contiguous())), ("grad_P 2-D", with_(3, G[0])),
        ("grad_P non-contiguous", with_(3, torch.cat([G, G], dim=-1)[..., ::2])), ("grad_P int", with_(3, G.long())),
        ("network 5", with_(4, 5)), ("padding 7", with_(5, 7)), ("sigmoid 9", with_(6, 9)),
        ("steepness -2", with_(7, -2.0)), ("art_lambda 1.5", with_(8, 1.5)),
    ]


def test_raw_ops_reject_bad_arguments():
    """Issue 12.4: the raw ops check shapes, dtypes, devices, contiguity and their scalar codes
    before the native call (a short alpha or gradient would be read out of bounds, a bad code
    would select another network), so a direct call raises and never crashes."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    fwd, bwd = torch.ops.diffcomb.sorting_network, torch.ops.diffcomb.sorting_network_backward
    values, Pt, alpha = fwd(x, 1, 0, 4, 2.0, 0.25, True)
    g = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    G = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    dx = bwd(x, alpha, g, G, 1, 0, 4, 2.0, 0.25)
    for name, args in _bad_forward_calls(x):
        with pytest.raises((RuntimeError, ValueError, IndexError), match="torch.ops.diffcomb.sorting_network: "):
            fwd(*args)
    for name, args in _bad_backward_calls(x, alpha, g, G):
        with pytest.raises((RuntimeError, ValueError, IndexError),
                           match="torch.ops.diffcomb.sorting_network_backward: "):
            bwd(*args)
    # the fake implementations check too (meta tensors run them)
    meta = [t.to("meta") for t in (x, alpha, g, G)]
    for name, args in _bad_forward_calls(meta[0]) + [c for c in _bad_backward_calls(*meta) if c[0] != "alpha on meta"]:
        with pytest.raises((RuntimeError, ValueError, IndexError), match="torch.ops.diffcomb.sorting_network"):
            (fwd if len(args) == 7 else bwd)(*args)
    # the good calls still agree with the public function
    r = diffcomb.sorting_network(x.clone().requires_grad_(True), network="bitonic", sigmoid="cauchy", steepness=2.0)
    assert_close(values, r.values, rtol=0, atol=0)
    assert_close(Pt.mT, r.matrix, rtol=0, atol=0)
    assert dx.shape == x.shape and bool(torch.isfinite(dx).all())


# ------------------------------------------------------------------------------------------------
# CUDA against the CPU (skipped without a GPU).


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2, 5, 11, 33, 64, 100, 200])
def test_device_matches_cpu(device, dtype, sigmoid, network, padding, n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=gen, dtype=torch.float64).to(dtype)
    x[2, 0] = math.nan if n else 0.0
    g = torch.randn(3, n, generator=gen, dtype=torch.float64).to(dtype)
    G = torch.randn(3, n, n, generator=gen, dtype=torch.float64).to(dtype)
    kw = dict(network=network, sigmoid=sigmoid, steepness=3.0, bitonic_padding=padding)
    v, P, dx = run(x, g, G, **kw)
    vd, Pd, dxd = run(x.to(device), g.to(device), G.to(device), **kw)
    assert_close(vd, v)
    assert_close(Pd, P)
    assert_close(dxd, dx, **(dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else {}))
    v2, _, dx2 = run(x.to(device), g.to(device), None, return_matrix=False, **kw)
    assert_close(v2, v)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
def test_cuda_overflowing_finite_row_matches_cpu():
    # float32 values overflow to NaN inside the network, but the input is finite: P is the
    # CPU's (decided from x, not from the values)
    x = torch.tensor([[3e38, -3e38], [1.0, 0.0]])
    for network in NETWORKS:
        r = diffcomb.sorting_network(x, network=network, steepness=1.0)
        rd = diffcomb.sorting_network(x.cuda(), network=network, steepness=1.0)
        assert bool(torch.isfinite(r.matrix).all())
        assert_close(rd.matrix, r.matrix)
        assert_close(rd.values, r.values)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
def test_cuda_gradcheck_and_opcheck():
    x = torch.randn(2, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    assert gradcheck(lambda t: diffcomb.sorting_network(t, network="bitonic", steepness=2.0), (x,), eps=1e-6,
                     atol=1e-6)
    torch.library.opcheck(torch.ops.diffcomb.sorting_network.default, (x, 0, 0, 4, 5.0, 0.25, True))
    torch.library.opcheck(torch.ops.diffcomb.sorting_network.default, (x, 1, 1, 4, 5.0, 0.25, True))


@pytest.mark.parametrize("module", ["diffcomb.sortnet", "diffcomb.nn.sortnet", "diffcomb.losses.sortnet"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("padding, n", [("inf", 70), ("prune", 69)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_row_matches_batch(dtype, padding, n):
    # One row alone takes the path that splits a row's lanes among threads; in a batch,
    # rows go to threads whole. Same result up to the order of the dalpha sums.
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(4, n, generator=gen, dtype=torch.float64).to(dtype)
    G = torch.randn(4, n, n, generator=gen, dtype=torch.float64).to(dtype)
    v, P, dx = run(x, None, G, network="bitonic", bitonic_padding=padding)
    for b in (0, 3):
        v1, P1, dx1 = run(x[b:b + 1], None, G[b:b + 1], network="bitonic", bitonic_padding=padding)
        assert_close(v1[0], v[b], rtol=0, atol=0)
        assert_close(P1[0], P[b], rtol=0, atol=0)
        assert_close(dx1[0], dx[b])


def test_reciprocal_saturates_when_steepness_times_gap_overflows():
    x = torch.tensor([[0.0, 1e10], [1e10, 0.0]], dtype=torch.float64)
    r = diffcomb.sorting_network(x, sigmoid="reciprocal", steepness=1e300)
    assert_close(r.values, [[0.0, 1e10], [0.0, 1e10]], rtol=0, atol=0)
    assert_close(r.matrix, [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ranking_loss_of_half_precision_P(dtype):
    # computed in float32 and returned in P's dtype; a hard P equal to Q has loss 0
    loss = diffcomb.ranking_loss(torch.eye(3, dtype=dtype), torch.arange(3.0))
    assert loss.dtype == dtype and float(loss) == 0.0
    P = diffcomb.sorting_network(torch.tensor([[0.3, -1.0, 2.0, 0.5]]), steepness=3.0).matrix
    loss = diffcomb.ranking_loss(P.to(dtype), torch.tensor([[1, 0, 3, 2]]))
    assert loss.dtype == dtype
    assert_close(loss.float(), diffcomb.ranking_loss(P.to(dtype).float(), torch.tensor([[1, 0, 3, 2]])),
                 rtol=1e-2, atol=0)


@pytest.mark.parametrize("sigmoid", ["logistic", "cauchy"])
def test_ranking_loss_is_the_papers_bce(sigmoid):
    """The papers' code trains with torch.nn.BCELoss()(P, Q), Q = one_hot(argsort(targets)).mT:
    value and gradient are equal here, also where P saturates (entries within 1e-7 of 0 or 1,
    where a clamp of P would give a different loss and a zero gradient: for a confidently
    reversed P some gradient entries would even change sign)."""
    rng = rng_for("bce", sigmoid)
    targets = torch.tensor(np.stack([rng.permutation(5) for _ in range(6)]))
    for scale in (0.3, 3.0):  # 3.0: most entries of P saturate
        x = torch.tensor(rng.normal(size=(6, 5)) * scale, requires_grad=True)
        x_rev = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
        for inputs, t in ((x, targets), (x_rev, torch.arange(5).unsqueeze(0))):
            P = diffcomb.sorting_network(inputs, sigmoid=sigmoid, steepness=10.0).matrix
            Q = torch.nn.functional.one_hot(torch.argsort(t, dim=-1)).transpose(-2, -1).double()
            ours = diffcomb.ranking_loss(P, t)
            theirs = torch.nn.BCELoss()(P, Q)
            (g_ours,) = torch.autograd.grad(ours, inputs, retain_graph=True)
            (g_theirs,) = torch.autograd.grad(theirs, inputs)
            assert_close(ours, theirs, rtol=1e-14, atol=0)
            assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-14)
    # the reversed input: saturated entries indeed (the case a clamp at 1e-7 got wrong)
    P = diffcomb.sorting_network(x_rev.detach(), sigmoid="logistic", steepness=10.0).matrix
    assert float(((P < 1e-7) | (P > 1 - 1e-7)).double().mean()) > 0.4


def test_ranking_loss_nan_rows_and_bool_targets():
    P = diffcomb.sorting_network(torch.tensor([[0.3, -1.0, 2.0], [1.0, 2.0, 0.0]])).matrix.clone()
    P[1, 0, 0] = math.nan
    loss = diffcomb.ranking_loss(P, torch.tensor([[1, 0, 2], [0, 1, 2]]), reduction="none")
    assert math.isnan(float(loss[1])) and math.isfinite(float(loss[0]))
    # P just outside [0, 1] by rounding is clamped (binary_cross_entropy would raise)
    assert_close(diffcomb.ranking_loss(torch.eye(2) * (1 + 1e-7) - 1e-9, torch.arange(2)), 0.0, atol=1e-6)
    # bool targets: False before True, stable
    Pb = diffcomb.sorting_network(torch.tensor([[0.5, -1.0, 2.0]])).matrix
    assert_close(diffcomb.ranking_loss(Pb, torch.tensor([[True, False, True]])),
                 diffcomb.ranking_loss(Pb, torch.tensor([[1, 0, 2]])), rtol=0, atol=0)


def test_renamed_outputs_gradcheck_opcheck_and_compile():
    # n = 11: a padded bitonic network whose outputs leave on renamed wires (index_select in the op)
    assert network_layout("bitonic", 11, "inf").permuted
    rng = rng_for("renamed")
    x = torch.tensor(separated_np(rng, (2, 11), min_gap=0.1), requires_grad=True)
    fn = lambda t: tuple(diffcomb.sorting_network(t, network="bitonic", sigmoid="cauchy", steepness=2.0,
                                                  bitonic_padding="inf"))
    assert gradcheck(fn, (x,), eps=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.diffcomb.sorting_network.default, (x, 1, 1, 4, 2.0, 0.25, True))
    targets = torch.tensor(rng.normal(size=(2, 11)))
    loss_fn = lambda t: diffcomb.ranking_loss(fn(t)[1], targets) + fn(t)[0].square().mean()
    assert_compiles_like_eager(loss_fn, x)


# ------------------------------------------------------------------------------------------------
# dim= (issue 15): the axis sorted, against movedim.


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_dim_matches_movedim(network, padding, descending):
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    kw = dict(network=network, bitonic_padding=padding, steepness=3.0, descending=descending)
    for dim in (0, 1, 2, -1, -2, -3):
        d = dim % 3
        xd = x.clone().requires_grad_(True)
        xm = x.clone().requires_grad_(True)
        r = diffcomb.sorting_network(xd, dim=dim, **kw)
        e = diffcomb.sorting_network(xm.movedim(d, -1), **kw)
        n = x.shape[d]
        assert r.values.shape == x.shape
        assert r.matrix.shape == (*x.shape[:d], n, n, *x.shape[d + 1:])
        assert_close(r.values, e.values.movedim(-1, d), rtol=0, atol=0)
        assert_close(r.matrix, e.matrix.movedim((-2, -1), (d, d + 1)), rtol=0, atol=0)
        # the gradients of the same loss, through either placement
        g_v = torch.randn(r.values.shape, generator=gen, dtype=torch.float64)
        g_P = torch.randn(r.matrix.shape, generator=gen, dtype=torch.float64)
        ((r.values * g_v).sum() + (r.matrix * g_P).sum()).backward()
        ((e.values * g_v.movedim(d, -1)).sum() + (e.matrix * g_P.movedim((d, d + 1), (-2, -1))).sum()).backward()
        assert_close(xd.grad, xm.grad, rtol=1e-12, atol=1e-14)


def test_dim_places_the_matrix_axes_at_dim():
    """matrix[b, i, k, c] of x (B, n, C) sorted along dim=1 is the matrix of the row x[b, :, c]."""
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    r = diffcomb.sorting_network(x, dim=1, network="bitonic", steepness=4.0)
    for b in range(2):
        for c in range(3):
            row = diffcomb.sorting_network(x[b, :, c], network="bitonic", steepness=4.0)
            assert_close(r.values[b, :, c], row.values, rtol=0, atol=0)
            assert_close(r.matrix[b, :, :, c], row.matrix, rtol=0, atol=0)
            s, p = ref.sorting_network(x[b, :, c].numpy(), "bitonic", "cauchy", 4.0)
            assert_close(r.matrix[b, :, :, c], p)
    # values = P^T x along the axis
    assert_close(r.values, torch.einsum("bikc,bic->bkc", r.matrix, x))


def test_dim_errors():
    x = torch.randn(3, 4)
    with pytest.raises(IndexError, match=r"sorting_network: dim=2 is out of range"):
        diffcomb.sorting_network(x, dim=2)
    with pytest.raises(TypeError, match="sorting_network: dim must be an int"):
        diffcomb.sorting_network(x, dim=1.0)
    with pytest.raises(TypeError, match="DiffSortNet: dim must be an int"):
        diffcomb.DiffSortNet("odd_even", 4, dim=None)
    with pytest.raises(ValueError, match=r"DiffSortNet: expected x of shape 4 along dim=0, got \(3, 4\)"):
        diffcomb.DiffSortNet("odd_even", 4, dim=0)(x)
    P = diffcomb.sorting_network(x, dim=0).matrix  # (3, 3, 4)
    with pytest.raises(IndexError, match=r"ranking_loss: dim=2 is out of range for target_ranks of 2"):
        diffcomb.ranking_loss(P, x, dim=2)
    with pytest.raises(ValueError, match=r"ranking_loss: P must have shape \(\.\.\., n, n\), got \(3, 3, 4\)"):
        diffcomb.ranking_loss(P, x, dim=-1)  # P's last two axes
    with pytest.raises(ValueError, match=r"P must have shape \(\.\.\., n, n\) along its axes 0 and 1, got \(3, 4, 4\)"):
        diffcomb.ranking_loss(torch.zeros(3, 4, 4), x, dim=0)
    with pytest.raises(ValueError, match=r"target_ranks must have shape \(3, 4\) \(P's shape without axis 1\)"):
        diffcomb.ranking_loss(P, x.t(), dim=0)
    with pytest.raises(TypeError, match="RankingLoss: dim must be an int"):
        diffcomb.RankingLoss(dim="0")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ranking_loss_dim_matches_movedim(reduction):
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    t = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    for dim in (0, 1, 2, -2):
        d = dim % 3
        xd = x.clone().requires_grad_(True)
        xm = x.clone().requires_grad_(True)
        P = diffcomb.sorting_network(xd, dim=dim, steepness=2.0).matrix
        ours = diffcomb.ranking_loss(P, t, reduction, dim=dim)
        Pm = diffcomb.sorting_network(xm.movedim(d, -1), steepness=2.0).matrix
        theirs = diffcomb.ranking_loss(Pm, t.movedim(d, -1), reduction)
        assert_close(ours, theirs, rtol=1e-14, atol=0)
        module = diffcomb.RankingLoss(reduction, dim=dim)
        assert f"dim={dim}" in repr(module)
        assert_close(module(P, t), ours, rtol=0, atol=0)
        ours.sum().backward()
        theirs.sum().backward()
        assert_close(xd.grad, xm.grad, rtol=1e-12, atol=1e-14)


def test_module_dim():
    gen = torch.Generator().manual_seed(18)
    x = torch.randn(4, 6, 2, generator=gen, dtype=torch.float64)
    sorter = diffcomb.DiffSortNet("odd_even", 6, steepness=5.0, dim=1)
    assert "dim=1" in repr(sorter)
    values, P = sorter(x)
    expected = diffcomb.sorting_network(x, network="odd_even", steepness=5.0, dim=1)
    assert_close(values, expected.values, rtol=0, atol=0)
    assert_close(P, expected.matrix, rtol=0, atol=0)


def test_dim_compile_fullgraph():
    gen = torch.Generator().manual_seed(19)
    x = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64)

    def loss_fn(t):
        r = diffcomb.sorting_network(t, dim=1, steepness=5.0)
        return diffcomb.ranking_loss(r.matrix, targets, dim=1) + r.values.square().mean()

    assert_compiles_like_eager(loss_fn, x)


# ------------------------------------------------------------------------------------------------
# The native boundary (issue 15): one layout of dL/dP per call, either orientation, no copy.


@pytest.mark.parametrize("network, padding, n", [("odd_even", "prune", 7), ("bitonic", "prune", 20),
                                                 ("bitonic", "inf", 11), ("bitonic", "inf", 40)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_takes_both_layouts_of_dL_dP(network, padding, n, dtype):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=gen, dtype=torch.float64).to(dtype)
    G = torch.randn(3, n, n, generator=gen, dtype=torch.float64).to(dtype)
    g = torch.randn(3, n, generator=gen, dtype=torch.float64).to(dtype)
    net, pad = NETWORKS.index(network), PADDINGS.index(padding)
    _, _, alpha = torch.ops.diffcomb.sorting_network(x, net, pad, 4, 3.0, 0.25, True)
    bwd = torch.ops.diffcomb.sorting_network_backward
    G_t = G.mT.contiguous().mT  # the same dL/dP, stored as Pt
    assert not G_t.is_contiguous() and G_t.mT.is_contiguous()
    for gv in (g, None):
        dx = bwd(x, alpha, gv, G, net, pad, 4, 3.0, 0.25)
        assert_close(bwd(x, alpha, gv, G_t, net, pad, 4, 3.0, 0.25), dx, rtol=0, atol=0)
    # through autograd: a gradient in P's layout ((P * G).sum()) and one in Pt's (a loss that
    # keeps P's strides, as ranking_loss does)
    _, _, dx1 = run(x, g, G, network=network, bitonic_padding=padding, steepness=3.0)
    x2 = x.clone().requires_grad_(True)
    r = diffcomb.sorting_network(x2, network=network, bitonic_padding=padding, steepness=3.0)
    ((r.values * g).sum() + (r.matrix * G_t).sum()).backward()
    assert_close(x2.grad, dx1, rtol=0, atol=0)
    ref_dx = bwd(x, alpha, g, G, net, pad, 4, 3.0, 0.25)
    assert_close(dx1, ref_dx, rtol=0, atol=0)


def test_native_structs_and_named_arguments():
    from diffcomb import _native

    C = _native.cpu()
    with pytest.raises(ValueError, match="Relaxation got sigmoid = 6"):
        C.Relaxation(6, 1.0, 0.25)
    with pytest.raises(ValueError, match="Relaxation got"):
        C.Relaxation(4, 0.0, 0.25)
    with pytest.raises(ValueError, match="Relaxation got"):
        C.Relaxation(4, 1.0, 1.5)
    with pytest.raises(ValueError, match="SortLayout got layers = -1"):
        C.SortLayout(0, 0, 8, 8, -1, 0)
    with pytest.raises(ValueError, match="SortLayout needs the addresses"):
        C.SortLayout(0, 0, 8, 8, 2, 3)
    relax = C.Relaxation(sigmoid=4, steepness=2.0, art_lambda=0.25)
    assert (relax.sigmoid, relax.steepness, relax.art_lambda) == (4, 2.0, 0.25)
    for entry in ("sortnet_forward", "sortnet_backward"):
        doc = getattr(C, entry).__doc__
        assert "layout: diffcomb._C.SortLayout" in doc and "relaxation: diffcomb._C.Relaxation" in doc
    # the entry points check what they are given before touching memory
    layout = C.SortLayout(lo=0, hi=0, offsets=8, reach=0, layers=0, comparators=0)
    with pytest.raises(ValueError, match="sortnet_forward got batch = -1"):
        C.sortnet_forward(x=0, values=0, alpha=0, Pt=0, batch=-1, n=3, dtype=0, layout=layout, relaxation=relax,
                          threads=1)
    with pytest.raises(ValueError, match="sortnet_backward needs x"):
        C.sortnet_backward(0, 0, 0, 0, False, 0, 2, 3, 0, layout, relax, 1)


def test_moved_names_stay_importable():
    import diffcomb.losses
    import diffcomb.nn
    import diffcomb.sortnet
    from diffcomb.sortnet import DiffSortNet, RankingLoss, ranking_loss

    assert DiffSortNet is diffcomb.nn.DiffSortNet is diffcomb.DiffSortNet
    assert RankingLoss is diffcomb.nn.RankingLoss is diffcomb.RankingLoss
    assert ranking_loss is diffcomb.losses.ranking_loss is diffcomb.ranking_loss
    assert {"DiffSortNet", "RankingLoss"} <= set(diffcomb.nn.__all__)
    assert "ranking_loss" in diffcomb.losses.__all__
    assert diffcomb.sortnet.SIGMOIDS == tuple(SIGMOIDS) and diffcomb.sortnet.NETWORKS == tuple(NETWORKS)
    with pytest.raises(AttributeError):
        diffcomb.sortnet.not_a_name


# ------------------------------------------------------------------------------------------------
# torch.func beyond the op x mode matrix (tests/autodiff_cases/sortnet.py).


def _sorted_rows(gen, *shape):
    ranks = torch.argsort(torch.rand(*shape, generator=gen, dtype=torch.float64), dim=-1)
    return 0.5 * ranks + 0.1 * torch.rand(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("network,padding", LAYOUTS)
def test_per_sample_gradients_and_hessians(network, padding):
    gen = torch.Generator().manual_seed(21)
    x = _sorted_rows(gen, 4, 2, 7)
    w = torch.randn(7, 7, generator=gen, dtype=torch.float64)

    def loss(t):
        r = diffcomb.sorting_network(t, network=network, bitonic_padding=padding, sigmoid="cauchy", steepness=2.0)
        return (r.values * w[0]).sum() + (r.matrix * w).sum()

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")  # a batching rule, no fallback
        per_sample = torch.vmap(torch.func.grad(loss))(x)
        hessians = torch.vmap(torch.func.hessian(loss))(x)
    assert_close(per_sample, torch.stack([torch.func.grad(loss)(t) for t in x]))
    rev_rev = torch.stack([torch.func.jacrev(torch.func.jacrev(loss))(t) for t in x])
    rev_fwd = torch.stack([torch.func.jacrev(torch.func.jacfwd(loss))(t) for t in x])
    assert_close(hessians, rev_rev)
    assert_close(rev_fwd, rev_rev)
    # forward over forward: torch drops the outer tangent of a custom Function's jvp; a clear error
    with pytest.raises(RuntimeError, match="diffcomb.sorting_network: forward mode over forward mode"):
        torch.func.jacfwd(torch.func.jacfwd(loss))(x[0])
    assert_close(hessians, hessians.permute(0, 3, 4, 1, 2), atol=1e-12, rtol=0)  # symmetric


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_tangent_recurrences_match_the_kernels(sigmoid):
    """diffcomb/_sortnet_tangent.py replays the network in torch ops: its forward mode gives the
    kernels' Jacobian (jacfwd = jacrev), and its Hessian-vector product the finite difference of
    the kernels' VJP."""
    from diffcomb import _sortnet_tangent
    from diffcomb._sortnet_ops import BACKWARD, SIGMOIDS as CODES, SORTING_NETWORK

    gen = torch.Generator().manual_seed(zlib.crc32(sigmoid.encode()))
    x = _sorted_rows(gen, 3, 6)
    params = (1, 1, CODES.index(sigmoid), 1.5, 0.3)  # bitonic, padded with +inf: renamed outputs
    gv = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    gP = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    u = torch.randn(3, 6, generator=gen, dtype=torch.float64)

    def vjp(t):
        alpha = SORTING_NETWORK(t, *params, True)[2]
        return BACKWARD(t, alpha, gv, gP, *params)

    h = 1e-6
    expected = (vjp(x + h * u) - vjp(x - h * u)) / (2 * h)
    assert_close(_sortnet_tangent.hvp(x, u, gv, gP, *params), expected, rtol=1e-6, atol=1e-7)
    tv, tPt = _sortnet_tangent.jvp(x, u, *params, True)
    values, Pt, _ = SORTING_NETWORK(x, *params, True)
    plus, minus = SORTING_NETWORK(x + h * u, *params, True), SORTING_NETWORK(x - h * u, *params, True)
    assert_close(tv, (plus[0] - minus[0]) / (2 * h), rtol=1e-6, atol=1e-7)
    assert_close(tPt, (plus[1] - minus[1]) / (2 * h), rtol=1e-6, atol=1e-7)
