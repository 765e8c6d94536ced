// The vector loops of the soft-DTW CPU drivers (cpu.cpp: one pair along its
// diagonals, or tiles of it; cpu_lanes.cpp: groups of small pairs
// interleaved, layout.h Arrays::lanes): rows [i0, i1] of diagonal k under one
// pass's step (softdtw.h), with i the step's index (i * lanes + l for a
// group). Defined in cpu_rows.cpp, each compiled for several instruction
// sets and picked at load time.
#pragma once

#include <cstdint>

#include "../common/vmath.h"
#include "layout.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {

// Rows [i0, i1] of diagonal k of the arrays under one pass's step.
using Rows = void(const Arrays& a, Smoothing s, int64_t k, int64_t i0, int64_t i1);
using RowsFn = Rows*;

// One function per (pass, mode): the forward, the forward with its tangent,
// the backward and the second-order backward; soft (gamma > 0) and hard.
Rows forward_soft, forward_hard, tangent_soft, tangent_hard, backward_soft, backward_hard, second_backward_soft,
    second_backward_hard;

// The forward and the backward of an interleaved group (Arrays::lanes pairs; the one-pair
// functions above take a single pair, lanes = 1, with the stride a constant).
Rows forward_soft_lanes, forward_hard_lanes, backward_soft_lanes, backward_hard_lanes;

}  // namespace softdtw
}  // namespace diffcomb
