// Linear assignment on the CPU (SPEC.md 6.1 item 5): one matrix per thread,
// perturb.h's shortest augmenting path solver in float64 on the costs
// (transposed so that rows <= columns), entry point linear_assignment_cpu (api.h).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "checks.h"
#include "cpu_util.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {

void linear_assignment_cpu(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m,
                           bool maximize, int dtype, int threads) {
  check_assignment(cost, out, rows, n, m, dtype);
  if (rows == 0 || n == 0 || m == 0) return;
  const bool transpose = n > m;
  const int32_t nr = static_cast<int32_t>(transpose ? m : n), nc = static_cast<int32_t>(transpose ? n : m);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* cs = as_ptr<const T>(cost);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, n * m * std::min(n, m), [&](int64_t begin, int64_t end) {
      std::vector<double> c(int64_t(nr) * nc), u(nr + 1), v(nc + 1), minv(nc + 1);
      std::vector<int32_t> p(nc + 1), way(nc + 1), col(nr);
      std::vector<int8_t> used(nc + 1);
      const AssignmentState state{u.data(), v.data(), minv.data(), p.data(), way.data(), used.data()};
      const double sign = maximize ? -1.0 : 1.0;
      for (int64_t r = begin; r < end; ++r) {
        const T* cr = cs + r * n * m;
        T* orow = os + r * n * m;
        std::fill(orow, orow + n * m, T(0));
        if (!all_finite(cr, n * m)) {
          fill_nan(orow, n * m);
          continue;
        }
        bool huge = false;
        for (int64_t e = 0; e < n * m; ++e) huge |= assignment_huge(double(cr[e]));
        const double factor = huge ? sign * kAssignmentScale : sign;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            const double value = factor * double(cr[i * m + j]);
            if (transpose) {
              c[j * n + i] = value;
            } else {
              c[i * m + j] = value;
            }
          }
        }
        solve_assignment(c.data(), nr, nc, state, col.data());
        for (int32_t i = 0; i < nr; ++i) {
          if (transpose) {
            orow[int64_t(col[i]) * m + i] = T(1);
          } else {
            orow[int64_t(i) * m + col[i]] = T(1);
          }
        }
      }
    });
  });
}

}  // namespace perturb
}  // namespace diffcomb
