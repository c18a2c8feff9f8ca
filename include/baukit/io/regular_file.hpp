/// @file regular_file.hpp
/// @brief Opening an input that must be a regular file, without ever blocking: a FIFO, device, socket or folder
/// given where a checkpoint, `config.json` or `vocab.json` belongs is refused by name instead of hanging in `open()`.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

namespace baukit::io {

/// What kind of file system object `mode` (from `stat`) describes, for messages.
inline const char* describe_file_type(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

/// A read-only descriptor of a regular file, closed on destruction; `error` says why there is none.
class RegularFile {
 public:
  /// Opens `path` (following symbolic links) with `O_NONBLOCK`, so a FIFO cannot block the call, and keeps it only
  /// if it is a regular file.
  explicit RegularFile(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      error_ = std::string("cannot open: ") + std::strerror(errno);
      return;
    }
    struct stat info {};
    if (::fstat(fd_, &info) != 0) {
      error_ = std::string("cannot stat: ") + std::strerror(errno);
    } else if (!S_ISREG(info.st_mode)) {
      error_ = std::string("is ") + describe_file_type(info.st_mode) + ", not a regular file";
    } else {
      size_ = static_cast<std::size_t>(info.st_size);
      ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);  // ordinary reads from here on
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// Whether the file is open.
  [[nodiscard]] bool ok() const noexcept { return fd_ >= 0; }
  /// Why it is not ("cannot open: No such file or directory", "is a FIFO (named pipe), not a regular file").
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  /// The descriptor (-1 when not open).
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// The file's size in bytes when opened.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// Reads the whole file into `out`; returns an empty string, or why it failed (including a size over
  /// `max_bytes`, checked before reading).
  [[nodiscard]] std::string read_all(std::string& out, std::size_t max_bytes) const {
    if (!ok()) return error_;
    if (size_ > max_bytes)
      return "holds " + std::to_string(size_) + " bytes, more than the " + std::to_string(max_bytes) +
             " this reader accepts";
    out.resize(size_);
    std::size_t done = 0;
    while (done < size_) {
      const auto got = ::read(fd_, out.data() + done, size_ - done);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return std::string("cannot read: ") + std::strerror(errno);
      if (got == 0) break;  // shrank while being read
      done += static_cast<std::size_t>(got);
    }
    out.resize(done);
    return {};
  }

 private:
  int fd_ = -1;
  std::size_t size_ = 0;
  std::string error_;
};

/// The largest text file (JSON, merges) the readers load whole: 1 GiB.
inline constexpr std::size_t kMaxTextFileBytes = std::size_t{1} << 30;

}  // namespace baukit::io
