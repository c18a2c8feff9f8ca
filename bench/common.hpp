// Shared by the benchmarks: timing, the machine's matmul rate and memory bandwidth measured in the same run, and
// peak memory.
#pragma once

#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace bench {

/// Seconds taken by `fn`.
inline double time_once(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The median of `runs` timings of `fn`, after one warm-up run.
inline double median_seconds(const std::function<void()>& fn, int runs = 5) {
  fn();
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) times.push_back(time_once(fn));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// The machine's float32 matmul rate in FLOP/s (a 2048^3 product, median of 5).
inline double matmul_flops() {
  const auto a = torch::randn({2048, 2048}), b = torch::randn({2048, 2048});
  const double seconds = median_seconds([&] { (void)torch::mm(a, b); });
  return 2.0 * 2048 * 2048 * 2048 / seconds;
}

/// The machine's memory read bandwidth in bytes/s (summing 1 GiB, median of 5).
inline double read_bandwidth() {
  const auto t = torch::ones({int64_t{1} << 28});
  const double seconds = median_seconds([&] { (void)t.sum(); });
  return static_cast<double>(t.nbytes()) / seconds;
}

/// Peak resident memory of this process so far, in bytes.
inline double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

}  // namespace bench
