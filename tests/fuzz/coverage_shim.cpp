// Coverage for GCC-built fuzzers: GCC's -fsanitize-coverage=trace-pc calls __sanitizer_cov_trace_pc at every basic
// block; libFuzzer learns from 8-bit counters, so each call bumps the counter its caller's address hashes to.
// Compiled without coverage instrumentation (it would call itself).
#include <cstddef>
#include <cstdint>

extern "C" void __sanitizer_cov_8bit_counters_init(std::uint8_t* begin, std::uint8_t* end);

namespace {

alignas(64) std::uint8_t counters[1 << 16];

struct RegisterCounters {
  RegisterCounters() { __sanitizer_cov_8bit_counters_init(counters, counters + sizeof counters); }
} registered;

}  // namespace

extern "C" __attribute__((no_sanitize("address", "undefined"))) void __sanitizer_cov_trace_pc() {
  const auto pc = reinterpret_cast<std::uintptr_t>(__builtin_return_address(0));
  counters[(pc ^ (pc >> 16)) & (sizeof counters - 1)]++;
}

// GCC's trace-cmp also reports floating-point comparisons, which libFuzzer does not use.
extern "C" void __sanitizer_cov_trace_cmpf(float, float) {}
extern "C" void __sanitizer_cov_trace_cmpd(double, double) {}
