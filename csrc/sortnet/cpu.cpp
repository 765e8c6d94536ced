// Batched CPU kernels of the sorting networks: OpenMP over the rows of the
// batch, the math from sortnet.h.
//
// Values: one pass over the comparators (O(1) each). P: blocks of R rows of P
// ("lanes", R = one cache line of the dtype) run through the network in a
// scratch of n x R entries (wire-major, so a comparator touches two
// contiguous R-vectors), then are written to Pt. A block of rows of P only
// has nonzero entries on a range of wires that grows layer by layer from the
// block's own rows; comparators outside that range are skipped
// (SortNetwork::active), which saves most of the early layers' work.
// Backward: per block, the same forward records the pre-swap differences of
// the lanes (the tape, R entries per active comparator), then the upstream
// gradient's rows run backward through the same comparators, adding the P
// part of dL/dalpha; the layers go in segments whose tape fits in the cache
// (the lanes' state is kept at each segment's start and the segment replayed:
// one extra forward instead of streaming the whole tape through memory).
// Finally one backward pass over the comparators for the values (SPEC 5.4).
// Nothing but alpha is kept from the forward.
#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "dispatch.h"
#include "sortnet.h"

// The lane loops are compiled for AVX-512, AVX2 and the baseline, chosen at
// load time (GCC function multiversioning; never -march=native).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SN_CLONES
#endif
#define SN_ALWAYS_INLINE SN_INLINE

