/// @file baukit/lens_page.hpp
/// @brief Moved to `<baukit/lens/page.hpp>`; this forwarding header keeps the old path working for now.
#pragma once

#include <baukit/lens/page.hpp>
