/// @file baukit.hpp
/// @brief The umbrella header: everything baukit-cpp offers.
#pragma once

#include <baukit/hook.hpp>
#include <baukit/modules.hpp>
#include <baukit/trace.hpp>