namespace diffcomb {
namespace sortnet {
namespace {

template <class T>
constexpr int lanes() {
  return int(64 / sizeof(T));  // one cache line
}

template <class T>
bool row_finite(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!is_finite(x[i])) return false;
  }
  return true;
}

// Scratch of one thread for the rows of P.
template <class T>
struct LaneScratch {
  std::vector<T> state;  // n x R
  std::vector<T> grad;   // n x R (backward)
  std::vector<T> tape;   // (comparators of a segment) x R (backward)
  std::vector<T> checkpoints;  // segments x n x R (backward)
  std::vector<int32_t> ranges;  // 2 x layers of a segment (backward)
  std::vector<int32_t> bounds;  // 2 x segments (backward)
};

// Starts a block of rows [i0, i0 + rows) of P: e_i in lane i - i0.
template <int R, class T>
SN_ALWAYS_INLINE void start_block(T* state, int64_t n, int32_t i0, int32_t rows) {
  std::fill_n(state, n * R, T(0));
  for (int32_t r = 0; r < rows; ++r) state[int64_t(i0 + r) * R + r] = T(1);
}

// Runs the lanes in `state` through layers [l_begin, l_end); [s, e) is the range
// of wires where they can be nonzero (updated). With a tape, records the
// pre-swap differences of every active comparator in order and the active
// comparators of layer l at ranges[2 (l - l_begin)], ranges[2 (l - l_begin) + 1].
template <int R, class T, bool kTape>
SN_ALWAYS_INLINE void run_layers(const SortNetwork& net, const T* alpha, T* state, int32_t l_begin, int32_t l_end,
                                 int32_t& s, int32_t& e, T* tape, int32_t* ranges) {
  int64_t k = 0;
  for (int32_t l = l_begin; l < l_end; ++l) {
    int32_t cb, ce;
    net.active(l, s, e, &cb, &ce);
    int32_t top = e;  // one past the largest wire the layer's active comparators reach
    for (int32_t c = cb; c < ce; ++c) {
      mix_lanes<R>(state + int64_t(net.lo[c]) * R, state + int64_t(net.hi[c]) * R, alpha[c],
                   kTape ? tape + k * R : static_cast<T*>(nullptr));
      top = std::max(top, net.max_wire(c) + 1);
      ++k;
    }
    if (kTape) {
      ranges[2 * (l - l_begin)] = cb;
      ranges[2 * (l - l_begin) + 1] = ce;
    }
    if (cb < ce) s = std::min(s, net.min_wire(cb));  // sorted by the smaller wire
    e = top;
  }
}

// Pt (n x n, wire-major) of one row of the batch.
template <class T>
SN_ALWAYS_INLINE void p_forward_row_impl(const SortNetwork& net, const T* alpha, int64_t n, T* Pt,
                                         int64_t block_begin, int64_t block_end, LaneScratch<T>& scratch) {
  constexpr int R = lanes<T>();
  T* state = scratch.state.data();
  for (int64_t i0 = block_begin * R; i0 < std::min(n, block_end * R); i0 += R) {
    const int32_t rows = int32_t(std::min<int64_t>(R, n - i0));
    start_block<R>(state, n, int32_t(i0), rows);
    int32_t s = int32_t(i0), e = int32_t(i0) + rows;
    run_layers<R, T, false>(net, alpha, state, 0, net.layers, s, e, nullptr, nullptr);
    for (int64_t w = 0; w < n; ++w) std::memcpy(Pt + w * n + i0, state + w * R, rows * sizeof(T));
  }
}

// Layers per segment of the backward: the tape of one segment (R entries per
// comparator, at most n/2 comparators per layer) stays within kTapeBytes, so it
// lives in the cache instead of streaming through memory.
constexpr int64_t kTapeBytes = 256 * 1024;

template <class T>
int32_t segment_layers(int64_t n, int32_t layers) {
  const int64_t per_layer = (n / 2 + 1) * lanes<T>() * int64_t(sizeof(T));
  return int32_t(std::max<int64_t>(1, std::min<int64_t>(std::max(layers, 1), kTapeBytes / per_layer)));
}

// dalpha[c] += the P part of dL/dalpha_c for one row of the batch (g_P: its (n, n) dL/dP at
// strides gs, api.h).
// Per block of lanes: a forward pass keeps the lanes' state at the start of
// every segment of layers; then, last segment first, the segment is replayed
// from its checkpoint with a tape and the gradient lanes run backward through it.
template <class T>
SN_ALWAYS_INLINE void p_backward_row_impl(const SortNetwork& net, const T* alpha, const T* g_P, PStrides gs,
                                          int64_t n, int64_t block_begin, int64_t block_end, double* dalpha,
                                          LaneScratch<T>& scratch) {
  constexpr int R = lanes<T>();
  const int32_t K = segment_layers<T>(n, net.layers);
  const int32_t segments = (net.layers + K - 1) / K;
  T* state = scratch.state.data();
  T* grad = scratch.grad.data();
  T* tape = scratch.tape.data();
  T* checkpoints = scratch.checkpoints.data();
  int32_t* ranges = scratch.ranges.data();
  for (int64_t i0 = block_begin * R; i0 < std::min(n, block_end * R); i0 += R) {
    const int32_t rows = int32_t(std::min<int64_t>(R, n - i0));
    start_block<R>(state, n, int32_t(i0), rows);
    int32_t s = int32_t(i0), e = int32_t(i0) + rows;
    for (int32_t g = 0; g < segments; ++g) {
      std::copy(state, state + n * R, checkpoints + g * n * R);
      scratch.bounds[2 * g] = s;
      scratch.bounds[2 * g + 1] = e;
      if (g + 1 < segments) run_layers<R, T, false>(net, alpha, state, g * K, (g + 1) * K, s, e, nullptr, nullptr);
    }
    // The lanes of the gradient: rows i0.. of dL/dP, as wire-major lanes (the inner loop
    // along the layout's contiguous axis).
    std::fill_n(grad, n * R, T(0));
    if (gs.col == 1) {  // P's layout: row i0 + r of dL/dP is contiguous
      for (int32_t r = 0; r < rows; ++r) {
        for (int64_t w = 0; w < n; ++w) grad[w * R + r] = g_P[(i0 + r) * gs.row + w];
      }
    } else {  // Pt's: the lanes' entries of wire w are contiguous
      for (int64_t w = 0; w < n; ++w) std::memcpy(grad + w * R, g_P + w * gs.col + i0, rows * sizeof(T));
    }
    for (int32_t g = segments - 1; g >= 0; --g) {
      const int32_t l_begin = g * K;
      const int32_t l_end = std::min(net.layers, l_begin + K);
      std::copy(checkpoints + g * n * R, checkpoints + (g + 1) * n * R, state);
      s = scratch.bounds[2 * g];
      e = scratch.bounds[2 * g + 1];
      run_layers<R, T, true>(net, alpha, state, l_begin, l_end, s, e, tape, ranges);
      int64_t k = 0;
      for (int32_t l = 0; l < l_end - l_begin; ++l) k += ranges[2 * l + 1] - ranges[2 * l];
      for (int32_t l = l_end - l_begin - 1; l >= 0; --l) {
        for (int32_t c = ranges[2 * l + 1] - 1; c >= ranges[2 * l]; --c) {
          --k;
          dalpha[c] += double(mix_lanes_vjp<R>(grad + int64_t(net.lo[c]) * R, grad + int64_t(net.hi[c]) * R,
                                               alpha[c], tape + k * R));
        }
      }
    }
  }
}

// The multiversioned entry points of the lane loops, one per dtype.
// Blocks [block_begin, block_end) of lanes (rows block * R.. of P) of one row of the batch.
SN_CLONES void p_forward_row(const SortNetwork& net, const float* alpha, int64_t n, float* Pt, int64_t block_begin,
                             int64_t block_end, LaneScratch<float>& scratch) {
  p_forward_row_impl(net, alpha, n, Pt, block_begin, block_end, scratch);
}
SN_CLONES void p_forward_row(const SortNetwork& net, const double* alpha, int64_t n, double* Pt,
                             int64_t block_begin, int64_t block_end, LaneScratch<double>& scratch) {
  p_forward_row_impl(net, alpha, n, Pt, block_begin, block_end, scratch);
}
SN_CLONES void p_backward_row(const SortNetwork& net, const float* alpha, const float* g_P, PStrides gs, int64_t n,
                              int64_t block_begin, int64_t block_end, double* dalpha, LaneScratch<float>& scratch) {
  p_backward_row_impl(net, alpha, g_P, gs, n, block_begin, block_end, dalpha, scratch);
}
SN_CLONES void p_backward_row(const SortNetwork& net, const double* alpha, const double* g_P, PStrides gs,
                              int64_t n, int64_t block_begin, int64_t block_end, double* dalpha,
                              LaneScratch<double>& scratch) {
  p_backward_row_impl(net, alpha, g_P, gs, n, block_begin, block_end, dalpha, scratch);
}

// The scratch of p_backward_row.
template <class T>
void prepare_backward_scratch(const SortNetwork& net, int64_t n, LaneScratch<T>& scratch) {
  constexpr int R = lanes<T>();
  const int32_t layers = net.layers;
  scratch.state.resize(n * R);
  scratch.grad.resize(n * R);
  const int64_t K = segment_layers<T>(n, layers);
  const int64_t segments = std::max<int64_t>((layers + K - 1) / K, 1);
  int64_t widest = 1;  // comparators of the largest layer
  for (int32_t l = 0; l < layers; ++l) widest = std::max<int64_t>(widest, net.offsets[l + 1] - net.offsets[l]);
  scratch.tape.resize(K * widest * R);
  scratch.checkpoints.resize(segments * n * R);
  scratch.ranges.resize(2 * K);
  scratch.bounds.resize(2 * segments);
}

template <class T>
void fill_nan(T* p, int64_t count) {
  std::fill_n(p, count, std::numeric_limits<T>::quiet_NaN());
}

}  // namespace

