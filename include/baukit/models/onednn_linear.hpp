/// @file onednn_linear.hpp
/// @brief Moved to `<baukit/kernels/onednn.hpp>` (namespace `baukit::kernels`); this forwarding header keeps the old
/// path and names working for now.
#pragma once

#include <baukit/kernels/onednn.hpp>

namespace baukit::models {
using kernels::onednn_linear;
}  // namespace baukit::models
