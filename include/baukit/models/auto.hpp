/// @file auto.hpp
/// @brief `from_pretrained(dir)` for any family the loader knows, chosen by `config.json`'s `model_type`.
///
/// @code
/// std::shared_ptr<baukit::models::CausalLM> model = baukit::models::from_pretrained("gpt2-xl");
/// @endcode
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11

#include <baukit/models/causal_lm.hpp>
#include <baukit/models/config.hpp>
#include <baukit/models/gpt2.hpp>
#include <baukit/models/gptj.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace baukit::models {

/// Loads a model of family `model_type` from a checkpoint directory (with or without the NaN/infinity scan).
using FamilyLoader = std::function<std::shared_ptr<CausalLM>(const std::filesystem::path& directory,
                                                             torch::Device device, bool check_finite)>;

/// The families `from_pretrained` knows, by `model_type`.
inline const std::map<std::string, FamilyLoader>& families() {
  static const std::map<std::string, FamilyLoader> loaders = {
      {"gpt2",
       [](const std::filesystem::path& dir, torch::Device device, bool check_finite) -> std::shared_ptr<CausalLM> {
         return GPT2LMHeadModelImpl::from_pretrained(dir, device, check_finite);
       }},
      {"gptj",
       [](const std::filesystem::path& dir, torch::Device device, bool check_finite) -> std::shared_ptr<CausalLM> {
         return GPTJForCausalLMImpl::from_pretrained(dir, device, check_finite);
       }},
  };
  return loaders;
}

/// Loads the checkpoint in `directory`, choosing the family by `config.json`'s `model_type`; an unknown family
/// fails by name, listing the known ones. The model is in eval mode. `check_finite` scans every weight for NaN and
/// infinity while loading (reading every byte; without it, weights are read only when used).
inline std::shared_ptr<CausalLM> from_pretrained(const std::filesystem::path& directory,
                                                 torch::Device device = torch::kCPU, bool check_finite = true) {
  const auto config = ConfigFile::read(directory);
  if (!config.json.contains("model_type")) config.fail("model_type", "is missing: cannot tell the model family");
  const auto type = config.get<std::string>("model_type", "");
  const auto& known = families();
  auto it = known.find(type);
  if (it == known.end()) {
    std::vector<std::string> names;
    for (const auto& [name, loader] : known) names.push_back(name);
    config.fail("model_type",
                fmt::format("is '{}', which baukit-cpp does not know (known: {})", type, fmt::join(names, ", ")));
  }
  return it->second(directory, device, check_finite);
}

}  // namespace baukit::models
