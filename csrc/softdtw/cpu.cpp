// Batched CPU kernels of soft-DTW: OpenMP over the pairs of a batch, the cell
// math from softdtw.h. (A first, scalar version: the vectorized anti-diagonal
// layout of DESIGN.md's performance notes is the next step.)
#include <algorithm>
#include <cstring>
#include <vector>

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
Problem<T> make_problem(std::uintptr_t C, std::uintptr_t P, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                        int64_t b, int64_t m, int64_t n, double gamma, int64_t band) {
  const int64_t mb = lengths_x ? as_ptr<const int64_t>(lengths_x)[b] : m;
  const int64_t nb = lengths_y ? as_ptr<const int64_t>(lengths_y)[b] : n;
  return Problem<T>{as_ptr<const T>(C) + b * m * n, n, as_ptr<T>(P) + b * m * n * 3, 3 * n, mb, nb, gamma, band};
}

}  // namespace

void forward_cpu(std::uintptr_t C, std::uintptr_t P, std::uintptr_t value, std::uintptr_t lengths_x,
                 std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma, int64_t band,
                 int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 20 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> rows(2 * (n + 1));
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(C, P, lengths_x, lengths_y, b, m, n, gamma, band);
        std::fill_n(problem.P, m * n * 3, T(0));
        as_ptr<T>(value)[b] = T(problem.forward(rows.data(), rows.data() + n + 1));
      }
    });
  });
}

void backward_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t grad, std::uintptr_t E,
                  std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                  int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 4 * m * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, 0.0, band);
        T* e = as_ptr<T>(E) + b * m * n;
        std::fill_n(e, m * n, T(0));
        problem.backward(double(as_ptr<const T>(value)[b]), double(as_ptr<const T>(grad)[b]), e, n);
      }
    });
  });
}

void second_order_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t Z, std::uintptr_t jvp,
                      std::uintptr_t E, std::uintptr_t HZ, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                      int64_t batch, int64_t m, int64_t n, double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 8 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> dR((m + 1) * (n + 1)), e(m * n), hz(m * n);
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, gamma, band);
        const double d = problem.second_order(double(as_ptr<const T>(value)[b]), as_ptr<const T>(Z) + b * m * n,
                                              n, dR.data(), e.data(), hz.data());
        as_ptr<T>(jvp)[b] = T(d);
        T* e_out = as_ptr<T>(E) + b * m * n;
        T* hz_out = as_ptr<T>(HZ) + b * m * n;
        std::fill_n(e_out, m * n, T(0));
        std::fill_n(hz_out, m * n, T(0));
        for (int64_t i = 0; i < problem.mb; ++i) {
          for (int64_t j = 0; j < problem.nb; ++j) {
            e_out[i * n + j] = T(e[i * problem.nb + j]);
            hz_out[i * n + j] = T(hz[i * problem.nb + j]);
          }
        }
      }
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
