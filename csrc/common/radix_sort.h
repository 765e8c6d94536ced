// Stable argsort of one row on the CPU: least-significant-digit radix sort of
// order-preserving integer keys (8-bit digits) with int32 indices. Radix sort
// is stable by construction, which SPEC section 0 requires for ties, and runs
// in O(n) passes over the row: several times faster than a comparison sort
// for long rows. Passes whose digit is the same for every key are skipped.
// Short rows (n <= kComparisonSortMax) sort (key, index) pairs with
// std::sort instead: a radix pass costs its 256-entry histogram whatever n is
// (a radix sort of 32 keys took 5x the comparison sort). Ties are broken by
// the index, so the result is the stable order: every path gives the same
// permutation. One long row can also be sorted by a team of threads
// (argsort_descending_row_parallel, the same passes split over the threads).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "parallel.h"

namespace diffcomb {

template <class T>
struct RadixKey;
template <>
struct RadixKey<float> {
  using type = uint32_t;
};
template <>
struct RadixKey<double> {
  using type = uint64_t;
};

// Maps a float to an unsigned key whose ascending order is the float's
// DESCENDING order (-0 and +0 get the same key; NaN gets some key: callers
// turn rows with NaN into NaN anyway, and no comparator sees it).
template <class T>
inline typename RadixKey<T>::type descending_key(T v) {
  using K = typename RadixKey<T>::type;
  constexpr K kSign = K(1) << (8 * sizeof(K) - 1);
  v += T(0);
  K u;
  std::memcpy(&u, &v, sizeof u);
  const K ascending = (u & kSign) ? ~u : (u | kSign);
  return ~ascending;
}

template <class T>
inline T from_descending_key(typename RadixKey<T>::type key) {
  using K = typename RadixKey<T>::type;
  constexpr K kSign = K(1) << (8 * sizeof(K) - 1);
  const K ascending = ~key;
  const K u = (ascending & kSign) ? (ascending & ~kSign) : ~ascending;
  T v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// Rows up to this length are sorted by comparisons (see the top of the file). At 1 thread, 128
// rows: comparisons took about 0.3x the radix time at n = 32 and 0.7x at n = 64, but about 2x at
// n = 200 (and more at 256, the first threshold), so radix takes over above 64.
constexpr int32_t kComparisonSortMax = 64;

// A key and its index as one comparable value: for float32 keys one uint64
// (key in the high half), for float64 a pair compared key first.
template <class K>
struct KeyIndex {
  K key;
  int32_t index;
  static KeyIndex make(K k, int32_t i) { return {k, i}; }
  bool operator<(const KeyIndex& o) const { return key < o.key || (key == o.key && index < o.index); }
};
template <>
struct KeyIndex<uint32_t> {
  uint64_t packed;
  static KeyIndex make(uint32_t k, int32_t i) { return {(uint64_t(k) << 32) | uint32_t(i)}; }
  uint32_t key_bits() const { return uint32_t(packed >> 32); }
  bool operator<(const KeyIndex& o) const { return packed < o.packed; }
};

template <class K>
inline K key_of(const KeyIndex<K>& e) {
  return e.key;
}
inline uint32_t key_of(const KeyIndex<uint32_t>& e) { return e.key_bits(); }
template <class K>
inline int32_t index_of(const KeyIndex<K>& e) {
  return e.index;
}
inline int32_t index_of(const KeyIndex<uint32_t>& e) { return int32_t(uint32_t(e.packed)); }

// Per-thread work buffers, grown on demand and reused across rows.
template <class T>
struct ArgsortScratch {
  using K = typename RadixKey<T>::type;
  std::vector<K> keys, keys_alt;
  std::vector<int32_t> index, index_alt;
  std::vector<KeyIndex<K>> pairs;
  void resize(int32_t n) {
    if (n <= kComparisonSortMax) {
      if (static_cast<int32_t>(pairs.size()) < n) pairs.resize(n);
      return;
    }
    if (static_cast<int32_t>(keys.size()) < n) {
      keys.resize(n);
      keys_alt.resize(n);
      index.resize(n);
      index_alt.resize(n);
    }
  }
};

// One radix pass: scatter keys/index [begin, end) by digit `shift` to the
// positions offsets[digit]++ of keys_out/index_out.
template <class K>
inline void radix_scatter(const K* keys, const int32_t* index, int64_t begin, int64_t end, int shift,
                          uint32_t* offsets, K* keys_out, int32_t* index_out) {
  for (int64_t i = begin; i < end; ++i) {
    const K key = keys[i];
    const uint32_t dst = offsets[(key >> shift) & 0xff]++;
    keys_out[dst] = key;
    index_out[dst] = index[i];
  }
}

// sorted = (scale * x) sorted descending, stably; perm[i] = the input index of
// sorted[i].
template <class T>
void argsort_descending_row(const T* x, T scale, int32_t n, T* sorted, int32_t* perm,
                            ArgsortScratch<T>& scratch) {
  using K = typename RadixKey<T>::type;
  constexpr int kPasses = sizeof(K);
  scratch.resize(n);
  if (n <= kComparisonSortMax) {
    KeyIndex<K>* pairs = scratch.pairs.data();
    for (int32_t i = 0; i < n; ++i) pairs[i] = KeyIndex<K>::make(descending_key<T>(scale * x[i]), i);
    std::sort(pairs, pairs + n);
    for (int32_t i = 0; i < n; ++i) {
      perm[i] = index_of(pairs[i]);
      sorted[i] = from_descending_key<T>(key_of(pairs[i]));
    }
    return;
  }
  K* keys = scratch.keys.data();
  int32_t* index = scratch.index.data();
  uint32_t hist[kPasses][256];
  std::memset(hist, 0, sizeof hist);
  for (int32_t i = 0; i < n; ++i) {
    const K key = descending_key<T>(scale * x[i]);
    keys[i] = key;
    index[i] = i;
    for (int p = 0; p < kPasses; ++p) ++hist[p][(key >> (8 * p)) & 0xff];
  }
  K* keys_out = scratch.keys_alt.data();
  int32_t* index_out = scratch.index_alt.data();
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* h = hist[p];
    if (h[(keys[0] >> (8 * p)) & 0xff] == static_cast<uint32_t>(n)) continue;  // one digit only
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) {
      const uint32_t count = h[d];
      h[d] = sum;
      sum += count;
    }
    radix_scatter(keys, index, 0, n, 8 * p, h, keys_out, index_out);
    std::swap(keys, keys_out);
    std::swap(index, index_out);
  }
  for (int32_t i = 0; i < n; ++i) {
    perm[i] = index[i];
    sorted[i] = from_descending_key<T>(keys[i]);
  }
}

