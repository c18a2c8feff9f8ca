/// @file distributed/launch.hpp
/// @brief `launch_local`: a job of `nproc` processes on this machine, as `torchrun --nproc-per-node N` starts one
/// — the same program started `nproc` times with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `MASTER_ADDR` 127.0.0.1, `MASTER_PORT` a free port), waited for, and stopped together: when one process fails,
/// the others are terminated and the error names the rank and how it ended.
///
/// @code
/// // In main(): unless this process is one of the ranks already, run this program as 4 ranks and wait for them.
/// if (!std::getenv("RANK")) std::exit(baukit::distributed::launch_local(4, argv[0], {"--corpus", "wiki.txt"}));
/// @endcode
#pragma once

#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

/// This process's environment (POSIX's `environ`), which the ranks inherit.
extern char** environ;  // NOLINT

namespace baukit::distributed {

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("free_loopback_port: socket: {}", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error(fmt::format("free_loopback_port: {}", error));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

/// Runs `program` with `args` as ranks `0 .. nproc - 1` of one job on this machine and waits for them all;
/// returns 0 when every rank exits with 0, else throws naming the first rank that failed (the rest are
/// terminated). The ranks meet at 127.0.0.1:`port` (0: a free port).
inline int launch_local(int nproc, const std::string& program, const std::vector<std::string>& args, int port = 0) {
  if (nproc < 1) throw std::invalid_argument(fmt::format("launch_local: {} processes", nproc));
  if (port == 0) port = free_loopback_port();
  // The environment of this process, without the variables each rank gets its own value of.
  std::vector<std::string> base;
  for (char** variable = environ; *variable; ++variable) {
    const std::string entry = *variable;
    const auto name = entry.substr(0, entry.find('='));
    if (name != "RANK" && name != "WORLD_SIZE" && name != "LOCAL_RANK" && name != "LOCAL_WORLD_SIZE" &&
        name != "MASTER_ADDR" && name != "MASTER_PORT")
      base.push_back(entry);
  }
  std::vector<pid_t> pids;
  auto stop_all = [&] {
    for (const pid_t pid : pids)
      if (pid > 0) ::kill(pid, SIGTERM);
    for (const pid_t pid : pids)
      if (pid > 0) ::waitpid(pid, nullptr, 0);
  };
  for (int rank = 0; rank < nproc; ++rank) {
    auto environment = base;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{"RANK", std::to_string(rank)},
                                                          {"WORLD_SIZE", std::to_string(nproc)},
                                                          {"LOCAL_RANK", std::to_string(rank)},
                                                          {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                                                          {"MASTER_ADDR", "127.0.0.1"},
                                                          {"MASTER_PORT", std::to_string(port)}})
      environment.push_back(name + "=" + value);
    std::vector<char*> envp, argv{const_cast<char*>(program.c_str())};
    for (auto& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (const int error = ::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), envp.data())) {
      stop_all();
      throw std::runtime_error(fmt::format("launch_local: cannot start {}: {}", program, std::strerror(error)));
    }
    pids.push_back(pid);
  }
  // Wait for all; the first failure stops the rest.
  for (std::size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    const pid_t pid = ::wait(&status);
    if (pid < 0) break;
    const auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) {
      ++left;
      continue;
    }
    const auto rank = it - pids.begin();
    *it = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    stop_all();
    throw std::runtime_error(
        WIFEXITED(status)
            ? fmt::format("launch_local: rank {} of {} exited with status {}", rank, nproc, WEXITSTATUS(status))
            : fmt::format("launch_local: rank {} of {} was killed by signal {}", rank, nproc, WTERMSIG(status)));
  }
  return 0;
}

}  // namespace baukit::distributed
