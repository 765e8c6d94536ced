"""Suite ``topk``: plain-PyTorch contenders for the sparse soft top-k (benchmark code, not library
code; diffcomb.sparse_soft_topk is what they are compared with).

The mask is ``m = argmax_{y in [0,1]^n, sum y = k} <y, z> - (1/p) sum |y|^p`` with ``z = x / eps``
(the permutahedron of (1,..,1,0,..,0) is this capped simplex), so
``m_i = clip(psi(z_i - tau), 0, 1)``, ``psi(u) = sign(u)|u|^{1/(p-1)}``, with ``tau`` making the
entries sum to k. Both contenders find ``tau`` and differentiate through it by the implicit
function theorem (``dtau = sum_A a dz / sum_A a`` over the active set ``A = {0 < m < 1}``,
``a = psi'``), which autograd applies when ``tau`` is written as
``tau* + sum(a (z - z.detach())) / sum(a)``:

- ``threshold_topk``: the best PyTorch alternative we know of: batched bisection on ``tau``
  (``iters`` halvings of the bracket ``[min z - 1, max z]``, enough for the dtype's precision),
  O(n) per halving, every op a batched torch kernel (CPU or GPU).
- ``onehot_topk``: the O(n^2) reference, a faithful port of the structure of the published
  JAX code and of its PyTorch ports: the sort and unsort are products with a one-hot permutation
  matrix ``P (batch, n, n)`` (``s = P z``, ``m = P^T f(s)``), whose autograd backward is O(n^2)
  too; the sorted-domain solve is ``threshold_topk``.
- ``hard_topk``: the floor, ``torch.topk`` scattered back (x on the top k, 0 elsewhere).
"""

from __future__ import annotations

import torch

__all__ = ["threshold_topk", "onehot_topk", "hard_topk", "ONEHOT_MAX_BYTES"]

# The one-hot permutation matrix and its autograd copy: skip workloads beyond this many bytes.
ONEHOT_MAX_BYTES = 2 << 30


def _psi(u: torch.Tensor, r: float) -> torch.Tensor:
    return u if r == 1.0 else u.sign() * u.abs().pow(r)


def _dpsi(u: torch.Tensor, r: float) -> torch.Tensor:
    return torch.ones_like(u) if r == 1.0 else r * u.abs().pow(r - 1.0)


def threshold_topk(x: torch.Tensor, k: int, eps: float, p: float, iters: int = 0) -> torch.Tensor:
    """The sparse soft top-k mask of the rows of x (last axis) by bisection on the threshold."""
    r = 1.0 / (p - 1.0)
    iters = iters or (64 if x.dtype == torch.float64 else 32)
    z = x / eps
    with torch.no_grad():
        zd = z.detach()
        lo = zd.amin(-1, keepdim=True) - 1.0  # every entry 1: the sum is n >= k
        hi = zd.amax(-1, keepdim=True)  # every entry 0: the sum is 0 <= k
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = _psi(zd - mid, r).clamp(0.0, 1.0).sum(-1, keepdim=True) > k
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        tau = 0.5 * (lo + hi)
        u = zd - tau
        m = _psi(u, r)
        a = torch.where((m > 0) & (m < 1), _dpsi(u, r), torch.zeros_like(u))
        total = a.sum(-1, keepdim=True)
        a = a / torch.where(total > 0, total, torch.ones_like(total))
    tau = tau + (a * (z - zd)).sum(-1, keepdim=True)  # = tau in value; the implicit gradient
    return _psi(z - tau, r).clamp(0.0, 1.0)


def onehot_topk(x: torch.Tensor, k: int, eps: float, p: float) -> torch.Tensor:
    """threshold_topk between products with a one-hot permutation matrix: O(n^2) per row."""
    n = x.shape[-1]
    perm = torch.argsort(x.detach(), dim=-1, descending=True, stable=True)
    P = torch.nn.functional.one_hot(perm, n).to(x.dtype)  # P[b, i, j] = [perm[b, i] = j]
    s = (P @ x.unsqueeze(-1)).squeeze(-1)
    m = threshold_topk(s, k, eps, p)
    return (P.transpose(-1, -2) @ m.unsqueeze(-1)).squeeze(-1)


def hard_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = torch.topk(x, k, dim=-1)
    return torch.zeros_like(x).scatter(-1, indices, values)