void forward_cpu(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt, int64_t batch,
                 int64_t n, int dtype, const SortLayout& layout, const Relaxation& relaxation, int threads) {
  check_call("sortnet_forward", batch, n, x, values, alpha, layout);
  const SortNetwork net = make_network(layout);
  const int64_t C = layout.comparators;
  const double steepness = relaxation.steepness;
  const double art_lambda = relaxation.art_lambda;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_sigmoid(relaxation.sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      // Values and mixing weights, row by row.
      std::vector<char> bad(batch, 0);
      parallel_rows(batch, threads, 4 * C, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const T* xb = as_ptr<const T>(x) + b * n;
          T* v = as_ptr<T>(values) + b * n;
          T* al = as_ptr<T>(alpha) + b * C;
          if (!row_finite(xb, n)) {  // SPEC 0: the whole row is NaN
            bad[b] = 1;
            fill_nan(v, n);
            fill_nan(al, C);
            if (Pt) fill_nan(as_ptr<T>(Pt) + b * n * n, n * n);
            continue;
          }
          std::copy(xb, xb + n, v);
          for (int64_t c = 0; c < C; ++c) {
            al[c] = swap_values<S>(v, net.lo[c], net.hi[c], steepness, art_lambda);
          }
        }
      });
      if (!Pt || n == 0) return;
      // P: the (row, block of lanes) pairs are independent, so a small batch uses every thread too.
      const int64_t blocks = (n + lanes<T>() - 1) / lanes<T>();
      parallel_rows(batch * blocks, threads, C * lanes<T>(), [&](int64_t begin, int64_t end) {
        LaneScratch<T> scratch;
        scratch.state.resize(n * lanes<T>());
        for (int64_t item = begin; item < end;) {
          const int64_t b = item / blocks;
          const int64_t block_end = std::min(end, (b + 1) * blocks) - b * blocks;
          if (!bad[b]) {
            p_forward_row(net, as_ptr<const T>(alpha) + b * C, n, as_ptr<T>(Pt) + b * n * n, item % blocks,
                          block_end, scratch);
          }
          item = b * blocks + block_end;
        }
      });
    });
  });
}

