// The Sinkhorn family's boundary checks (common.h, check_entry): one function
// per op, called first by its CPU (cpu.cpp) and CUDA (cuda.cu) entry points
// with the op arguments of api.h. Optional arrays (the iterate history of the
// forward, G and gcost of the backwards) may be 0; every other array is
// required when the problem is not empty.
#pragma once

#include <cstdint>

#include "../common/common.h"

namespace diffcomb {
namespace sinkhorn {

inline void check_problem(const char* entry, int64_t batch, int64_t n, int64_t m, double eps, int dtype) {
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {});
  check_code(entry, "dtype", dtype, kDTypeCount);
  if (!(eps > 0.0)) entry_error(entry, "eps = " + std::to_string(eps) + " must be positive");
}

inline void check_forward(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                          std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                          int64_t batch, int64_t n, int64_t m, double eps, int64_t max_iter, int64_t check_every,
                          int dtype) {
  const char* entry = "sinkhorn_forward";
  check_problem(entry, batch, n, m, eps, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}},
              {{"C", C}, {"a", a}, {"b", b}, {"P", P}, {"f", f}, {"g", g}, {"cost", cost}, {"n_iter", n_iter},
               {"err", err}});
  check_range(entry, "max_iter", max_iter, 0, INT64_MAX);
  check_range(entry, "check_every", check_every, 1, INT64_MAX);
}

// The per problem options of the extended entry points (sinkhorn.h, Options):
// a (batch, kParams) float64 array, required when the problem is not empty
// (its values are the caller's: Python checks them before the call).
inline void check_params(const char* entry, std::uintptr_t params, int64_t batch, int64_t n, int64_t m) {
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {{"params", params}});
}

inline void check_scaling(const char* entry, double scaling) {
  if (!(scaling > 0.0 && scaling <= 1.0)) {
    entry_error(entry, "scaling = " + std::to_string(scaling) + " is outside (0, 1]");
  }
}

inline void check_forward_ext(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                              std::uintptr_t f, std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter,
                              std::uintptr_t err, std::uintptr_t params, double scaling, int64_t batch, int64_t n,
                              int64_t m, int64_t max_iter, int64_t check_every, int dtype) {
  const char* entry = "sinkhorn_forward_ext";
  check_problem(entry, batch, n, m, 1.0, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}},
              {{"C", C}, {"a", a}, {"b", b}, {"P", P}, {"f", f}, {"g", g}, {"cost", cost}, {"n_iter", n_iter},
               {"err", err}});
  check_params(entry, params, batch, n, m);
  check_range(entry, "max_iter", max_iter, 0, INT64_MAX);
  check_range(entry, "check_every", check_every, 1, INT64_MAX);
  check_scaling(entry, scaling);
}

// Point clouds (cloud.h): x (B, n, d), y (B, m, d), a metric code, the
// weights, the potentials and the options.
inline void check_cloud(const char* entry, std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b,
                        std::uintptr_t f, std::uintptr_t g, std::uintptr_t params, int64_t batch, int64_t n, int64_t m,
                        int64_t d, int metric, int dtype) {
  check_problem(entry, batch, n, m, 1.0, dtype);
  check_code(entry, "metric", metric, 2);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}, {"d", d}},
              {{"x", x}, {"y", y}, {"a", a}, {"b", b}, {"f", f}, {"g", g}});
  check_params(entry, params, batch, n, m);
}

inline void check_cloud_forward(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b,
                                std::uintptr_t f, std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter,
                                std::uintptr_t err, std::uintptr_t params, double scaling, int64_t batch, int64_t n,
                                int64_t m, int64_t d, int metric, int64_t max_iter, int64_t check_every, int dtype) {
  const char* entry = "sinkhorn_cloud_forward";
  check_cloud(entry, x, y, a, b, f, g, params, batch, n, m, d, metric, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {{"cost", cost}, {"n_iter", n_iter}, {"err", err}});
  check_range(entry, "max_iter", max_iter, 0, INT64_MAX);
  check_range(entry, "check_every", check_every, 1, INT64_MAX);
  check_scaling(entry, scaling);
}

inline void check_cloud_backward(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b,
                                 std::uintptr_t f, std::uintptr_t g, std::uintptr_t gcost, std::uintptr_t dx,
                                 std::uintptr_t dy, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                                 int64_t batch, int64_t n, int64_t m, int64_t d, int metric, int dtype) {
  const char* entry = "sinkhorn_cloud_backward";
  check_cloud(entry, x, y, a, b, f, g, params, batch, n, m, d, metric, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}, {"d", d}},
              {{"gcost", gcost}, {"dx", dx}, {"dy", dy}, {"da", da}, {"db", db}});
}

inline void check_backward(const char* entry, std::uintptr_t C, std::uintptr_t a, std::uintptr_t b,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, double eps, int dtype) {
  check_problem(entry, batch, n, m, eps, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}},
              {{"C", C}, {"a", a}, {"b", b}, {"dC", dC}, {"da", da}, {"db", db}});
}

inline void check_implicit_backward(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                                    std::uintptr_t f, std::uintptr_t g, std::uintptr_t dC, std::uintptr_t da,
                                    std::uintptr_t db, int64_t batch, int64_t n, int64_t m, double eps,
                                    int64_t cg_max_iter, int dtype) {
  const char* entry = "sinkhorn_implicit_backward";
  check_backward(entry, C, a, b, dC, da, db, batch, n, m, eps, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {{"P", P}, {"f", f}, {"g", g}});
  check_range(entry, "cg_max_iter", cg_max_iter, 0, INT64_MAX);
}

inline void check_implicit_solve(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x,
                                 int64_t batch, int64_t n, int64_t m, int64_t cg_max_iter, int dtype) {
  const char* entry = "sinkhorn_implicit_solve";
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {{"P", P}, {"rhs", rhs}, {"wt", wt}, {"x", x}});
  check_code(entry, "dtype", dtype, kDTypeCount);
  check_range(entry, "cg_max_iter", cg_max_iter, 0, INT64_MAX);
}

inline void check_unrolled_backward(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                                    std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t dC,
                                    std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n, int64_t m,
                                    int64_t max_iter, double eps, int dtype) {
  const char* entry = "sinkhorn_unrolled_backward";
  check_entry(entry, {{"max_iter", max_iter}}, {});  // sizes before arrays
  check_backward(entry, C, a, b, dC, da, db, batch, n, m, eps, dtype);
  check_entry(entry, {{"batch", batch}, {"n", n}, {"m", m}}, {{"n_iter", n_iter}});
  check_entry(entry, {{"batch", batch}, {"max_iter", max_iter}, {"n", n}, {"m", m}},
              {{"f_hist", f_hist}, {"g_hist", g_hist}});
}

}  // namespace sinkhorn
}  // namespace diffcomb
