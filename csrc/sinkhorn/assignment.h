// Linear assignment (maximum-weight perfect matching of a square score
// matrix) by the Hungarian method with potentials and shortest augmenting
// paths, O(n^3): the hard permutation of gumbel_sinkhorn(hard=True)
// (SPEC 4.6 and 6.1 item 5). Host only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace diffcomb {
namespace sinkhorn {

struct AssignmentScratch {
  std::vector<double> u, v, minv;
  std::vector<int64_t> p, way;
  std::vector<char> used;
};

// perm[i] = column matched to row i, maximizing sum_i X[i, perm[i]];
// perm = -1 everywhere when X has a non-finite entry.
template <class T>
void max_weight_assignment(const T* X, int64_t n, int64_t* perm, AssignmentScratch& s) {
  for (int64_t k = 0; k < n * n; ++k) {
    if (!std::isfinite(double(X[k]))) {
      for (int64_t i = 0; i < n; ++i) perm[i] = -1;
      return;
    }
  }
  const double inf = std::numeric_limits<double>::infinity();
  // Rows and columns 1..n; column 0 is the virtual start. Cost = -X (minimized).
  s.u.assign(n + 1, 0.0);
  s.v.assign(n + 1, 0.0);
  s.p.assign(n + 1, 0);
  s.way.assign(n + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    s.p[0] = i;
    int64_t j0 = 0;
    s.minv.assign(n + 1, inf);
    s.used.assign(n + 1, 0);
    do {
      s.used[j0] = 1;
      const int64_t i0 = s.p[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= n; ++j) {
        if (s.used[j]) continue;
        const double cur = -double(X[(i0 - 1) * n + (j - 1)]) - s.u[i0] - s.v[j];
        if (cur < s.minv[j]) {
          s.minv[j] = cur;
          s.way[j] = j0;
        }
        if (s.minv[j] < delta) {
          delta = s.minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (s.used[j]) {
          s.u[s.p[j]] += delta;
          s.v[j] -= delta;
        } else {
          s.minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (s.p[j0] != 0);
    do {
      const int64_t j1 = s.way[j0];
      s.p[j0] = s.p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  for (int64_t j = 1; j <= n; ++j) perm[s.p[j] - 1] = j - 1;
}

}  // namespace sinkhorn
}  // namespace diffcomb
