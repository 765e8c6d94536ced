// Grid shortest path on the CPU: Dijkstra with a binary heap (cpu_grid.h).
#include <cstdint>
#include <vector>

#include "cpu_grid.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {

namespace {

// Min-heap of (dist, hops, vertex) entries stored inline. Vertex weights make
// a vertex's label final when it is first reached: every later candidate
// comes from a vertex settled later, whose label is not smaller, plus the same
// weight. So each vertex is pushed once and there is no decrease-key. Pops
// use the bottom-up sift (move the hole to a leaf along the smaller children,
// then sift the last entry up), which saves comparisons.
struct LabelHeap {
  HeapEntry* heap;
  int32_t size = 0;

  static bool less(const HeapEntry& a, const HeapEntry& b) { return label_less(a.dist, a.hops, b.dist, b.hops); }
  void sift_up(int32_t at, const HeapEntry& e) {
    while (at > 0) {
      const int32_t parent = (at - 1) / 2;
      if (!less(e, heap[parent])) break;
      heap[at] = heap[parent];
      at = parent;
    }
    heap[at] = e;
  }
  void push(const HeapEntry& e) { sift_up(size++, e); }
  HeapEntry pop() {
    const HeapEntry top = heap[0];
    const HeapEntry last = heap[--size];
    if (size == 0) return top;
    int32_t at = 0;
    while (true) {
      int32_t child = 2 * at + 1;
      if (child >= size) break;
      if (child + 1 < size && less(heap[child + 1], heap[child])) ++child;
      heap[at] = heap[child];
      at = child;
    }
    sift_up(at, last);
    return top;
  }
};

}  // namespace

// Binary-heap Dijkstra (any weights >= 0, zeros included).
void grid_heap(const int32_t* offset, int32_t source, int32_t target, GridScratch& g) {
  double* dist = g.dist.data();
  int32_t* hops = g.hops.data();
  int8_t* state = g.state.data();
  const double* weight = g.weight.data();
  LabelHeap heap{g.heap.data()};
  dist[source] = weight[source];
  hops[source] = 1;
  state[source] = 1;
  heap.push({dist[source], 1, source});
  while (heap.size > 0) {
    const int32_t v = heap.pop().v;
    state[v] = 2;
    if (v == target) return;
    const double dv = dist[v];
    const int32_t hv = hops[v] + 1;
    for (int d = 0; d < 8; ++d) {
      const int32_t u = v + offset[d];
      if (state[u] != 0) continue;  // settled, blocked, or already reached (its label is final)
      dist[u] = dv + weight[u];
      hops[u] = hv;
      state[u] = 1;
      heap.push({dist[u], hv, u});
    }
  }
}

}  // namespace perturb
}  // namespace diffcomb
