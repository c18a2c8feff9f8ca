/// @file models/blas.hpp
/// @brief Moved to `<baukit/kernels/blas.hpp>` (namespace `baukit::kernels`); this forwarding header keeps the old
/// path and names working for now.
#pragma once

#include <baukit/kernels/blas.hpp>

namespace baukit::models {
using kernels::blas_runs_generic_kernels;
using kernels::use_openblas_kernels_for_this_cpu;
}  // namespace baukit::models
