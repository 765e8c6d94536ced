// One soft-DTW pair on the anti-diagonal layout (softdtw.h, "Layout"): which
// cells a pair uses (lengths, band), where each diagonal is stored, the
// arrays and their pads, the step between the forward and the backward, and
// the square tiles that both devices sweep along tile anti-diagonals. The
// CPU driver (cpu.cpp) and the CUDA driver (cuda.cu) share all of it; they
// only choose who runs which rows of a diagonal.
#pragma once

#include <cstdint>

#include "../common/common.h"

namespace diffcomb {
namespace softdtw {

// The used length of pair b: lengths[b] (nullptr: full), kept within [1, full]
// so that no length can take the kernels outside a pair's memory. Python
// checks the range and raises; under torch.compile it cannot (that would be a
// host sync), and an out-of-range length is clamped here instead.
DC_HOST_DEVICE DC_INLINE int64_t used_length(const int64_t* lengths, int64_t b, int64_t full) {
  if (lengths == nullptr) return full;
  const int64_t l = lengths[b];
  return l < 1 ? 1 : (l > full ? full : l);
}

struct Diagonals {
  int64_t mb, nb;  // used lengths
  int64_t band;    // < 0: none

  // The problem of used lengths mb, nb under band b. A band at least as wide
  // as the longer side excludes nothing and becomes "none", which also keeps
  // k + band and k - band below within int64 for any band (a band near
  // INT64_MAX would otherwise overflow them).
  DC_HOST_DEVICE DC_INLINE static Diagonals of(int64_t mb, int64_t nb, int64_t band) {
    const int64_t longer = mb > nb ? mb : nb;
    return {mb, nb, band >= longer ? int64_t(-1) : band};
  }

  // floor(x / 2) for any sign.
  DC_HOST_DEVICE DC_INLINE static int64_t floor_half(int64_t x) { return x >= 0 ? x / 2 : -((1 - x) / 2); }

