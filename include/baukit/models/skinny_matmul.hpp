/// @file skinny_matmul.hpp
/// @brief Moved to `<baukit/kernels/skinny.hpp>` (namespace `baukit::kernels`); this forwarding header keeps the old
/// path and names working for now.
#pragma once

#include <baukit/kernels/skinny.hpp>

namespace baukit::models {
using kernels::kSkinnyMaxRows;
using kernels::skinny_addmm;
using kernels::skinny_linear;
using kernels::skinny_matmul_available;
}  // namespace baukit::models
