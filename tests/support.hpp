// What the test files share: reading and writing files, scratch folders, shell quoting, and special files (FIFOs,
// device nodes, sockets) for the hostile-input tests.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace baukit_tests {

namespace fs = std::filesystem;

/// The test data folder and the fixtures in it.
inline const fs::path kData = fs::path(BAUKIT_SOURCE_DIR) / "tests" / "data";
inline const fs::path kFixtures = kData / "fixtures";

/// A JSON file (the test fails if it cannot be opened).
inline nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

/// A file's bytes ("" if it cannot be read).
inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// Writes `bytes` to `path`, replacing it.
inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

/// An empty folder `build/test-scratch/<name>` (emptied if it existed).
inline fs::path scratch(const std::string& name) {
  auto dir = fs::path(BAUKIT_BINARY_DIR) / "test-scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

/// `s` quoted for the shell.
inline std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// Makes a FIFO at `path`.
inline void make_fifo(const fs::path& path) {
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
}

/// Makes a unix socket bound at `path`; returns its descriptor (close it when done).
inline int make_socket(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.string().size() < sizeof(address.sun_path));
  std::strcpy(address.sun_path, path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  return fd;
}

/// A character device like `/dev/null` (minor 3) or `/dev/full` (minor 7) inside `folder`, made with mknod where
/// allowed (as root); elsewhere the system's own node, which such a user cannot replace anyway.
inline fs::path char_device(const fs::path& folder, const std::string& name, unsigned minor) {
  const auto path = folder / name;
  if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(1, minor)) == 0) return path;
  return fs::path("/dev") / name;
}

/// Whether `path` is (still) a character device.
inline bool is_char_device(const fs::path& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISCHR(info.st_mode);
}

/// Guards a test against a reader that blocks on a FIFO: after two seconds it opens the FIFOs' write ends (which
/// succeeds only while a reader waits) and closes them, so the reader sees end-of-file and the test fails instead
/// of hanging. `blocked` says whether that happened.
class FifoWatchdog {
 public:
  explicit FifoWatchdog(std::vector<fs::path> fifos)
      : thread_([this, fifos = std::move(fifos)] {
          const auto start = std::chrono::steady_clock::now();
          while (!done_ && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            if (std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) continue;
            for (const auto& fifo : fifos)
              if (const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK); fd >= 0) {
                blocked_ = true;
                ::close(fd);
              }
          }
        }) {}
  FifoWatchdog(const FifoWatchdog&) = delete;
  FifoWatchdog& operator=(const FifoWatchdog&) = delete;
  ~FifoWatchdog() {
    done_ = true;
    thread_.join();
  }
  /// Whether some reader blocked on one of the FIFOs.
  [[nodiscard]] bool blocked() const { return blocked_; }

 private:
  std::atomic<bool> done_{false}, blocked_{false};
  std::thread thread_;
};

}  // namespace baukit_tests
