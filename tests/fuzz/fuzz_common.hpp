// Shared by the fuzz harnesses: a scratch folder of this process for inputs that the library reads as files.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace fuzz {

/// The input as text.
inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// A folder of this process (several fuzzers may run at once).
inline const std::filesystem::path& scratch() {
  static const auto dir = [] {
    auto path = std::filesystem::temp_directory_path() / ("baukit-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(path);
    return path;
  }();
  return dir;
}

/// Writes `bytes` to `scratch()/name` and returns the path.
inline std::filesystem::path write(const std::string& name, std::string_view bytes) {
  const auto path = scratch() / name;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

}  // namespace fuzz
