// Work memory of the CPU's long-row paths, kept between calls.
//
// One long row needs tens of bytes of work memory per element (csrc/isotonic/cpu.cpp: radix
// buffers, the sorted row, the chunk stacks): about 64 MB for a float32 row of 10^6. Fresh memory
// of that size comes from mmap, and its first touch costs a page fault and the kernel's zeroing
// per 4 KiB page: about a third of the whole sort-and-project of such a row on one core. So one
// block (the largest asked for, up to kKeptBytes) is kept for the process and lent to one call
// at a time; a call that finds it lent (another thread of the program is in a long-row call) or
// needs more than kKeptBytes allocates its own block and frees it on return. The kept block is
// freed at exit. Only memory is kept: every call writes what it reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace diffcomb {

class Workspace {
 public:
  static constexpr size_t kKeptBytes = size_t{256} << 20;

  explicit Workspace(size_t bytes) {
    Kept& kept = kept_block();
    if (bytes <= kKeptBytes && kept.mutex.try_lock()) {
      lock_ = std::unique_lock<std::mutex>(kept.mutex, std::adopt_lock);
      if (kept.size < bytes) {
        kept.block.reset();
        kept.size = 0;
        kept.block.reset(new unsigned char[bytes]);
        kept.size = bytes;
      }
      data_ = kept.block.get();
    } else {
      own_.reset(new unsigned char[bytes]);
      data_ = own_.get();
    }
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // The next `count` entries of type U, 64-byte aligned (size_of gives the bytes to ask for).
  template <class U>
  U* take(int64_t count) {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(data_);
    used_ = static_cast<size_t>(((base + used_ + 63) & ~std::uintptr_t{63}) - base);
    U* p = reinterpret_cast<U*>(data_ + used_);
    used_ += sizeof(U) * static_cast<size_t>(count);
    return p;
  }

  // Bytes that take<U>(count) uses at most (its alignment included).
  template <class U>
  static size_t size_of(int64_t count) {
    return sizeof(U) * static_cast<size_t>(count) + 64;
  }

 private:
  struct Kept {
    std::mutex mutex;
    std::unique_ptr<unsigned char[]> block;
    size_t size = 0;
  };
  static Kept& kept_block() {
    static Kept kept;
    return kept;
  }

  size_t used_ = 0;
  unsigned char* data_ = nullptr;
  std::unique_lock<std::mutex> lock_;
  std::unique_ptr<unsigned char[]> own_;
};

}  // namespace diffcomb
