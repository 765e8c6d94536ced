// The CPU's exact grid shortest-path solvers (SPEC.md 6.1 item 4; labels and
// backtrack in perturb.h): Dijkstra on (dist, hops) labels over a grid padded
// by one ring of blocked cells, so the neighbour loop has no bounds checks,
// with one of two queues:
//   cpu_grid_buckets.cpp  bucket queue (Dinitz), when every weight is > 0
//   cpu_grid_heap.cpp     binary heap, any weights >= 0
// cpu_grid_sweep.cpp runs the vectorized label-correcting sweeps first and
// calls grid_dijkstra (there) for the grids they do not settle.
//
// Padded layout: stride = Wd + 2, np = (H + 2) * stride cells; cell p of the
// interior is vertex (p / stride - 1, p % stride - 1); offset[d] is the
// padded index step of neighbour d (perturb.h's fixed order).
#pragma once

#include <cstdint>
#include <vector>

namespace diffcomb {
namespace perturb {

struct HeapEntry {
  double dist;
  int32_t hops;
  int32_t v;
};

// Scratch of one thread, reused across grids. On entry to a solver: weight
// (clamped, 0 on the border after grid_buckets), dist = inf, hops = large,
// state = 0 inside and 2 on the border; on return, the labels of the
// settled vertices (state 2) are final.
struct GridScratch {
  std::vector<double> weight, dist, out_dist;
  std::vector<int32_t> hops, out_hops, bucket_head, entry_next, entry_vertex;
  std::vector<HeapEntry> heap;
  std::vector<int8_t> state;  // 0 unseen, 1 reached, 2 settled or blocked
};

// Bucket-queue Dijkstra from source until target is settled. Returns false
// (and changes nothing) when the weights do not allow it (w_min <= 0, or more
// buckets than a few per vertex for the bound `upper` on the target's distance).
bool grid_buckets(const int32_t* offset, int32_t source, int32_t target, int32_t np, double w_min, double upper,
                  GridScratch& g);

// Binary-heap Dijkstra from source until target is settled.
void grid_heap(const int32_t* offset, int32_t source, int32_t target, GridScratch& g);

}  // namespace perturb
}  // namespace diffcomb
