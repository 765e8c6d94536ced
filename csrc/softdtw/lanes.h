// Small soft-DTW problems on series, pairs interleaved in groups
// (cpu_lanes.cpp): series_cpu's path for batches of pairs of at most
// kLaneCells cells without per-pair lengths. Same arguments as series_cpu
// (api.h), checked by it, less the lengths.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace softdtw {

constexpr int64_t kLaneCells = 16384;  // 128 x 128

// Whether series_lanes serves a batch of pairs of m x n cells (lengths:
// per-pair lengths were given).
bool lanes_serve(int64_t batch, int64_t m, int64_t n, bool lengths);

void series_lanes(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                  int64_t batch, int64_t m, int64_t n, int64_t D, int cost, double gamma, int64_t band, int dtype,
                  int threads);

}  // namespace softdtw
}  // namespace diffcomb
