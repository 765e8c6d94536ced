// The vector loops of the soft-DTW CPU drivers (cpu_rows.h).
#include "cpu_rows.h"

namespace diffcomb {
namespace softdtw {
namespace {

// Rows [i0, i1] of one diagonal under a step: one vector loop. Forced inline
// (as the steps are) into the per-instruction-set entry points below.
template <class Step>
DC_STEP_INLINE void run_rows(const Step& step, int64_t i0, int64_t i1) {
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) step(i);
}

}  // namespace

// Each entry point is compiled for several instruction sets (DC_SIMD_CLONES);
// a step left out of line would be compiled only for the baseline one
// (softdtw.h, DC_STEP_INLINE).
#define DC_DEFINE_ROWS(NAME, HARD)                                                                          \
  DC_SIMD_CLONES void forward_##NAME(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) {     \
    run_rows(ForwardStep<VecMath, HARD>(a, k, s), i0, i1);                                                  \
  }                                                                                                         \
  DC_SIMD_CLONES void tangent_##NAME(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) {     \
    run_rows(TangentStep<VecMath, HARD>(a, k, s), i0, i1);                                                  \
  }                                                                                                         \
  DC_SIMD_CLONES void backward_##NAME(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) {    \
    run_rows(BackwardStep<VecMath, HARD>(a, k, s), i0, i1);                                                 \
  }                                                                                                         \
  DC_SIMD_CLONES void second_backward_##NAME(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) { \
    run_rows(SecondBackwardStep<VecMath, HARD>(a, k, s), i0, i1);                                           \
  }

DC_DEFINE_ROWS(soft, false)
DC_DEFINE_ROWS(hard, true)
#undef DC_DEFINE_ROWS

// The passes of interleaved groups (the lane count read from the arrays).
#define DC_DEFINE_GROUP_ROWS(NAME, HARD)                                                                        \
  DC_SIMD_CLONES void forward_##NAME##_lanes(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) {  \
    run_rows(ForwardStep<VecMath, HARD, 0>(a, k, s), i0, i1);                                                    \
  }                                                                                                              \
  DC_SIMD_CLONES void backward_##NAME##_lanes(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1) { \
    run_rows(BackwardStep<VecMath, HARD, 0>(a, k, s), i0, i1);                                                   \
  }

DC_DEFINE_GROUP_ROWS(soft, false)
DC_DEFINE_GROUP_ROWS(hard, true)
#undef DC_DEFINE_GROUP_ROWS

}  // namespace softdtw
}  // namespace diffcomb
