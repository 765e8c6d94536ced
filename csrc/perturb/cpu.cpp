// CPU kernels of the perturb family's noise and row solvers (api.h): noise,
// argmax, top-k and ranks. The batch is split over OpenMP threads
// (common/parallel.h); each row runs perturb.h's math. The grid shortest path
// is in cpu_grid_*.cpp, the linear assignment in cpu_assignment.cpp.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/radix_sort.h"
#include "../common/vmath.h"
#include "api.h"
#include "checks.h"
#include "cpu_util.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {

namespace {

constexpr int64_t kGumbelBlock = 64;  // Philox blocks per pass of gumbel_groups

// The Gumbel noise of groups [q0, q0 + n), n <= kGumbelBlock, into g: noise_group's values in
// its order (G = 4 a group for float output, 2 for double), before the rounding to the output
// dtype. One vector loop draws the Philox blocks and forms the uniforms, another takes the logs.
template <int G>
DC_FORCE_INLINE void gumbel_groups(uint64_t key, uint64_t q0, int64_t n, double* g) {
  double u[G * kGumbelBlock];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const U32x4 r = philox(key, q0 + static_cast<uint64_t>(i), 0, 0);
    if (G == 4) {
      for (int l = 0; l < 4; ++l) u[4 * i + l] = open_uniform24(r.v[l]);
    } else {
      u[2 * i] = open_uniform(r.v[0], r.v[1]);
      u[2 * i + 1] = open_uniform(r.v[2], r.v[3]);
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < G * n; ++j) g[j] = gumbel_of<VecMath>(u[j]);
}

DC_SIMD_CLONES void gumbel_groups_f32(uint64_t key, uint64_t q0, int64_t n, double* g) {
  gumbel_groups<4>(key, q0, n, g);
}
DC_SIMD_CLONES void gumbel_groups_f64(uint64_t key, uint64_t q0, int64_t n, double* g) {
  gumbel_groups<2>(key, q0, n, g);
}

}  // namespace

void noise_cpu(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, double k, double tau, int64_t s,
               int dtype, int threads) {
  check_noise(seed, out, numel, kind, dtype);
  if (numel == 0) return;
  const uint64_t key = static_cast<uint64_t>(*as_ptr<const int64_t>(seed));
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = as_ptr<T>(out);
    const int64_t group = noise_group_size<T>(kind);
    const int64_t groups = (numel + group - 1) / group;
    const int64_t cost = kind == kSumOfGamma ? 40 * s : 8;
    if (kind == kGumbel) {  // noise_group's values, vectorized
      const auto draw = sizeof(T) == 4 ? gumbel_groups_f32 : gumbel_groups_f64;
      parallel_rows(groups, threads, cost, [&](int64_t begin, int64_t end) {
        double g[4 * kGumbelBlock];
        for (int64_t q = begin; q < end; q += kGumbelBlock) {
          const int64_t n = std::min(kGumbelBlock, end - q);
          draw(key, static_cast<uint64_t>(q), n, g);
          const int64_t first = q * group;
          const int64_t count = std::min(n * group, numel - first);
          for (int64_t j = 0; j < count; ++j) o[first + j] = static_cast<T>(g[j]);
        }
      });
      return;
    }
    parallel_rows(groups, threads, cost, [&](int64_t begin, int64_t end) {
      T values[4];
      for (int64_t q = begin; q < end; ++q) {
        noise_group<T>(kind, key, static_cast<uint64_t>(q), k, tau, static_cast<int32_t>(s), values);
        const int64_t first = q * group;
        const int64_t count = numel - first < group ? numel - first : group;
        for (int64_t l = 0; l < count; ++l) o[first + l] = values[l];
      }
    });
  });
}

void argmax_onehot_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads) {
  check_rows("perturb_argmax", x, out, rows, n, dtype);
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xs + r * n;
        T* orow = os + r * n;
        std::fill(orow, orow + n, T(0));
        if (!all_finite(xr, n)) {
          fill_nan(orow, n);
          continue;
        }
        int64_t best = 0;
        for (int64_t i = 1; i < n; ++i) {
          if (xr[i] > xr[best]) best = i;
        }
        orow[best] = T(1);
      }
    });
  });
}

namespace {

// Top-k of one row. Small k: one pass that keeps the k first elements of the
// stable descending order in a sorted buffer (most elements fail the test
// against the current k-th and cost one comparison). Large k: nth_element.
template <class T>
void topk_row(const T* x, T* out, int64_t n, int64_t k, std::vector<int32_t>& index, std::vector<T>& best) {
  std::fill(out, out + n, T(0));
  if (!all_finite(x, n)) {
    fill_nan(out, n);
    return;
  }
  if (k == 0) return;
  if (k * 16 <= n) {
    int64_t count = 0;
    for (int32_t i = 0; i < n; ++i) {
      const T v = x[i];
      if (count == k && !(v > best[k - 1])) continue;  // ties lose to earlier indices
      int64_t pos = count < k ? count++ : k - 1;
      while (pos > 0 && v > best[pos - 1]) {
        best[pos] = best[pos - 1];
        index[pos] = index[pos - 1];
        --pos;
      }
      best[pos] = v;
      index[pos] = i;
    }
  } else {
    for (int32_t i = 0; i < n; ++i) index[i] = i;
    auto first = [&](int32_t a, int32_t b) { return before(x[a], a, x[b], b); };
    if (k < n) std::nth_element(index.begin(), index.begin() + (k - 1), index.begin() + n, first);
  }
  for (int64_t i = 0; i < k; ++i) out[index[i]] = T(1);
}

}  // namespace

void topk_mask_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype,
                   int threads) {
  check_topk(x, out, rows, n, k, dtype);
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, 2 * n, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> index(n);
      std::vector<T> best(n);
      for (int64_t r = begin; r < end; ++r) topk_row(xs + r * n, os + r * n, n, k, index, best);
    });
  });
}

void ranks_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads) {
  check_rows("perturb_ranks", x, out, rows, n, dtype);
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, 8 * n, [&](int64_t begin, int64_t end) {
      ArgsortScratch<T> scratch;
      std::vector<T> sorted(n);
      std::vector<int32_t> perm(n);
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xs + r * n;
        T* orow = os + r * n;
        if (!all_finite(xr, n)) {
          fill_nan(orow, n);
          continue;
        }
        // Stable descending order of -x = stable ascending order of x.
        argsort_descending_row(xr, T(-1), static_cast<int32_t>(n), sorted.data(), perm.data(), scratch);
        for (int32_t p = 0; p < n; ++p) orow[perm[p]] = T(p + 1);
      }
    });
  });
}

}  // namespace perturb
}  // namespace diffcomb
