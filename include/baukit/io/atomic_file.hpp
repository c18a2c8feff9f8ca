/// @file atomic_file.hpp
/// @brief `write_file_atomically`: pages, JSON and checkpoints are written to a temporary and renamed into place,
/// so a failed write (unwritable folder, full disk) leaves no partial file behind.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace baukit::io {

/// Writes an atomically replaced file: the bytes go to a temporary beside `path`, renamed over it only when
/// complete, so a failed write leaves no partial file behind. `write` receives the open stream.
template <class Write>
void write_file_atomically(const std::filesystem::path& path, Write&& write) {
  const auto temporary = path.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(fmt::format("{}: cannot write: {}", path.string(), std::strerror(errno)));
    try {
      write(out);
      out.flush();
      if (!out) throw std::runtime_error(fmt::format("{}: write failed (disk full?)", path.string()));
    } catch (...) {
      out.close();
      std::filesystem::remove(temporary);
      throw;
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::filesystem::remove(temporary);
    throw std::runtime_error(fmt::format("{}: cannot write: {}", path.string(), error.message()));
  }
}

}  // namespace baukit::io
