/// @file auto.hpp
/// @brief `from_pretrained(dir)` for any registered family, chosen by `config.json`'s `model_type`; families
/// register themselves, the library's own and a researcher's alike.
///
/// @code
/// std::shared_ptr<baukit::models::CausalLM> model = baukit::models::from_pretrained("Llama-3.2-1B");
/// // A family written outside the library (see docs/adding-a-model-family.md), here one loaded as Llama:
/// static const bool registered = baukit::models::register_family(
///     "my_family", [](const baukit::models::ConfigFile& config, const baukit::models::PretrainedOptions& options) {
///       return std::shared_ptr<baukit::models::CausalLM>(
///           baukit::models::LlamaForCausalLMImpl::from_config(config, options));
///     });
/// @endcode
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11

#include <baukit/models/causal_lm.hpp>
#include <baukit/models/config.hpp>
#include <baukit/models/gemma.hpp>
#include <baukit/models/gpt2.hpp>
#include <baukit/models/gpt_neox.hpp>
#include <baukit/models/gptj.hpp>
#include <baukit/models/llama.hpp>
#include <baukit/models/pretrained.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace baukit::models {

/// Loads a model of one family from its parsed `config.json` (the checkpoint is in `config.path.parent_path()`).
using FamilyLoader =
    std::function<std::shared_ptr<CausalLM>(const ConfigFile& config, const PretrainedOptions& options)>;

namespace detail {

/// The loaders by `model_type`, the library's own families first.
struct FamilyRegistry {
  std::mutex mutex;                             ///< Guards `loaders`.
  std::map<std::string, FamilyLoader> loaders;  ///< By `model_type`.
};

/// The loader of a family whose `Impl` has `from_config(config, options)`.
template <class Impl>
FamilyLoader loader_of() {
  return [](const ConfigFile& config, const PretrainedOptions& options) -> std::shared_ptr<CausalLM> {
    return Impl::from_config(config, options);
  };
}

inline FamilyRegistry& family_registry() {
  static FamilyRegistry registry;
  static const bool built_in = [] {
    auto& r = registry;
    r.loaders["gpt2"] = loader_of<GPT2LMHeadModelImpl>();
    r.loaders["gptj"] = loader_of<GPTJForCausalLMImpl>();
    r.loaders["gpt_neox"] = loader_of<GPTNeoXForCausalLMImpl>();
    for (const auto& type : LlamaConfig::model_types()) r.loaders[type] = loader_of<LlamaForCausalLMImpl>();
    for (const auto& type : GemmaConfig::model_types()) r.loaders[type] = loader_of<GemmaForCausalLMImpl>();
    return true;
  }();
  (void)built_in;
  return registry;
}

}  // namespace detail

/// Makes `from_pretrained` (and so `baukit-lens`'s loading and the lens) load checkpoints whose `config.json` has
/// this `model_type` with `loader`. Throws `std::invalid_argument` if the type is already registered, unless
/// `replace`. Returns true, so that a namespace-scope `static const bool` can register a family at start-up.
inline bool register_family(const std::string& model_type, FamilyLoader loader, bool replace = false) {
  if (model_type.empty() || !loader) throw std::invalid_argument("register_family: needs a model_type and a loader");
  auto& registry = detail::family_registry();
  const std::lock_guard lock(registry.mutex);
  if (!replace && registry.loaders.count(model_type))
    throw std::invalid_argument(
        fmt::format("register_family: model_type '{}' is already registered (pass replace = true)", model_type));
  registry.loaders[model_type] = std::move(loader);
  return true;
}

/// The `model_type`s `from_pretrained` knows, sorted.
inline std::vector<std::string> family_names() {
  auto& registry = detail::family_registry();
  const std::lock_guard lock(registry.mutex);
  std::vector<std::string> names;
  for (const auto& [name, loader] : registry.loaders) names.push_back(name);
  return names;
}

/// Loads the checkpoint in `directory`, choosing the family by `config.json`'s `model_type`; an unknown family
/// fails by name, listing the known ones. The model is in eval mode.
inline std::shared_ptr<CausalLM> from_pretrained(const std::filesystem::path& directory,
                                                 const PretrainedOptions& options = {}) {
  const auto config = ConfigFile::read(directory);
  if (!config.json.contains("model_type")) config.fail("model_type", "is missing: cannot tell the model family");
  const auto type = config.get<std::string>("model_type", "");
  FamilyLoader loader;
  {
    auto& registry = detail::family_registry();
    const std::lock_guard lock(registry.mutex);
    if (auto it = registry.loaders.find(type); it != registry.loaders.end()) loader = it->second;
  }
  if (!loader)
    config.fail("model_type", fmt::format("is '{}', which baukit-cpp does not know (known: {})", type,
                                          fmt::join(family_names(), ", ")));
  return loader(config, options);  // config.json is read once
}

/// As above, on `device`, with or without the NaN/infinity scan (`check_finite`).
inline std::shared_ptr<CausalLM> from_pretrained(const std::filesystem::path& directory, torch::Device device,
                                                 bool check_finite = true) {
  return from_pretrained(directory, PretrainedOptions().device(device).check_finite(check_finite));
}

}  // namespace baukit::models
