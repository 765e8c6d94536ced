// CPU parallelism over the rows of a batch. The caller passes the thread
// count (torch.get_num_threads() on the Python side), so diffcomb follows
// torch.set_num_threads and keeps no global state of its own.
//
// Threads are plain std::threads started for the call and joined at its end:
// no pool, nothing spinning. An OpenMP team was measured to be 10-30x slower
// here: torch ships its own OpenMP runtime, and two runtimes whose idle
// threads spin-wait fight over the cores whenever torch ops and diffcomb ops
// alternate (as they always do in a training step). Starting a thread costs
// tens of microseconds, so only batches with enough work are split.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace diffcomb {

// Splits [0, rows) into one contiguous range per thread and calls
// f(begin, end) once per range, so f can allocate its scratch once. The
// calling thread takes the first range. row_cost is a rough count of
// elementary operations per row; below kMinParallelWork in total the call
// stays on the calling thread.
template <class F>
void parallel_rows(int64_t rows, int num_threads, int64_t row_cost, F&& f) {
  constexpr int64_t kMinParallelWork = int64_t(1) << 17;
  int64_t nt = std::min<int64_t>(std::max(num_threads, 1), rows);
  const int64_t work = rows * std::max<int64_t>(row_cost, 1);
  nt = std::min<int64_t>(nt, std::max<int64_t>(work / kMinParallelWork, 1));
  if (nt <= 1) {
    if (rows > 0) f(int64_t{0}, rows);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(nt);
  workers.reserve(nt - 1);
  for (int64_t t = 1; t < nt; ++t) {
    workers.emplace_back([&, t] {
      try {
        f(rows * t / nt, rows * (t + 1) / nt);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  try {
    f(int64_t{0}, rows / nt);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace diffcomb