void backward_cpu(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t g_P,
                  bool g_P_transposed, std::uintptr_t dx, int64_t batch, int64_t n, int dtype,
                  const SortLayout& layout, const Relaxation& relaxation, int threads) {
  check_call("sortnet_backward", batch, n, x, dx, alpha, layout);
  const SortNetwork net = make_network(layout);
  const int64_t C = layout.comparators;
  const double steepness = relaxation.steepness;
  const double art_lambda = relaxation.art_lambda;
  const PStrides gs = p_strides(n, g_P_transposed);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_sigmoid(relaxation.sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      const int64_t row_cost = 8 * C + (g_P ? 2 * C * n + n * n : 0);
      const int64_t blocks = (n + lanes<T>() - 1) / lanes<T>();
      // With fewer rows than threads, the rows go one after the other and the blocks of
      // lanes of a row are split among the threads instead.
      const bool split_rows = g_P && batch < threads && blocks > 1;
      auto rows_body = [&](int64_t begin, int64_t end) {
        LaneScratch<T> scratch;
        std::vector<double> dalpha, a_minus_b(C), fprime(C), gv(n);
        std::vector<T> v(n);
        if (g_P) {
          if (!split_rows) prepare_backward_scratch(net, n, scratch);
          dalpha.resize(C);
        }
        for (int64_t b = begin; b < end; ++b) {
          const T* xb = as_ptr<const T>(x) + b * n;
          const T* al = as_ptr<const T>(alpha) + b * C;
          T* out = as_ptr<T>(dx) + b * n;
          if (!row_finite(xb, n)) {
            fill_nan(out, n);
            continue;
          }
          if (g_P) {
            std::fill(dalpha.begin(), dalpha.end(), 0.0);
            const T* gp = as_ptr<const T>(g_P) + b * n * n;
            if (split_rows) {
              // Fewer rows than threads: the blocks of lanes of this row in parallel, each
              // thread with its own dalpha, added up in a fixed order (deterministic).
              std::mutex lock;
              std::vector<std::pair<int64_t, std::vector<double>>> parts;
              parallel_rows(blocks, threads, 3 * C * lanes<T>(), [&](int64_t bb, int64_t be) {
                LaneScratch<T> own;
                prepare_backward_scratch(net, n, own);
                std::vector<double> local(C, 0.0);
                p_backward_row(net, al, gp, gs, n, bb, be, local.data(), own);
                std::lock_guard<std::mutex> guard(lock);
                parts.emplace_back(bb, std::move(local));
              });
              std::sort(parts.begin(), parts.end(),
                        [](const auto& a, const auto& b) { return a.first < b.first; });
              for (const auto& part : parts) {
                for (int64_t c = 0; c < C; ++c) dalpha[c] += part.second[c];
              }
            } else {
              p_backward_row(net, al, gp, gs, n, 0, blocks, dalpha.data(), scratch);
            }
          }
          std::copy(xb, xb + n, v.begin());
          for (int64_t c = 0; c < C; ++c) {
            replay_swap<S>(v.data(), net.lo[c], net.hi[c], al[c], steepness, art_lambda, &a_minus_b[c], &fprime[c]);
          }
          if (g_values) {
            const T* g = as_ptr<const T>(g_values) + b * n;
            for (int64_t i = 0; i < n; ++i) gv[i] = double(g[i]);
          } else {
            std::fill(gv.begin(), gv.end(), 0.0);
          }
          for (int64_t c = C - 1; c >= 0; --c) {
            swap_values_vjp(gv.data(), net.lo[c], net.hi[c], double(al[c]), a_minus_b[c], fprime[c],
                            g_P ? dalpha[c] : 0.0);
          }
          for (int64_t i = 0; i < n; ++i) out[i] = T(gv[i]);
        }
      };
      if (split_rows) {
        rows_body(0, batch);
      } else {
        parallel_rows(batch, threads, row_cost, rows_body);
      }
    });
  });
}

}  // namespace sortnet
}  // namespace diffcomb
