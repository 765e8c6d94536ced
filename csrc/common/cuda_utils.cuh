// CUDA helpers shared by every family's cuda.cu: a device guard that restores
// the caller's device, launch checks that turn CUDA errors into exceptions
// (pybind11 raises them as RuntimeError), and the caller's stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace diffcomb {

inline void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("diffcomb CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

// Checks the launch just made (configuration errors; asynchronous faults show
// up at the caller's next synchronization, as with any CUDA op).
inline void check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

// Makes `device` current for the scope and restores the previous device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) cuda_check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

inline unsigned int grid_for(int64_t items, int threads) {
  return static_cast<unsigned int>((items + threads - 1) / threads);
}

}  // namespace diffcomb
