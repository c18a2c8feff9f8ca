/// @file distributed/process_group.hpp
/// @brief `ProcessGroup`: the processes of a job connected through torch.distributed's c10d — a `TCPStore`
/// served by rank 0 at `MASTER_ADDR:MASTER_PORT` (or by torchrun's agent there; or a `FileStore` on a shared file
/// system) for the rendezvous and Gloo for the collectives — and `reduce(stat, group)`, which gives every rank the
/// merge of all ranks' statistics in rank order. A job of one process needs none of it (and works without Gloo). Gloo
/// is compiled in where `BAUKIT_WITH_GLOO` is defined (CMake does so when it finds the headers of Debian's
/// `libgloo-dev`, and defines c10d's own `USE_C10D_GLOO`).
///
/// @code
/// auto group = baukit::distributed::ProcessGroup::connect(baukit::distributed::Environment::from_variables());
/// auto variance = baukit::distributed::reduce(local_variance, group);  // the same on every rank
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/distributed/environment.hpp>
#include <baukit/io/safetensors.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef BAUKIT_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace baukit::distributed {

namespace detail {

/// An exception's message without the stack trace c10's errors append.
inline std::string without_backtrace(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

}  // namespace detail

/// How `ProcessGroup::connect` meets the other processes.
struct GroupOptions {
  /// How long to wait for the others, at the rendezvous and in each collective: a rank that died makes the rest
  /// fail with an error after at most this long instead of hanging.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(5);
  /// Meet through this file (on a file system every process sees) instead of rank 0's TCP store.
  TORCH_ARG(std::filesystem::path, file_store) = {};
  /// The address this process's Gloo connections bind to.
  TORCH_ARG(std::string, hostname) = "127.0.0.1";
};

/// The processes of one job; see the file's description.
class ProcessGroup {
 public:
  /// Connects to the job `env` describes (a job of one connects to nothing).
  static ProcessGroup connect(const Environment& env, const GroupOptions& options = {}) {
    ProcessGroup group;
    group.rank_ = env.rank;
    group.world_size_ = env.world_size;
    if (env.world_size == 1) return group;
#ifdef BAUKIT_WITH_GLOO
    c10::intrusive_ptr<c10d::Store> store;
    try {
      if (!options.file_store().empty()) {
        store = c10::make_intrusive<c10d::FileStore>(options.file_store().string(), static_cast<int>(env.world_size));
      } else {
        c10d::TCPStoreOptions tcp;
        tcp.port = static_cast<std::uint16_t>(env.master_port);
        tcp.isServer = env.rank == 0 && !env.agent_store;
        if (!env.agent_store) tcp.numWorkers = static_cast<std::size_t>(env.world_size);
        tcp.waitWorkers = !env.agent_store;
        tcp.timeout = options.timeout();
        store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, tcp);
      }
      // Our keys under a prefix of their own: torchrun's agent keeps its own in the store it serves.
      store = c10::make_intrusive<c10d::PrefixStore>("baukit", store);
      store->setTimeout(options.timeout());
      auto gloo = c10d::ProcessGroupGloo::Options::create();
      gloo->timeout = options.timeout();
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname()));
      group.gloo_ = std::make_shared<c10d::ProcessGroupGloo>(store, static_cast<int>(env.rank),
                                                             static_cast<int>(env.world_size), gloo);
    } catch (const std::exception& e) {
      throw std::runtime_error(
          fmt::format("rank {} of {}: could not meet the others at {} within {} ms: {}", env.rank, env.world_size,
                      options.file_store().empty() ? fmt::format("{}:{}", env.master_addr, env.master_port)
                                                   : options.file_store().string(),
                      options.timeout().count(), detail::without_backtrace(e)));
    }
    return group;
#else
    (void)options;
    throw std::runtime_error(fmt::format(
        "rank {} of {}: this build of baukit has no Gloo (install libgloo-dev and reconfigure) to join a job of "
        "more than one process",
        env.rank, env.world_size));
#endif
  }

  /// This process, 0 .. world_size() - 1.
  [[nodiscard]] int64_t rank() const {
    return rank_;
  }
  /// Processes in the job.
  [[nodiscard]] int64_t world_size() const {
    return world_size_;
  }

  /// Every rank's `tensor` (the same shape and dtype on each), in rank order.
  [[nodiscard]] std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) {
    if (world_size_ == 1) return {tensor};
#ifdef BAUKIT_WITH_GLOO
    std::vector<torch::Tensor> input{tensor.contiguous()};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int64_t r = 0; r < world_size_; ++r) output[0].push_back(torch::empty_like(input[0]));
    wait(gloo_->allgather(output, input), "all_gather");
    return output[0];
#else
    return {};
#endif
  }

  /// Every rank's bytes, in rank order (any length on each).
  [[nodiscard]] std::vector<std::string> all_gather_bytes(const std::string& bytes) {
    if (world_size_ == 1) return {bytes};
    const auto lengths = all_gather(torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64));
    int64_t longest = 0;
    for (const auto& length : lengths) longest = std::max(longest, length.item<int64_t>());
    auto padded = torch::zeros({longest}, torch::kUInt8);
    std::memcpy(padded.data_ptr(), bytes.data(), bytes.size());
    const auto gathered = all_gather(padded);
    std::vector<std::string> out;
    for (std::size_t r = 0; r < gathered.size(); ++r)
      out.emplace_back(static_cast<const char*>(gathered[r].data_ptr()),
                       static_cast<std::size_t>(lengths[r].item<int64_t>()));
    return out;
  }

  /// Waits until every rank has come here.
  void barrier() {
    if (world_size_ == 1) return;
    (void)all_gather(torch::zeros({1}, torch::kInt64));
  }

 private:
#ifdef BAUKIT_WITH_GLOO
  template <typename Work>
  void wait(const Work& work, const char* what) {
    try {
      work->wait();  // bounded by GroupOptions::timeout, which Gloo applies to each operation
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("rank {} of {}: {} failed (did another rank stop?): {}", rank_, world_size_,
                                           what, detail::without_backtrace(e)));
    }
  }
  std::shared_ptr<c10d::ProcessGroupGloo> gloo_;
#endif
  int64_t rank_ = 0, world_size_ = 1;
};

/// The merge of every rank's `stat`, in rank order, on every rank (a statistic as in `baukit::stats`: its state
/// travels as safetensors bytes, so any statistic works, whatever its size on each rank).
template <typename S>
S reduce(const S& stat, ProcessGroup& group) {
  if (group.world_size() == 1) return stat;
  const auto states = group.all_gather_bytes(io::safetensors_bytes(stat.state()));
  S merged = S::from_state(io::read_safetensors_bytes(states[0]));
  for (std::size_t r = 1; r < states.size(); ++r) merged.merge(S::from_state(io::read_safetensors_bytes(states[r])));
  return merged;
}

}  // namespace baukit::distributed
