// Stable argsort of one row on the CPU: least-significant-digit radix sort of
// order-preserving integer keys (8-bit digits) with int32 indices. Radix sort
// is stable by construction, which SPEC section 0 requires for ties, and runs
// in O(n) passes over the row: several times faster than a comparison sort
// for long rows. Passes whose digit is the same for every key are skipped.
// Short rows (n <= kComparisonSortMax) sort (key, index) pairs with
// std::sort instead: a radix pass costs its 256-entry histogram whatever n is
// (a radix sort of 32 keys took 5x the comparison sort). Ties are broken by
// the index, so the result is the stable order: every path gives the same
// permutation. One long row can also be sorted by a team of threads, most digit first
// (argsort_descending_msd_team, the same permutation).
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
// rows: comparisons took about 0.3x the radix time at n = 32, but about 2x at n = 200. At n = 64
// one measurement (128 rows) gave 0.7x, but 4096 rows of 64 (the sparse top-k suite, 2 threads)
// spent 1.6x the radix time in std::sort, so radix takes over above 32.
constexpr int32_t kComparisonSortMax = 32;

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
  for (int32_t i = 0; i < n; ++i) {  // the keys first: a vector loop
    keys[i] = descending_key<T>(scale * x[i]);
    index[i] = i;
  }
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
    radix_scatter(keys, index, 0, n, 8 * p, h, keys_out, index_out);
    std::swap(keys, keys_out);
    std::swap(index, index_out);
  }
  for (int32_t i = 0; i < n; ++i) {
    perm[i] = index[i];
    sorted[i] = from_descending_key<T>(keys[i]);
  }
}

// ---------------------------------------------------------------------------
// Long rows (csrc/isotonic/cpu.cpp's rows of at least 2^16 elements): the same stable order from
// sorting packed (key, index) elements (KeyIndex: for float32 one uint64, so each pass moves one
// 8-byte word per element instead of a key and an index) by the top 11 bits of the key first
// (sign, exponent, 2 mantissa bits; one pass over the whole row, by a team like the per-pass team
// scatter of a radix sort: stable), then every bucket of equal top digit (contiguous) on its own
// by the low bits: a least-significant-digit radix on the bucket (float32: 2 passes of 11 bits,
// float64: 5), or std::sort of its elements when it is small (the index breaks ties: the same
// stable order). A bucket is far smaller than the row (a row of 10^6 Gaussian float32 values
// fills about 150 buckets of at most 5.3% of it), so its passes run in the core's cache instead
// of memory; the members of a team sort the buckets that start in their range of the row, with
// no barrier, and unpack each bucket while it is in cache.

// sorted[i] = the value of elems[i]'s key, perm[i] = its index, for i in [begin, end).
template <class T>
void unpack_elements(const KeyIndex<typename RadixKey<T>::type>* elems, int64_t begin, int64_t end, T* sorted,
                     int32_t* perm) {
  for (int64_t i = begin; i < end; ++i) {
    perm[i] = index_of(elems[i]);
    sorted[i] = from_descending_key<T>(key_of(elems[i]));
  }
}

constexpr int kMsdBits = 11;
constexpr int kMsdBuckets = 1 << kMsdBits;
constexpr int64_t kSmallBucket = 256;  // buckets up to this size: std::sort

template <class K>
struct LowDigits {
  static constexpr int kBits = 8 * static_cast<int>(sizeof(K)) - kMsdBits;  // below the top digit
  static constexpr int kPasses = (kBits + 11) / 12;
  static constexpr int kDigit = (kBits + kPasses - 1) / kPasses;  // float32: 2 passes of 11, float64: 5 of 11
  static constexpr int kBuckets = 1 << kDigit;
  static uint32_t digit(K key, int pass) { return static_cast<uint32_t>(key >> (kDigit * pass)) & (kBuckets - 1); }
};

// Entries of argsort_descending_msd_team's counts per thread.
template <class K>
constexpr int msd_counts() {
  return kMsdBuckets + LowDigits<K>::kPasses * LowDigits<K>::kBuckets;
}

