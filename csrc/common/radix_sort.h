// Stable argsort of one row on the CPU: least-significant-digit radix sort of
// order-preserving integer keys (8-bit digits) with int32 indices. Radix sort
// is stable by construction, which SPEC section 0 requires for ties, and runs
// in O(n) passes over the row: several times faster than a comparison sort
// for the row lengths of soft sort and soft rank. Passes whose digit is the
// same for every key are skipped. Very short rows use insertion sort.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

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

// Per-thread work buffers, grown on demand and reused across rows.
template <class T>
struct ArgsortScratch {
  using K = typename RadixKey<T>::type;
  std::vector<K> keys, keys_alt;
  std::vector<int32_t> index, index_alt;
  void resize(int32_t n) {
    if (static_cast<int32_t>(keys.size()) < n) {
      keys.resize(n);
      keys_alt.resize(n);
      index.resize(n);
      index_alt.resize(n);
    }
  }
};

// sorted = (scale * x) sorted descending, stably; perm[i] = the input index of
// sorted[i].
template <class T>
void argsort_descending_row(const T* x, T scale, int32_t n, T* sorted, int32_t* perm,
                            ArgsortScratch<T>& scratch) {
  using K = typename RadixKey<T>::type;
  constexpr int kPasses = sizeof(K);
  constexpr int32_t kInsertionMax = 24;
  scratch.resize(n);
  K* keys = scratch.keys.data();
  int32_t* index = scratch.index.data();
  for (int32_t i = 0; i < n; ++i) {
    keys[i] = descending_key<T>(scale * x[i]);
    index[i] = i;
  }
  if (n <= kInsertionMax) {
    for (int32_t i = 1; i < n; ++i) {
      const K key = keys[i];
      const int32_t idx = index[i];
      int32_t j = i;
      for (; j > 0 && keys[j - 1] > key; --j) {
        keys[j] = keys[j - 1];
        index[j] = index[j - 1];
      }
      keys[j] = key;
      index[j] = idx;
    }
  } else {
    uint32_t hist[kPasses][256];
    std::memset(hist, 0, sizeof hist);
    for (int32_t i = 0; i < n; ++i) {
      const K key = keys[i];
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
      for (int32_t i = 0; i < n; ++i) {
        const K key = keys[i];
        const uint32_t dst = h[(key >> (8 * p)) & 0xff]++;
        keys_out[dst] = key;
        index_out[dst] = index[i];
      }
      std::swap(keys, keys_out);
      std::swap(index, index_out);
    }
  }
  for (int32_t i = 0; i < n; ++i) {
    perm[i] = index[i];
    sorted[i] = from_descending_key<T>(keys[i]);
  }
}

}  // namespace diffcomb
