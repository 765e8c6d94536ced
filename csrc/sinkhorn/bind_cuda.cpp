// diffcomb._C_cuda entry points of the Sinkhorn family (api.h); context:
// work (cuda_work_bytes of device scratch), device, stream.
#include "common/registry.h"
#include "sinkhorn/api.h"
#include "sinkhorn/args.h"

namespace skh = diffcomb::sinkhorn;

DC_BIND_CUDA(sinkhorn) {
  namespace py = pybind11;
  m.def("sinkhorn_work_bytes", &skh::cuda_work_bytes,
        "Bytes of device scratch that the Sinkhorn entry points need for a batch (B, n, m).", py::arg("batch"),
        py::arg("n"), py::arg("m"));
  m.def("sinkhorn_forward", &skh::forward_cuda, skh::kForwardDoc, DC_SINKHORN_FORWARD_ARGS, py::arg("work"),
        py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_implicit_backward", &skh::implicit_backward_cuda, skh::kImplicitDoc, DC_SINKHORN_IMPLICIT_ARGS,
        py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_implicit_solve", &skh::implicit_solve_cuda, skh::kSolveDoc, DC_SINKHORN_SOLVE_ARGS,
        py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_unrolled_backward", &skh::unrolled_backward_cuda, skh::kUnrolledDoc, DC_SINKHORN_UNROLLED_ARGS,
        py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_forward_ext", &skh::forward_ext_cuda, skh::kForwardExtDoc, DC_SINKHORN_FORWARD_EXT_ARGS,
        py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_implicit_backward_ext", &skh::implicit_backward_ext_cuda, skh::kImplicitExtDoc,
        DC_SINKHORN_IMPLICIT_EXT_ARGS, py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_unrolled_backward_ext", &skh::unrolled_backward_ext_cuda, skh::kUnrolledExtDoc,
        DC_SINKHORN_UNROLLED_EXT_ARGS, py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_cloud_forward", &skh::cloud_forward_cuda, skh::kCloudForwardDoc, DC_SINKHORN_CLOUD_FORWARD_ARGS,
        py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
  m.def("sinkhorn_cloud_backward", &skh::cloud_backward_cuda, skh::kCloudBackwardDoc,
        DC_SINKHORN_CLOUD_BACKWARD_ARGS, py::arg("work"), py::arg("device"), py::arg("stream"), nogil);
}
