/// @file checkpoint.hpp
/// @brief Loading a Hugging Face checkpoint directory into a module: `model.safetensors`, sharded safetensors,
/// `pytorch_model.bin` and sharded `.bin`, with every missing, unexpected or mis-shaped tensor reported by name.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <baukit/io/error.hpp>
#include <baukit/io/regular_file.hpp>
#include <baukit/io/safetensors.hpp>
#include <baukit/io/torch_bin.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace baukit::io {

/// A tensor read from a checkpoint, with the file it came from (for messages).
struct CheckpointTensor {
  torch::Tensor tensor;        ///< The tensor (viewing the mapped file where possible).
  std::filesystem::path file;  ///< The file it was read from.
};

/// Tensors by name, as stored in a checkpoint.
using StateDict = std::map<std::string, CheckpointTensor>;

/// Reads a JSON file, with errors naming the file.
inline nlohmann::json read_json_file(const std::filesystem::path& path,
                                     CheckpointErrorKind kind = CheckpointErrorKind::config) {
  std::string text;
  if (const auto error = RegularFile(path).read_all(text, kMaxTextFileBytes); !error.empty())
    throw CheckpointError(CheckpointErrorKind::io, path, error);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(kind, path, fmt::format("not valid JSON: {}", e.what()));
  }
}

