// scale_rows.h, and its binding in diffcomb._C.
#include "scale_rows.h"

#include <cstdint>

#include "common.h"
#include "parallel.h"
#include "registry.h"

namespace diffcomb {

void scale_rows_cpu(std::uintptr_t g, int64_t g_stride, std::uintptr_t x, std::uintptr_t out, int64_t rows,
                    int64_t cols, int dtype, int threads) {
  const char* entry = "scale_rows";
  check_entry(entry, {{"rows", rows}, {"cols", cols}}, {});
  check_range(entry, "g_stride", g_stride, 0, INT64_MAX);
  check_code(entry, "dtype", dtype, kDTypeCount);
  check_entry(entry, {{"rows", rows}}, {{"g", g}});
  check_entry(entry, {{"rows", rows}, {"cols", cols}}, {{"x", x}, {"out", out}});
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = as_ptr<const T>(g);
    const T* xp = as_ptr<const T>(x);
    T* op = as_ptr<T>(out);
    parallel_rows(rows, threads, cols, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T factor = gp[r * g_stride];
        const T* in = xp + r * cols;
        T* to = op + r * cols;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) to[j] = factor * in[j];
      }
    });
  });
}

}  // namespace diffcomb

DC_BIND_CPU(common) {
  using pybind11::arg;
  m.def("scale_rows", &diffcomb::scale_rows_cpu,
        "out[r, j] = g[r * g_stride] * x[r, j] for r < rows, j < cols (out may be x).", arg("g"), arg("g_stride"),
        arg("x"), arg("out"), arg("rows"), arg("cols"), arg("dtype"), arg("threads"), nogil);
}
