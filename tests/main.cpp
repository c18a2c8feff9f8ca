// The Catch2 runner, in a translation unit of its own so that test files recompile alone.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
