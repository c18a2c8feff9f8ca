/// @file save.hpp
/// @brief Writing a model as a Hugging Face checkpoint directory (`config.json` + `model.safetensors`), and GPT-2-style
/// random initialisation; shared by the families.
#pragma once

#include <torch/torch.h>

#include <baukit/io/safetensors.hpp>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace baukit::models {

/// Writes `config` as `config.json` and every parameter of `module` except `skip` (tied weights) to
/// `model.safetensors`, stored as `dtype` (float parameters only; one tensor converted at a time).
inline void save_checkpoint(torch::nn::Module& module, const nlohmann::json& config,
                            const std::filesystem::path& directory, torch::ScalarType dtype,
                            const std::set<std::string>& skip = {}) {
  std::filesystem::create_directories(directory);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : module.named_parameters(true))
    if (!skip.count(item.key())) tensors.emplace_back(item.key(), item.value().detach().to(dtype));
  io::save_safetensors(directory / "model.safetensors", tensors, {{"format", "pt"}});
  const auto text = config.dump(2);
  io::write_file_atomically(directory / "config.json", [&](std::ostream& out) { out << text << '\n'; });
}

/// GPT-2's initialisation, for any family: N(0, 0.02) weights, N(0, 0.02/sqrt(2 layers)) for the projections named
/// in `residual_projections` (those writing into the residual stream), zero biases, unit LayerNorms (names holding
/// "ln_"). Deterministic for a given `seed`; each tensor is drawn in float32 and stored in its own dtype.
inline void init_gpt2_style(torch::nn::Module& module, uint64_t seed, int64_t layers,
                            const std::set<std::string>& residual_projections, const std::set<std::string>& skip = {}) {
  torch::NoGradGuard no_grad;
  auto generator = at::detail::createCPUGenerator(seed);
  const double std = 0.02, projection_std = 0.02 / std::sqrt(2.0 * static_cast<double>(layers));
  for (auto& item : module.named_parameters(true)) {
    const auto& name = item.key();
    auto& p = item.value();
    if (skip.count(name)) continue;
    if (name.find("ln_") != std::string::npos) {
      name.ends_with("weight") ? p.fill_(1.0) : p.zero_();
    } else if (name.ends_with("bias")) {
      p.zero_();
    } else {
      bool projection = false;
      for (const auto& suffix : residual_projections) projection = projection || name.ends_with(suffix);
      const double sd = projection ? projection_std : std;
      if (p.scalar_type() == torch::kFloat32)
        p.normal_(0.0, sd, generator);
      else
        p.copy_(torch::empty(p.sizes(), torch::kFloat32).normal_(0.0, sd, generator));
    }
  }
}

}  // namespace baukit::models
