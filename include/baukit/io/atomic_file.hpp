/// @file atomic_file.hpp
/// @brief Writing outputs (pages, JSON, checkpoints) so that nothing is lost or left half-written: a new path or a
/// regular file is written to a temporary beside it and renamed into place only when complete; a character device
/// (`/dev/null`, `/dev/stdout`) or a FIFO is written through and never replaced; anything else is refused.
///
/// @code
/// baukit::io::write_file_atomically("lens.json", [&](std::ostream& out) { out << text; });
/// // Two outputs, both or neither: each is staged, then both are renamed into place.
/// baukit::io::OutputFile page("lens.html"), json("lens.json");
/// page.stream() << page_html;
/// json.stream() << text;
/// baukit::io::commit_all({&page, &json});
/// @endcode
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <baukit/io/regular_file.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <vector>

namespace baukit::io {

namespace detail {

/// An output stream buffer over a file descriptor that remembers the first write error.
class DescriptorBuffer : public std::streambuf {
 public:
  explicit DescriptorBuffer(int fd) : fd_(fd) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  /// The first `errno` of a failed write (0: none).
  [[nodiscard]] int error() const noexcept { return error_; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }
  std::streamsize xsputn(const char* data, std::streamsize count) override {
    if (count > epptr() - pptr()) {  // large writes go straight to the descriptor
      if (!drain() || !write_all(data, static_cast<std::size_t>(count))) return 0;
      return count;
    }
    std::memcpy(pptr(), data, static_cast<std::size_t>(count));
    pbump(static_cast<int>(count));
    return count;
  }

 private:
  bool drain() {
    const auto pending = static_cast<std::size_t>(pptr() - pbase());
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return write_all(buffer_.data(), pending);
  }
  bool write_all(const char* data, std::size_t count) {
    while (count > 0 && error_ == 0) {
      const auto written = ::write(fd_, data, count);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) {
        error_ = written < 0 ? errno : EIO;
        break;
      }
      data += written;
      count -= static_cast<std::size_t>(written);
    }
    return error_ == 0;
  }

  int fd_;
  int error_ = 0;
  std::array<char, 1 << 16> buffer_{};
};

}  // namespace detail

/// One output file, opened before anything is written to it. A new path or a regular file is written to a
/// temporary beside it (`commit` renames it into place; destruction without `commit` removes it); a symbolic link
/// is followed. A character device or FIFO is written through and never replaced (a FIFO without a reader is an
/// error, not a hang). A directory, socket or block device is refused. Errors name the path and the cause.
class OutputFile {
 public:
  /// Opens `path` for writing as described above; throws `std::runtime_error` naming it.
  explicit OutputFile(const std::filesystem::path& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code error;
    struct stat info {};
    const bool exists = ::stat(path.c_str(), &info) == 0;  // follows symbolic links (/dev/stdout to a pipe, ...)
    if (exists && !S_ISREG(info.st_mode)) {
      if (!S_ISCHR(info.st_mode) && !S_ISFIFO(info.st_mode))
        fail(fmt::format("is {}; an output must be a regular file, a new path, a character device or a FIFO",
                         describe_file_type(info.st_mode)));
      through_ = true;
      fd_ = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // a FIFO without a reader: ENXIO
      if (fd_ < 0)
        fail(errno == ENXIO ? std::string("is a FIFO that nothing reads") : "cannot open: " + errno_text(errno));
      ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    } else {
      target_ = path;
      if (fs::is_symlink(fs::symlink_status(path, error))) {  // replace what the link names, not the link
        if (!exists)
          fail(fmt::format("is a symbolic link to '{}', which does not exist", fs::read_symlink(path, error).string()));
        target_ = fs::canonical(path, error);
        if (error) fail("cannot resolve the symbolic link: " + error.message());
      }
      static std::atomic<unsigned> counter{0};
      temporary_ = target_.string() + fmt::format(".tmp-{}-{}", ::getpid(), counter++);
      fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ < 0) {
        const int why = errno;
        if (why == ENOENT && !target_.parent_path().empty() && !fs::is_directory(target_.parent_path(), error))
          fail(fmt::format("cannot write: the folder '{}' does not exist", target_.parent_path().string()));
        fail("cannot write: " + errno_text(why));
      }
    }
    buffer_ = std::make_unique<detail::DescriptorBuffer>(fd_);
    stream_.rdbuf(buffer_.get());
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() {
    stream_.rdbuf(nullptr);
    if (fd_ >= 0) ::close(fd_);
    if (!temporary_.empty()) ::unlink(temporary_.c_str());
  }

  /// Where to write the contents.
  [[nodiscard]] std::ostream& stream() noexcept { return stream_; }
  /// The path as given.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// Whether the output is written through (a device or FIFO) instead of replaced atomically.
  [[nodiscard]] bool written_through() const noexcept { return through_; }

  /// Flushes and closes; throws naming the path if any write failed (`/dev/full`: no space left). The file is
  /// not yet in place: see `commit`.
  void finish() {
    if (fd_ < 0) return;
    stream_.flush();
    const int error = buffer_->error();
    const int closed = ::close(fd_);
    const int close_error = errno;
    fd_ = -1;
    if (error != 0 || !stream_) fail("write failed: " + errno_text(error != 0 ? error : EIO));
    if (closed != 0) fail("write failed: " + errno_text(close_error));
  }

  /// `finish`, then renames the temporary over the target (nothing to do for a device or FIFO).
  void commit() {
    finish();
    if (temporary_.empty()) return;
    if (::rename(temporary_.c_str(), target_.c_str()) != 0) fail("cannot write: " + errno_text(errno));
    temporary_.clear();
  }

 private:
  static std::string errno_text(int error) { return std::strerror(error); }
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error(fmt::format("{}: {}", path_.string(), why));
  }

  std::filesystem::path path_, target_;
  std::string temporary_;
  bool through_ = false;
  int fd_ = -1;
  std::unique_ptr<detail::DescriptorBuffer> buffer_;
  std::ostream stream_{nullptr};
};

/// Puts several staged outputs in place together: all are finished first (a failed write leaves every target
/// as it was), then renamed in order. Should a rename fail after another succeeded, the error says which were
/// written.
inline void commit_all(std::initializer_list<OutputFile*> files) {
  for (auto* file : files) file->finish();
  std::vector<std::string> written;
  for (auto* file : files) {
    try {
      file->commit();
    } catch (const std::exception& e) {
      if (written.empty()) throw;
      throw std::runtime_error(fmt::format("{} (already written: {})", e.what(), fmt::join(written, ", ")));
    }
    written.push_back(file->path().string());
  }
}

/// Writes one output as `OutputFile` describes: `write` receives the stream; the file is put in place only when
/// complete, so a failed write (an unwritable folder, a full disk, an exception from `write`) leaves nothing.
template <class Write>
void write_file_atomically(const std::filesystem::path& path, Write&& write) {
  OutputFile file(path);
  write(file.stream());
  file.commit();
}

}  // namespace baukit::io
