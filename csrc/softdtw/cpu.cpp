// Batched CPU kernels of soft-DTW: OpenMP over the pairs of a batch, the cell
// math from softdtw.h. (A first, scalar version: the vectorized anti-diagonal
// layout of DESIGN.md's performance notes is the next step.)
#include <algorithm>
#include <cstring>

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

template <class T>
Problem<T> make_problem(std::uintptr_t C, std::uintptr_t R, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                        int64_t b, int64_t m, int64_t n, double gamma, int64_t band) {
  const int64_t mb = lengths_x ? as_ptr<const int64_t>(lengths_x)[b] : m;
  const int64_t nb = lengths_y ? as_ptr<const int64_t>(lengths_y)[b] : n;
  return Problem<T>{as_ptr<const T>(C) + b * m * n, n, as_ptr<T>(R) + b * (m + 1) * (n + 1), n + 1, mb, nb,
                    gamma, band};
}

}  // namespace

void forward_cpu(std::uintptr_t C, std::uintptr_t R, std::uintptr_t value, std::uintptr_t lengths_x,
                 std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma, int64_t band,
                 int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 20 * m * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(C, R, lengths_x, lengths_y, b, m, n, gamma, band);
        std::fill_n(problem.R, (m + 1) * (n + 1), T(INFINITY));
        as_ptr<T>(value)[b] = T(problem.forward());
      }
    });
  });
}

void backward_cpu(std::uintptr_t C, std::uintptr_t R, std::uintptr_t grad, std::uintptr_t E,
                  std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                  double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 20 * m * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(C, R, lengths_x, lengths_y, b, m, n, gamma, band);
        T* e = as_ptr<T>(E) + b * m * n;
        std::memset(e, 0, sizeof(T) * m * n);
        problem.backward(double(as_ptr<const T>(grad)[b]), e, n);
      }
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