  DC_HOST_DEVICE DC_INLINE int64_t last() const { return mb + nb; }
  // A band narrower than |mb - nb| leaves (mb, nb) unreachable (SPEC 3.4).
  DC_HOST_DEVICE DC_INLINE bool feasible() const {
    const int64_t d = mb > nb ? mb - nb : nb - mb;
    return band < 0 || band >= d;
  }
  // Rows i of diagonal k: lo(k) <= i <= hi(k) (empty when lo > hi). Both
  // grow by 0 or 1 per diagonal, which keeps every neighbour read of a
  // sweep inside the neighbouring diagonal or on one of its pads.
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
  // Row i's columns inside the band and the used block (1-based, inclusive).
  DC_HOST_DEVICE DC_INLINE int64_t first_col(int64_t i) const { return band < 0 || i - band < 1 ? 1 : i - band; }
  DC_HOST_DEVICE DC_INLINE int64_t last_col(int64_t i) const { return band < 0 || i + band > nb ? nb : i + band; }
  DC_HOST_DEVICE DC_INLINE int64_t first_row(int64_t j) const { return band < 0 || j - band < 1 ? 1 : j - band; }
  DC_HOST_DEVICE DC_INLINE int64_t last_row(int64_t j) const { return band < 0 || j + band > mb ? mb : j + band; }
  // Stored cells (pads included) of all diagonals: the size of each array.
  DC_HOST_DEVICE int64_t size() const {
    int64_t size = 0;
    for (int64_t k = 0; k <= last() + 1; ++k) size += length(k) + 2;
    return size;
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

// The pairs of a batch: full sizes m x n, optional used lengths (B) and
// the band (< 0: none); pair(b) is the geometry of pair b.
struct Problem {
  const int64_t* lengths_x;
  const int64_t* lengths_y;
  int64_t m, n, band;
  DC_HOST_DEVICE DC_INLINE Diagonals pair(int64_t b) const {
    return Diagonals::of(used_length(lengths_x, b, m), used_length(lengths_y, b, n), band);
  }
};

// The arrays of one pair (softdtw.h, "Arrays") and its diagonal offsets; or
// of a group of `lanes` pairs of the same geometry (cpu_lanes.cpp), stored
// interleaved: cell (k, i) of the group's pair l at (start[k] + i) * lanes +
// l, so that a diagonal of the group is one contiguous run of lanes * length
// values, pads included (each pad slot is `lanes` values).
struct Arrays {
  double* A;
  double* B;
  double* D;  // second order only (else null)
  double* Z;  // second order only (else null)
  const int64_t* start;
  int64_t lanes = 1;
};

// The two pads of diagonal k: +inf in A and B (an unreachable predecessor, a
// masked successor), 0 in D and Z.
DC_HOST_DEVICE DC_INLINE void set_pads(const Arrays& a, const Diagonals& g, int64_t k) {
  const int64_t pads[2] = {a.start[k] + g.lo(k) - 1, a.start[k] + g.hi(k) + 1};
  for (int64_t slot : pads) {
    for (int64_t p = slot * a.lanes; p < (slot + 1) * a.lanes; ++p) {
      a.A[p] = a.B[p] = INFINITY;
      if (a.D) a.D[p] = a.Z[p] = 0.0;
    }
  }
}

// The origin R[0][0] = 0 (and its tangent 0) on diagonal 0; not a pad slot.
DC_HOST_DEVICE DC_INLINE void set_origin(const Arrays& a) {
  for (int64_t p = a.start[0] * a.lanes; p < (a.start[0] + 1) * a.lanes; ++p) {
    a.A[p] = 0.0;
    if (a.D) a.D[p] = a.Z[p] = 0.0;
  }
}

// The results of a forward: R[mb][nb] and, second order, dR[mb][nb].
struct Ends {
  double value;
  double tangent;
};

// Between the passes: reads the forward's results at (mb, nb) (of the pair
// in lane `lane`) and seeds the backward there, E[mb][nb] = 1 and dE[mb][nb] = 0.
DC_HOST_DEVICE DC_INLINE Ends finish_forward(const Arrays& a, const Diagonals& g, int64_t lane = 0) {
  const int64_t end = (a.start[g.last()] + g.mb) * a.lanes + lane;
  Ends ends{a.A[end], 0.0};
  a.A[end] = 1.0;
  if (a.D) {
    ends.tangent = a.D[end];
    a.D[end] = 0.0;
  }
  return ends;
}

// Square tiles of side `side` over an m x n block, walked along tile
// anti-diagonals t = ti + tj = 0 .. count() - 1: the tiles of one tile
// diagonal are independent (each reads only finished tiles above and left of
// it in the forward, below and right in the backward).
struct Tiles {
  int64_t side, rows, cols;  // tile side; tiles along m and along n
  DC_HOST_DEVICE DC_INLINE static Tiles of(int64_t m, int64_t n, int64_t side) {
    return {side, (m + side - 1) / side, (n + side - 1) / side};
  }
  DC_HOST_DEVICE DC_INLINE int64_t count() const { return rows + cols - 1; }
  // The tile rows ti of tile diagonal t: first(t) <= ti <= last(t).
  DC_HOST_DEVICE DC_INLINE int64_t first(int64_t t) const { return t - (cols - 1) > 0 ? t - (cols - 1) : 0; }
  DC_HOST_DEVICE DC_INLINE int64_t last(int64_t t) const { return t < rows - 1 ? t : rows - 1; }
};

// Tile (ti, tj) of a pair: rows [i0, i1] x columns [j0, j1] of its used
// block (empty when the pair is shorter than the tile grid), swept diagonal
// by diagonal: diagonals first() .. last() forward, last_backward() ..
// first() backward (the end cell (mb, nb) has no successor to pull from).
struct Tile {
  int64_t i0, i1, j0, j1;
  DC_HOST_DEVICE DC_INLINE static Tile at(const Diagonals& g, int64_t side, int64_t ti, int64_t tj) {
    const int64_t i1 = (ti + 1) * side, j1 = (tj + 1) * side;
    return {ti * side + 1, i1 < g.mb ? i1 : g.mb, tj * side + 1, j1 < g.nb ? j1 : g.nb};
  }
  DC_HOST_DEVICE DC_INLINE bool empty() const { return i0 > i1 || j0 > j1; }
  DC_HOST_DEVICE DC_INLINE int64_t first() const { return i0 + j0; }
  DC_HOST_DEVICE DC_INLINE int64_t last() const { return i1 + j1; }
  DC_HOST_DEVICE DC_INLINE int64_t last_backward(const Diagonals& g) const {
    return last() < g.last() - 1 ? last() : g.last() - 1;
  }
  // The rows of diagonal k inside the tile: lo(g, k) <= i <= hi(g, k).
  DC_HOST_DEVICE DC_INLINE int64_t lo(const Diagonals& g, int64_t k) const {
    const int64_t a = g.lo(k) > i0 ? g.lo(k) : i0;
    return a > k - j1 ? a : k - j1;
  }
  DC_HOST_DEVICE DC_INLINE int64_t hi(const Diagonals& g, int64_t k) const {
    const int64_t a = g.hi(k) < i1 ? g.hi(k) : i1;
    return a < k - j0 ? a : k - j0;
  }
};

}  // namespace softdtw
}  // namespace diffcomb
