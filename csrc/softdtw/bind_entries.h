// The soft-DTW entry points as bound in both native modules: names, argument
// names and docstrings in one place. bind.cpp (diffcomb._C) and
// bind_cuda.cpp (diffcomb._C_cuda) pass their functions and the names of
// their execution context, which follows the op arguments (api.h).
#pragma once

#include <pybind11/pybind11.h>

namespace diffcomb {
namespace softdtw {

template <class Value, class Series, class Second, class... Context>
void bind_entries(pybind11::module_& m, const pybind11::call_guard<pybind11::gil_scoped_release>& nogil, Value value,
                  Series series, Second second, const Context&... context) {
  using pybind11::arg;
  m.def("softdtw_value_and_alignment", value,
        "Soft-DTW values (B) of cost matrices C (B, m, n) and, when E is not 0, their expected alignments E.",
        arg("C"), arg("value"), arg("E"), arg("lengths_x"), arg("lengths_y"), arg("batch"), arg("m"), arg("n"),
        arg("gamma"), arg("band"), arg("dtype"), context..., nogil);
  m.def("softdtw_series", series,
        "Soft-DTW values (B) of series x (B, m, D), y (B, n, D), costs formed in the kernel; gradients gx, gy when "
        "not 0.",
        arg("x"), arg("y"), arg("value"), arg("gx"), arg("gy"), arg("lengths_x"), arg("lengths_y"), arg("batch"),
        arg("m"), arg("n"), arg("D"), arg("cost"), arg("gamma"), arg("band"), arg("dtype"), context..., nogil);
  m.def("softdtw_second_order", second,
        "Second order of soft-DTW at costs C (B, m, n) for directions Z: jvp = <E, Z>, E and HZ = H Z.",
        arg("C"), arg("Z"), arg("jvp"), arg("E"), arg("HZ"), arg("lengths_x"), arg("lengths_y"), arg("batch"),
        arg("m"), arg("n"), arg("gamma"), arg("band"), arg("dtype"), context..., nogil);
}

}  // namespace softdtw
}  // namespace diffcomb
