/// @file mapped_file.hpp
/// @brief `MappedFile`: a whole file memory-mapped read-only (copy-on-write), shared by the tensors viewing it.
#pragma once

#include <sys/mman.h>

#include <baukit/io/error.hpp>
#include <baukit/io/regular_file.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>

namespace baukit::io {

/// A file mapped into memory. Pages are private copy-on-write, so a tensor viewing them may be written to
/// without changing the file. Keep it alive (a `shared_ptr`) as long as any view of it is used.
class MappedFile {
 public:
  /// Maps `path` whole; throws `CheckpointError` (io) naming the file and the system's reason.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path) {
    return std::shared_ptr<const MappedFile>(new MappedFile(path));
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ && size_) ::munmap(const_cast<char*>(data_), size_);
  }

  /// The file's bytes.
  [[nodiscard]] const char* data() const noexcept { return data_; }
  /// The file's size in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// The file's bytes as a view.
  [[nodiscard]] std::string_view bytes() const noexcept { return {data_, size_}; }
  /// The file's path.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  explicit MappedFile(const std::filesystem::path& path) : path_(path) {
    const RegularFile file(path);  // a FIFO or device is refused here, without blocking
    if (!file.ok()) throw CheckpointError(CheckpointErrorKind::io, path, file.error());
    size_ = file.size();
    if (size_ > 0) {
      void* mapped = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd(), 0);
      if (mapped == MAP_FAILED)
        throw CheckpointError(CheckpointErrorKind::io, path, std::string("cannot map: ") + std::strerror(errno));
      data_ = static_cast<const char*>(mapped);
    }
  }

  std::filesystem::path path_;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace baukit::io
