// Rows times per-row factors: out[r, j] = g[r * g_stride] * x[r, j] for
// r < rows, j < cols (out may be x). The CPU backward of the lean eager
// paths (diffcomb/_native.py, scale_rows): the upstream gradient of a
// per-row value (a soft-DTW value per pair; stride 0 when it is the
// expanded gradient of a sum) times the gradients the forward computed.
// One loop, cheaper from Python than a view and a broadcast multiply. On
// CUDA the lean paths use torch's multiply (the launch dominates there).
#pragma once

#include <cstdint>

namespace diffcomb {

void scale_rows_cpu(std::uintptr_t g, int64_t g_stride, std::uintptr_t x, std::uintptr_t out, int64_t rows,
                    int64_t cols, int dtype, int threads);

}  // namespace diffcomb