template <class K>
inline uint32_t msd_digit(K key) {
  return static_cast<uint32_t>(key >> (8 * sizeof(K) - kMsdBits));
}

// Sorts the m elements of a bucket src by their low bits, stably, with dst (m entries) as the
// other buffer and hist (LowDigits<K>::kPasses * kBuckets entries) as scratch; returns the
// buffer holding the result (src or dst).
template <class K>
KeyIndex<K>* sort_bucket(KeyIndex<K>* src, KeyIndex<K>* dst, int64_t m, uint32_t* hist) {
  using L = LowDigits<K>;
  if (m <= kSmallBucket) {
    std::sort(src, src + m);
    return src;
  }
  std::fill(hist, hist + L::kPasses * L::kBuckets, 0u);
  for (int64_t i = 0; i < m; ++i) {
    const K key = key_of(src[i]);
    for (int p = 0; p < L::kPasses; ++p) ++hist[p * L::kBuckets + L::digit(key, p)];
  }
  for (int p = 0; p < L::kPasses; ++p) {
    uint32_t* h = hist + p * L::kBuckets;
    if (h[L::digit(key_of(src[0]), p)] == static_cast<uint64_t>(m)) continue;  // one digit only
    uint32_t sum = 0;
    for (int d = 0; d < L::kBuckets; ++d) {
      const uint32_t count = h[d];
      h[d] = sum;
      sum += count;
    }
    for (int64_t i = 0; i < m; ++i) {
      const KeyIndex<K> e = src[i];
      dst[h[L::digit(key_of(e), p)]++] = e;
    }
    std::swap(src, dst);
  }
  return src;
}

// The sort of one long row by the calling team (inside a parallel region, every member calls it;
// a team of one outside any region), unpacked: sorted = (scale * x) sorted descending and perm of
// the whole row, every member writing the buckets it sorts (a barrier must follow before any reads another member's
// part). a, b: element buffers of n entries; counts: team * msd_counts<K>() entries.
template <class T>
void argsort_descending_msd_team(const T* x, T scale, int64_t n, KeyIndex<typename RadixKey<T>::type>* a,
                                 KeyIndex<typename RadixKey<T>::type>* b, uint32_t* counts, T* sorted,
                                 int32_t* perm) {
  using K = typename RadixKey<T>::type;
  constexpr int kStride = msd_counts<K>();
  const auto [t, team] = team_member();
  const int64_t begin = n * t / team, end = n * (t + 1) / team;
  uint32_t* mine = counts + static_cast<int64_t>(kStride) * t;
  std::fill(mine, mine + kMsdBuckets, 0u);
  for (int64_t i = begin; i < end; ++i) {
    const K key = descending_key<T>(scale * x[i]);
    a[i] = KeyIndex<K>::make(key, static_cast<int32_t>(i));
    ++mine[msd_digit(key)];
  }
  team_barrier();
  // Digit d of thread t starts after every smaller digit and after digit d of threads t' < t.
  uint32_t offsets[kMsdBuckets], bucket[kMsdBuckets + 1];
  uint32_t sum = 0;
  for (int d = 0; d < kMsdBuckets; ++d) {
    uint32_t total = 0, before = 0;
    for (int u = 0; u < team; ++u) {
      const uint32_t c = counts[static_cast<int64_t>(kStride) * u + d];
      total += c;
      before += u < t ? c : 0;
    }
    bucket[d] = sum;
    offsets[d] = sum + before;
    sum += total;
  }
  bucket[kMsdBuckets] = sum;
  for (int64_t i = begin; i < end; ++i) {
    const KeyIndex<K> e = a[i];
    b[offsets[msd_digit(key_of(e))]++] = e;
  }
  team_barrier();
  for (int d = 0; d < kMsdBuckets; ++d) {  // the buckets that start in this member's range
    const int64_t s = bucket[d], m = int64_t{bucket[d + 1]} - s;
    if (m == 0 || s < begin || s >= end) continue;
    const KeyIndex<K>* e = sort_bucket(b + s, a + s, m, mine + kMsdBuckets);
    unpack_elements<T>(e - s, s, s + m, sorted, perm);
  }
}

}  // namespace diffcomb
