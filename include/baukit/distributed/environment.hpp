/// @file distributed/environment.hpp
/// @brief Where this process stands in a job of many: its rank, the world size, its rank on its machine and the
/// rendezvous address, read from the variables of the launcher that started it — torchrun (`RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`)
/// or Open MPI's `mpirun` (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_LOCAL_RANK`) — or one
/// process alone when none set them.
///
/// @code
/// const auto env = baukit::distributed::Environment::from_variables();
/// std::cerr << "rank " << env.rank << " of " << env.world_size << " (" << env.launcher << ")\n";
/// @endcode
#pragma once

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace baukit::distributed {

/// This process's place in a job, and where the job meets.
struct Environment {
  int64_t rank = 0;                       ///< This process, 0 .. world_size - 1.
  int64_t world_size = 1;                 ///< Processes in the job.
  int64_t local_rank = 0;                 ///< This process on its machine (which accelerator it takes).
  std::string master_addr = "127.0.0.1";  ///< Where rank 0 serves the rendezvous store.
  int64_t master_port = 29500;            ///< Its port (torchrun's default).
  std::string launcher = "none";          ///< "torchrun", "slurm", "openmpi" or "none".
  /// The rendezvous store is served already, by torchrun's agent (`TORCHELASTIC_USE_AGENT_STORE=True`): every
  /// rank connects to it as a client, rank 0 included.
  bool agent_store = false;

  /// A variable's value, or none: `std::getenv` unless a test gives another.
  using Lookup = std::function<std::optional<std::string>(const std::string&)>;

  /// Reads the variables of the first launcher whose variables are set (torchrun's, then Slurm's, then Open
  /// MPI's); `MASTER_ADDR` and `MASTER_PORT` apply to all three (for Slurm, `MASTER_ADDR` defaults to
  /// `SLURM_LAUNCH_NODE_IPADDR`). A malformed or inconsistent value is an error naming the variable.
  static Environment from_variables(const Lookup& lookup = {}) {
    const Lookup get = lookup ? lookup : [](const std::string& name) -> std::optional<std::string> {
      if (const char* value = std::getenv(name.c_str())) return std::string(value);
      return std::nullopt;
    };
    Environment env;
    auto number = [&](const char* name, int64_t fallback) {
      const auto text = get(name);
      if (!text) return fallback;
      int64_t value = 0;
      const auto* end = text->data() + text->size();
      const auto [at, error] = std::from_chars(text->data(), end, value);
      if (error != std::errc() || at != end || value < 0)
        throw std::invalid_argument(fmt::format("{}={}: a non-negative integer was expected", name, *text));
      return value;
    };
    auto read = [&](const char* launcher, const char* rank, const char* size, const char* local) {
      if (!get(rank) && !get(size)) return false;
      if (!get(rank) || !get(size))
        throw std::invalid_argument(
            fmt::format("{} is set but {} is not: both are needed", get(rank) ? rank : size, get(rank) ? size : rank));
      env.launcher = launcher;
      env.rank = number(rank, 0);
      env.world_size = number(size, 1);
      env.local_rank = number(local, env.rank);
      if (env.world_size < 1 || env.rank >= env.world_size)
        throw std::invalid_argument(fmt::format("{}={} does not fit {}={}", rank, env.rank, size, env.world_size));
      return true;
    };
    const bool torchrun = read("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK");
    env.agent_store = torchrun && get("TORCHELASTIC_USE_AGENT_STORE") == std::optional<std::string>("True");
    const bool slurm = !torchrun && read("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
    if (slurm)
      if (const auto launch = get("SLURM_LAUNCH_NODE_IPADDR")) env.master_addr = *launch;
    if (!torchrun && !slurm)
      read("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK");
    if (const auto addr = get("MASTER_ADDR")) {
      if (addr->empty()) throw std::invalid_argument("MASTER_ADDR is empty");
      env.master_addr = *addr;
    }
    env.master_port = number("MASTER_PORT", env.master_port);
    if (env.master_port < 1 || env.master_port > 65535)
      throw std::invalid_argument(fmt::format("MASTER_PORT={} is not a port (1-65535)", env.master_port));
    return env;
  }
};

}  // namespace baukit::distributed
