/// @file config.hpp
/// @brief Reading `config.json`: typed values with defaults, and errors naming the file and key.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11

#include <baukit/io/checkpoint.hpp>
#include <baukit/io/error.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

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

  /// A positive integer setting, at most 2^40 (so that products of sizes cannot overflow).
  int64_t positive(const std::string& key, int64_t fallback) const {
    const auto value = get<int64_t>(key, fallback);
    if (value <= 0) fail(key, fmt::format("must be positive, not {}", value));
    if (value > kMaxSize) fail(key, fmt::format("is {}, beyond any model (at most 2^40)", value));
    return value;
  }

  /// The largest size setting `positive` accepts: 2^40.
  static constexpr int64_t kMaxSize = int64_t{1} << 40;

  /// Throws a config error about `key`.
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw io::CheckpointError(io::CheckpointErrorKind::config, path,
                              key.empty() ? why : fmt::format("'{}' {}", key, why));
  }
};

/// Reads one field of a family's config table (`LlamaConfig::for_each_field`, `GPT2Config::for_each_field`):
/// `reader(key, member, positive)` sets `member` from `config.json`, keeping its default where the key is absent or
/// null, and fails naming the key on a wrong type, a negative size, or (with `positive`) zero.
struct ConfigReader {
  const ConfigFile& file;  ///< What is read.

  /// A size: at most 2^40; positive when asked, else not negative.
  void operator()(const char* key, int64_t& value, bool positive) const {
    value = positive ? file.positive(key, value) : file.get<int64_t>(key, value);
    if (value < 0) file.fail(key, "must not be negative");
  }
  /// An optional size (null: none, or derived from others).
  void operator()(const char* key, std::optional<int64_t>& value, bool) const {
    if (file.json.contains(key)) value = file.json[key].is_null() ? std::nullopt : std::optional(file.positive(key, 0));
  }
  /// An optional number (null: none); positive when asked.
  void operator()(const char* key, std::optional<double>& value, bool positive) const {
    if (!file.json.contains(key)) return;
    if (file.json[key].is_null()) {
      value = std::nullopt;
      return;
    }
    double given = 0;
    (*this)(key, given, positive);
    value = given;
  }
  /// A number; positive when asked.
  void operator()(const char* key, double& value, bool positive) const {
    value = file.get<double>(key, value);
    if (positive && !(value > 0)) file.fail(key, fmt::format("must be positive, not {}", value));
  }
  /// A flag.
  void operator()(const char* key, bool& value, bool) const { value = file.get<bool>(key, value); }
  /// A name.
  void operator()(const char* key, std::string& value, bool) const { value = file.get<std::string>(key, value); }
  /// Any JSON value, kept as given (token ids: a number, a list or null).
  void operator()(const char* key, nlohmann::json& value, bool) const {
    if (file.json.contains(key)) value = file.json[key];
  }
};

/// Writes each field of a config table into `json`, as `config.json` holds it (an unset optional as null).
struct ConfigWriter {
  nlohmann::json& json;  ///< What is written.

  /// Writes `value` under `key`.
  template <class T>
  void operator()(const char* key, const T& value, bool) const {
    if constexpr (std::is_same_v<T, std::optional<int64_t>> || std::is_same_v<T, std::optional<double>>)
      json[key] = value ? nlohmann::json(*value) : nlohmann::json(nullptr);
    else
      json[key] = value;
  }
};

/// A tensor whose shape follows from `config.json`, checked against the checkpoint before the model is built.
struct ExpectedShape {
  std::string tensor;             ///< Its name in the checkpoint (the optional prefix may be absent or present).
  std::vector<int64_t> shape;     ///< The shape the configuration implies.
  std::vector<std::string> keys;  ///< The settings it follows from, for the message.
};

/// Checks `config.json` (in `directory`) against the checkpoint `state` before anything is allocated: the tensors
/// of `shapes` exist with the shapes the settings imply, and the checkpoint holds at least `layers` (the setting
/// `layer_key`) distinct blocks `<block_prefix>N.`. A config for another size (or a hostile one, `n_layer` 10^9,
/// `n_embd` 2^40) fails naming the key, the tensor, its file and both shapes.
inline void check_config_against_checkpoint(const std::filesystem::path& directory, const io::StateDict& state,
                                            const std::string& optional_prefix,
                                            const std::vector<ExpectedShape>& shapes, const std::string& layer_key,
                                            int64_t layers, const std::string& block_prefix) {
  const auto config = directory / "config.json";
  auto find = [&](const std::string& name) {
    auto it = state.find(name);
    return it != state.end() ? it : state.find(optional_prefix + name);
  };
  for (const auto& expected : shapes) {
    std::string keys;  // 'a', 'b' and 'c'
    for (std::size_t i = 0; i < expected.keys.size(); ++i)
      keys += (i == 0 ? "" : i + 1 == expected.keys.size() ? " and " : ", ") + fmt::format("'{}'", expected.keys[i]);
    const auto it = find(expected.tensor);
    if (it == state.end())
      throw io::CheckpointError(
          io::CheckpointErrorKind::missing, directory,
          fmt::format("no tensor '{}', whose shape config.json's {} {}", optional_prefix + expected.tensor, keys,
                      expected.keys.size() == 1 ? "sets" : "set"));
    if (it->second.tensor.sizes() != torch::IntArrayRef(expected.shape))
      throw io::CheckpointError(
          io::CheckpointErrorKind::shape, config,
          fmt::format("{} {} tensor '{}' {}, but {} holds it as {}", keys, expected.keys.size() == 1 ? "makes" : "make",
                      it->first, io::detail::shape(expected.shape), it->second.file.filename().string(),
                      io::detail::shape(it->second.tensor.sizes())));
  }
  std::set<int64_t> blocks;
  for (const auto& [stored, tensor] : state) {
    std::string_view name = stored;
    if (name.substr(0, optional_prefix.size()) == optional_prefix) name.remove_prefix(optional_prefix.size());
    if (name.substr(0, block_prefix.size()) != block_prefix) continue;
    name.remove_prefix(block_prefix.size());
    int64_t index = 0;
    std::size_t digits = 0;
    while (digits < name.size() && digits < 9 && name[digits] >= '0' && name[digits] <= '9')
      index = index * 10 + (name[digits++] - '0');
    if (digits > 0 && digits < name.size() && name[digits] == '.') blocks.insert(index);
  }
  // More blocks in the checkpoint than configured is reported tensor by tensor when loading (unexpected); fewer
  // must fail now, before the model builds blocks the file cannot fill.
  const auto found = static_cast<int64_t>(blocks.size());
  if (layers > found)
    throw io::CheckpointError(
        io::CheckpointErrorKind::config, config,
        found == 0 ? fmt::format("'{}' is {}, but the checkpoint holds no block '{}N.'", layer_key, layers,
                                 optional_prefix + block_prefix)
                   : fmt::format("'{}' is {}, but the checkpoint holds {} block(s) '{}N.' (N up to {})", layer_key,
                                 layers, found, optional_prefix + block_prefix, *blocks.rbegin()));
}

}  // namespace baukit::models
