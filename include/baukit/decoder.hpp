/// @file baukit/decoder.hpp
/// @brief Moved to `<baukit/lens/decoder.hpp>`; this forwarding header keeps the old path working for now.
#pragma once

#include <baukit/lens/decoder.hpp>
