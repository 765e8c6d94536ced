// diffcomb._C entry points of the Sinkhorn family (api.h); context: threads.
#include "common/registry.h"
#include "sinkhorn/api.h"
#include "sinkhorn/args.h"

namespace skh = diffcomb::sinkhorn;

DC_BIND_CPU(sinkhorn) {
  namespace py = pybind11;
  m.def("sinkhorn_forward", &skh::forward_cpu, skh::kForwardDoc, DC_SINKHORN_FORWARD_ARGS, py::arg("threads"),
        nogil);
  m.def("sinkhorn_implicit_backward", &skh::implicit_backward_cpu, skh::kImplicitDoc, DC_SINKHORN_IMPLICIT_ARGS,
        py::arg("threads"), nogil);
  m.def("sinkhorn_implicit_solve", &skh::implicit_solve_cpu, skh::kSolveDoc, DC_SINKHORN_SOLVE_ARGS,
        py::arg("threads"), nogil);
  m.def("sinkhorn_unrolled_backward", &skh::unrolled_backward_cpu, skh::kUnrolledDoc, DC_SINKHORN_UNROLLED_ARGS,
        py::arg("threads"), nogil);
  m.def("sinkhorn_forward_ext", &skh::forward_ext_cpu, skh::kForwardExtDoc, DC_SINKHORN_FORWARD_EXT_ARGS,
        py::arg("threads"), nogil);
  m.def("sinkhorn_implicit_backward_ext", &skh::implicit_backward_ext_cpu, skh::kImplicitExtDoc,
        DC_SINKHORN_IMPLICIT_EXT_ARGS, py::arg("threads"), nogil);
  m.def("sinkhorn_unrolled_backward_ext", &skh::unrolled_backward_ext_cpu, skh::kUnrolledExtDoc,
        DC_SINKHORN_UNROLLED_EXT_ARGS, py::arg("threads"), nogil);
  m.def("sinkhorn_cloud_forward", &skh::cloud_forward_cpu, skh::kCloudForwardDoc, DC_SINKHORN_CLOUD_FORWARD_ARGS,
        py::arg("threads"), nogil);
  m.def("sinkhorn_cloud_backward", &skh::cloud_backward_cpu, skh::kCloudBackwardDoc, DC_SINKHORN_CLOUD_BACKWARD_ARGS,
        py::arg("threads"), nogil);
}
