// Grid shortest path on the CPU: Dijkstra with a bucket queue (cpu_grid.h).
#include <cstdint>
#include <vector>

#include "cpu_grid.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {

// Bucketed Dijkstra (Dinitz): with every weight >= w_min > 0, buckets of width
// delta = w_min / 2 hold vertices whose labels cannot improve each other (an
// improvement adds at least w_min, i.e. two buckets even after rounding), so
// buckets are settled in order and the vertices of one bucket in any order.
// A vertex may be reached again from a later-settled vertex of an earlier
// bucket with a smaller label: it is then relabelled and re-queued (stale
// entries are skipped). Returns false (and changes nothing) when the bucket count
// would exceed a few per vertex; the caller then uses the heap.
bool grid_buckets(const int32_t* offset, int32_t source, int32_t target, int32_t np, double w_min, double upper,
                  GridScratch& g) {
  if (!(w_min > 0.0)) return false;
  const double inv_delta = 2.0 / w_min;
  const double nb = upper * inv_delta + 2.0;
  if (!(nb < 8.0 * np)) return false;
  const int64_t nbuckets = static_cast<int64_t>(nb) + 1;
  g.bucket_head.assign(nbuckets, -1);
  g.entry_next.resize(8 * int64_t(np) + 1);
  g.entry_vertex.resize(8 * int64_t(np) + 1);
  double* dist = g.dist.data();
  int32_t* hops = g.hops.data();
  int8_t* state = g.state.data();
  const double* weight = g.weight.data();
  int32_t* head = g.bucket_head.data();
  int32_t* next = g.entry_next.data();
  int32_t* vertex = g.entry_vertex.data();
  int32_t entries = 0;
  auto bucket_of = [&](double d) { return static_cast<int64_t>(d * inv_delta); };
  auto enqueue = [&](int32_t v) {
    const int64_t b = bucket_of(dist[v]);
    if (b >= nbuckets) return;  // beyond the bound on the target's distance: never needed
    vertex[entries] = v;
    next[entries] = head[b];
    head[b] = entries++;
  };
  dist[source] = weight[source];
  hops[source] = 1;
  state[source] = 1;
  enqueue(source);
  // Blocked border cells are never relaxed, but the branch-free loop reads their weight.
  for (int32_t p = 0; p < np; ++p) {
    if (state[p] == 2) g.weight[p] = 0.0;
  }
  for (int64_t b = 0; b < nbuckets; ++b) {
    for (int32_t e = head[b]; e >= 0;) {
      const int32_t v = vertex[e];
      e = next[e];
      if (state[v] == 2 || bucket_of(dist[v]) != b) continue;  // settled, or a stale entry
      state[v] = 2;
      if (v == target) return true;
      const double dv = dist[v];
      const int32_t hv = hops[v] + 1;
      // Branch-free relaxation (the outcomes are data-dependent coin flips): an
      // improved neighbour is relabelled and appended to its bucket; otherwise
      // the same values are written back. At most 8 entries per settled vertex:
      // the arrays hold 8 np + 1.
      for (int d = 0; d < 8; ++d) {
        const int32_t u = v + offset[d];
        const int8_t su = state[u];
        const double cand = dv + weight[u];
        const double du = dist[u];
        const int32_t hu = hops[u];
        const bool better = (cand < du) | ((cand == du) & (hv < hu));
        const bool improve = (su == 0) | ((su == 1) & better);
        dist[u] = improve ? cand : du;
        hops[u] = improve ? hv : hu;
        state[u] = improve ? int8_t(1) : su;
        const int64_t raw = bucket_of(improve ? cand : 0.0);
        const bool queued = improve & (raw < nbuckets);
        const int64_t b = queued ? raw : 0;
        vertex[entries] = u;
        next[entries] = head[b];
        head[b] = queued ? entries : head[b];
        entries += queued ? 1 : 0;
      }
    }
  }
  return true;
}

}  // namespace perturb
}  // namespace diffcomb
