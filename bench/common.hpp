// Shared by the benchmarks: timing, the machine's matmul rate and memory bandwidth measured in the same run, and
// peak memory.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
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

/// The fastest of `runs` timings of `fn`, after one warm-up run: a machine's peak rate, less the noise of others.
inline double best_seconds(const std::function<void()>& fn, int runs = 5) {
  fn();
  double best = time_once(fn);
  for (int i = 1; i < runs; ++i) best = std::min(best, time_once(fn));
  return best;
}

/// The machine's float32 matmul rates in FLOP/s, a 2048^3 product, best of 5: through libtorch's BLAS
/// (`torch::mm`), through oneDNN where libtorch has it, and the faster of the two (the bound's rate).
struct MatmulRates {
  double blas = 0, onednn = 0;  ///< 0: not available
  /// The faster path's rate.
  double best() const { return std::max(blas, onednn); }
};

/// Measures `MatmulRates`.
inline MatmulRates matmul_flops() {
  const auto a = torch::randn({2048, 2048}), b = torch::randn({2048, 2048});
  const double flops = 2.0 * 2048 * 2048 * 2048;
  MatmulRates rates;
  rates.blas = flops / best_seconds([&] { (void)torch::mm(a, b); });
  if (at::hasMKLDNN()) {
    const auto bt = b.t().contiguous();
    rates.onednn = flops / best_seconds([&] { (void)at::mkldnn_linear(a.to_mkldnn(), bt).to_dense(); });
  }
  return rates;
}

/// The machine's memory read bandwidth in bytes/s (summing 1 GiB, best of 5).
inline double read_bandwidth() {
  const auto t = torch::ones({int64_t{1} << 28});
  const double seconds = best_seconds([&] { (void)t.sum(); });
  return static_cast<double>(t.nbytes()) / seconds;
}

/// Peak resident memory of this process so far, in bytes.
inline double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

/// A child process's run: its wall time, peak resident memory and exit status.
struct ChildRun {
  double seconds;         ///< Wall time, start to exit.
  double peak_rss_bytes;  ///< Its peak resident memory.
  int status;             ///< Its exit status (-1 when killed).
};

/// Runs `args` (a program and its arguments) as a child process and waits for it.
inline ChildRun run_child(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          static_cast<double>(usage.ru_maxrss) * 1024.0, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

/// The bytes of a checkpoint's weight files (one or sharded safetensors, or .bin).
inline double checkpoint_bytes(const std::filesystem::path& dir) {
  double bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    if (name.ends_with(".safetensors") || (name.starts_with("pytorch_model") && name.ends_with(".bin")))
      bytes += static_cast<double>(entry.file_size());
  }
  return bytes;
}

}  // namespace bench