// The same sort of one long row by a team of up to `threads` threads: every
// pass splits the row into one contiguous range per thread, each thread
// counts its range's digits, and thread t scatters its keys of digit d after
// those of threads t' < t (so the scatter keeps the input order: stable, the
// same permutation as argsort_descending_row). Called outside any parallel
// region.
template <class T>
void argsort_descending_row_parallel(const T* x, T scale, int64_t n, T* sorted, int32_t* perm, int threads) {
  using K = typename RadixKey<T>::type;
  constexpr int kPasses = sizeof(K);
  std::unique_ptr<K[]> key_buf(new K[2 * n]);
  std::unique_ptr<int32_t[]> index_buf(new int32_t[2 * n]);
  std::vector<uint32_t> counts(static_cast<size_t>(std::max(threads, 1)) * 256);
#if defined(_OPENMP)
#pragma omp parallel num_threads(std::max(threads, 1))
#endif
  {
    const auto [t, team] = team_member();
    const int64_t begin = n * t / team, end = n * (t + 1) / team;
    K* keys = key_buf.get();
    K* keys_out = keys + n;
    int32_t* index = index_buf.get();
    int32_t* index_out = index + n;
    for (int64_t i = begin; i < end; ++i) {
      keys[i] = descending_key<T>(scale * x[i]);
      index[i] = static_cast<int32_t>(i);
    }
    uint32_t* mine = counts.data() + 256 * t;
    for (int p = 0; p < kPasses; ++p) {
      const int shift = 8 * p;
      std::fill(mine, mine + 256, 0u);
      for (int64_t i = begin; i < end; ++i) ++mine[(keys[i] >> shift) & 0xff];
      team_barrier();
      // Digit d of thread t starts after every smaller digit and after digit d of threads t' < t.
      uint32_t offsets[256];
      uint32_t sum = 0;
      bool one_digit = false;
      for (int d = 0; d < 256; ++d) {
        uint32_t total = 0, before = 0;
        for (int u = 0; u < team; ++u) {
          const uint32_t c = counts[256 * u + d];
          total += c;
          before += u < t ? c : 0;
        }
        one_digit = one_digit || total == static_cast<uint64_t>(n);
        offsets[d] = sum + before;
        sum += total;
      }
      if (!one_digit) radix_scatter(keys, index, begin, end, shift, offsets, keys_out, index_out);
      team_barrier();
      if (!one_digit) {  // every thread takes the same decision from the same counts
        std::swap(keys, keys_out);
        std::swap(index, index_out);
      }
    }
    for (int64_t i = begin; i < end; ++i) {
      perm[i] = index[i];
      sorted[i] = from_descending_key<T>(keys[i]);
    }
  }
}

}  // namespace diffcomb