namespace detail {

/// "[a, b, c]".
inline std::string shape(c10::IntArrayRef sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

inline void add_tensor(StateDict& state, std::string name, torch::Tensor tensor, const std::filesystem::path& file) {
  if (auto it = state.find(name); it != state.end())
    throw CheckpointError(CheckpointErrorKind::header, file,
                          fmt::format("tensor '{}' also appears in {}", name, it->second.file.string()));
  state.emplace(std::move(name), CheckpointTensor{std::move(tensor), file});
}

inline void read_weight_file(StateDict& state, const std::filesystem::path& file) {
  if (file.extension() == ".safetensors") {
    SafetensorsFile reader(file);
    for (const auto& entry : reader.entries()) add_tensor(state, entry.name, reader.tensor(entry), file);
  } else {
    for (auto& [name, tensor] : load_torch_bin(file)) add_tensor(state, name, std::move(tensor), file);
  }
}

/// The shard files of an index (`*.index.json`), checked to stay inside `directory`.
inline std::vector<std::filesystem::path> shard_files(const std::filesystem::path& index,
                                                      std::set<std::string>* expected_names) {
  const auto json = read_json_file(index, CheckpointErrorKind::header);
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
    throw CheckpointError(CheckpointErrorKind::header, index, "no weight_map object");
  std::set<std::string> files;
  for (const auto& [name, file] : json["weight_map"].items()) {
    if (!file.is_string())
      throw CheckpointError(CheckpointErrorKind::header, index,
                            fmt::format("weight_map['{}'] is not a file name", name));
    const auto shard = file.get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      throw CheckpointError(
          CheckpointErrorKind::header, index,
          fmt::format("weight_map['{}'] = '{}' is not a file in the checkpoint's folder", name, shard));
    files.insert(shard);
    expected_names->insert(name);
  }
  std::vector<std::filesystem::path> paths;
  for (const auto& file : files) paths.push_back(index.parent_path() / file);
  return paths;
}

}  // namespace detail

/// Reads every tensor of the checkpoint in `directory`: `model.safetensors`, else
/// `model.safetensors.index.json`, else `pytorch_model.bin`, else `pytorch_model.bin.index.json`.
inline StateDict read_checkpoint(const std::filesystem::path& directory) {
  StateDict state;
  for (const char* single : {"model.safetensors", "pytorch_model.bin"}) {
    const auto file = directory / single;
    const auto index = directory / (std::string(single) + ".index.json");
    if (std::filesystem::exists(file)) {
      detail::read_weight_file(state, file);
      return state;
    }
    if (std::filesystem::exists(index)) {
      std::set<std::string> listed;
      for (const auto& shard : detail::shard_files(index, &listed)) detail::read_weight_file(state, shard);
      for (const auto& name : listed)
        if (!state.count(name))
          throw CheckpointError(CheckpointErrorKind::missing, index,
                                fmt::format("weight_map lists '{}', which no shard holds", name));
      return state;
    }
  }
  if (!std::filesystem::is_directory(directory))
    throw CheckpointError(CheckpointErrorKind::io, directory, "not a directory");
  throw CheckpointError(
      CheckpointErrorKind::io, directory,
      "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json");
}

/// How `load_state_dict` matches checkpoint tensors to a module's parameters.
struct LoadOptions {
  /// Checkpoint names are looked up as they are and with this prefix removed (`transformer.` for GPT-2).
  TORCH_ARG(std::string, optional_prefix) = "";
  /// Checkpoint names matching this are ignored (constant buffers such as GPT-2's `attn.bias` mask).
  TORCH_ARG(std::string, ignore) = "";
  /// Parameters that may be absent from the checkpoint (tied weights such as `lm_head.weight`).
  TORCH_ARG(std::set<std::string>, may_be_missing) = {};
  /// Reject weights holding NaN or infinity (reads every byte once).
  TORCH_ARG(bool, check_finite) = true;
};

/// Loads `state` into `module`'s parameters and buffers, in place (`set_data`): tensors of the parameter's dtype
/// stay views of the mapped file, others are converted (F16/BF16 upcast to F32). Throws one `CheckpointError`
/// listing every missing, unexpected and mis-shaped tensor by name, with both shapes; nothing is changed then.
/// Returns the names of parameters left as they were because `may_be_missing` allowed it.
inline std::set<std::string> load_state_dict(torch::nn::Module& module, const StateDict& state,
                                             const LoadOptions& options, const std::filesystem::path& source) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : module.named_parameters(true)) targets.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) targets.emplace(item.key(), item.value());

  const std::regex ignore(options.ignore().empty() ? std::string("$^") : options.ignore());
  std::map<std::string, const CheckpointTensor*> found;
  std::vector<std::string> unexpected, mis_shaped, missing;
  for (const auto& [stored_name, stored] : state) {
    // Names without the prefix, as on the hub, map onto the prefixed parameter.
    std::string name = stored_name;
    if (!targets.count(name) && targets.count(options.optional_prefix() + name))
      name = options.optional_prefix() + name;
    if (std::regex_search(stored_name, ignore)) continue;
    auto target = targets.find(name);
    if (target == targets.end()) {
      unexpected.push_back(fmt::format("'{}' {} in {}", stored_name, detail::shape(stored.tensor.sizes()),
                                       stored.file.filename().string()));
      continue;
    }
    if (found.count(name))
      throw CheckpointError(CheckpointErrorKind::header, stored.file,
                            fmt::format("'{}' is stored both with and without the prefix", name));
    if (stored.tensor.sizes() != target->second.sizes())
      mis_shaped.push_back(fmt::format("'{}': {} in {} vs {} in the model", stored_name,
                                       detail::shape(stored.tensor.sizes()), stored.file.filename().string(),
                                       detail::shape(target->second.sizes())));
    found.emplace(name, &stored);
  }
  std::set<std::string> left_out;
  for (const auto& [name, tensor] : targets) {
    if (found.count(name)) continue;
    if (options.may_be_missing().count(name)) {
      left_out.insert(name);
      continue;
    }
    missing.push_back(fmt::format("'{}' {}", name, detail::shape(tensor.sizes())));
  }
  std::set<std::string> files;
  for (const auto& [name, stored] : state) files.insert(stored.file.filename().string());
  auto report = [&](CheckpointErrorKind kind, const std::string& what, const std::vector<std::string>& names) {
    // Bounded, whatever the checkpoint: the first few names and a count.
    constexpr std::size_t shown = 8;
    if (names.size() > shown)
      throw CheckpointError(kind, source,
                            fmt::format("{} {} tensor(s): {}; and {} more", names.size(), what,
                                        fmt::join(names.begin(), names.begin() + shown, "; "), names.size() - shown));
    if (!names.empty())
      throw CheckpointError(kind, source,
                            fmt::format("{} {} tensor(s): {}", names.size(), what, fmt::join(names, "; ")));
  };
  // The model's shapes come from config.json: a mismatch everywhere usually means a config for another size.
  report(CheckpointErrorKind::shape, "mis-shaped (the model's shapes follow config.json)", mis_shaped);
  report(
      CheckpointErrorKind::missing,
      fmt::format("missing (not in {})", files.empty() ? "any weight file" : fmt::format("{}", fmt::join(files, ", "))),
      missing);
  report(CheckpointErrorKind::unexpected, "unexpected", unexpected);

  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> converted;
  for (const auto& [name, stored] : found) {
    torch::Tensor data = stored->tensor;
    const auto& target = targets.at(name);
    if (!data.is_floating_point() && target.is_floating_point())
      throw CheckpointError(CheckpointErrorKind::dtype, stored->file,
                            fmt::format("tensor '{}' is stored as {}, but the model needs floating point", name,
                                        c10::toString(data.scalar_type())));
    if (options.check_finite() && data.is_floating_point() && !std::isfinite(data.sum(torch::kFloat32).item<float>())) {
      // The sum propagates any NaN or infinity at memory speed; a non-finite sum of finite values is confirmed
      // element-wise.
      const auto flat = data.reshape({-1});
      constexpr int64_t chunk = 1 << 22;  // bounded temporary memory
      for (int64_t begin = 0; begin < flat.numel(); begin += chunk)
        if (!torch::isfinite(flat.slice(0, begin, std::min(flat.numel(), begin + chunk))).all().item<bool>())
          throw CheckpointError(CheckpointErrorKind::non_finite, stored->file,
                                fmt::format("tensor '{}' holds NaN or infinity", name));
    }
    if (data.scalar_type() != target.scalar_type()) data = data.to(target.scalar_type());
    if (data.device() != target.device()) data = data.to(target.device());
    converted.emplace(name, data);
  }
  for (auto& [name, data] : converted) {
    auto target = targets.at(name);
    target.set_data(data);
  }
  return left_out;
}

}  // namespace baukit::io
