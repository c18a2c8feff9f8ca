/// @file config.hpp
/// @brief Reading `config.json`: typed values with defaults, and errors naming the file and key.
#pragma once

#include <fmt/format.h>

#include <baukit/io/checkpoint.hpp>
#include <baukit/io/error.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace baukit::models {

/// A parsed `config.json` with the path it came from, for messages.
struct ConfigFile {
  nlohmann::json json;         ///< The parsed object.
  std::filesystem::path path;  ///< Where it was read.

  /// Reads `directory/config.json`; throws `CheckpointError` (config) if it is missing or not a JSON object.
  static ConfigFile read(const std::filesystem::path& directory) {
    const auto path = directory / "config.json";
    if (!std::filesystem::exists(path)) throw io::CheckpointError(io::CheckpointErrorKind::config, path, "missing");
    ConfigFile config{io::read_json_file(path), path};
    if (!config.json.is_object()) config.fail("", "is not a JSON object");
    return config;
  }

  /// The value of `key`, or `fallback` when absent or null; throws naming the key if it has another type.
  template <class T>
  T get(const std::string& key, const T& fallback) const {
    if (!json.contains(key) || json[key].is_null()) return fallback;
    const auto& value = json[key];
    bool ok = false;
    if constexpr (std::is_same_v<T, bool>)
      ok = value.is_boolean();
    else if constexpr (std::is_integral_v<T>)
      ok = value.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
      ok = value.is_number();
    else
      ok = value.is_string();
    if (!ok) fail(key, fmt::format("has the value {}, of the wrong type", value.dump()));
    return value.get<T>();
  }

  /// A positive integer setting.
  int64_t positive(const std::string& key, int64_t fallback) const {
    const auto value = get<int64_t>(key, fallback);
    if (value <= 0) fail(key, fmt::format("must be positive, not {}", value));
    return value;
  }

  /// Throws a config error about `key`.
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw io::CheckpointError(io::CheckpointErrorKind::config, path,
                              key.empty() ? why : fmt::format("'{}' {}", key, why));
  }
};

}  // namespace baukit::models
