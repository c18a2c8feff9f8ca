/// @file save.hpp
/// @brief Writing a model as a Hugging Face checkpoint directory (`config.json` + `model.safetensors`), and GPT-2-style
/// random initialisation; shared by the families.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/atomic_file.hpp>
#include <baukit/io/safetensors.hpp>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace baukit::models {

/// Writes `config` as `config.json` and every parameter of `module` except `skip` (tied weights) as safetensors,
/// stored as `dtype` (float parameters only; one tensor converted at a time): `model.safetensors`, or with
/// `shards` > 1 that many files `model-0000K-of-0000N.safetensors` of about equal size and the index
/// `model.safetensors.index.json`, as Hugging Face shards a large model.
inline void save_checkpoint(torch::nn::Module& module, const nlohmann::json& config,
                            const std::filesystem::path& directory, torch::ScalarType dtype,
                            const std::set<std::string>& skip = {}, int64_t shards = 1) {
  if (shards < 1) throw std::invalid_argument("save_checkpoint: shards must be at least 1");
  std::filesystem::create_directories(directory);
  std::vector<std::pair<std::string, torch::Tensor>> params;
  int64_t total = 0;
  for (const auto& item : module.named_parameters(true))
    if (!skip.count(item.key())) {
      params.emplace_back(item.key(), item.value().detach());
      total += item.value().numel() * static_cast<int64_t>(c10::elementSize(dtype));
    }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
  std::size_t next = 0;
  int64_t written = 0;
  for (int64_t shard = 1; shard <= shards; ++shard) {
    const auto name = shards == 1 ? std::string("model.safetensors")
                                  : fmt::format("model-{:05d}-of-{:05d}.safetensors", shard, shards);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    // Fill this shard up to its share of the bytes (the last takes the rest).
    while (next < params.size() && (shard == shards || written < total * shard / shards || tensors.empty())) {
      const auto& [key, tensor] = params[next++];
      tensors.emplace_back(key, tensor.to(dtype));
      written += tensor.numel() * static_cast<int64_t>(c10::elementSize(dtype));
      index["weight_map"][key] = name;
    }
    io::save_safetensors(directory / name, tensors, {{"format", "pt"}});
  }
  if (shards > 1) {
    const auto text = index.dump(2);
    io::write_file_atomically(directory / "model.safetensors.index.json",
                              [&](std::ostream& out) { out << text << '\n'; });
  }
  const auto text = config.dump(2);
  io::write_file_atomically(directory / "config.json", [&](std::ostream& out) { out << text << '\n'; });
}

/// Deterministic random weights for tests and benchmarks, the same bits on every machine and libtorch version
/// (a counter-based hash, not libtorch's generator): matrices uniform with standard deviation 1/sqrt(fan-in),
/// embeddings (names holding "embed") with standard deviation 1, norm scales (names holding "norm") 1 +- 0.2,
/// biases +- 0.1. Peaked enough that a model's top tokens are far apart, unlike a trained-from-scratch init.
inline void init_deterministic(torch::nn::Module& module, uint64_t seed, const std::set<std::string>& skip = {}) {
  torch::NoGradGuard no_grad;
  auto mix = [](uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  for (auto& item : module.named_parameters(true)) {
    const auto& name = item.key();
    if (skip.count(name)) continue;
    auto& p = item.value();
    uint64_t stream = 1469598103934665603ULL ^ seed;  // FNV-1a of the name, seeded
    for (unsigned char ch : name) stream = (stream ^ ch) * 1099511628211ULL;
    const bool norm = name.find("norm") != std::string::npos, bias = name.ends_with("bias");
    const double half_width = norm   ? 0.2
                              : bias ? 0.1
                              : name.find("embed") != std::string::npos || p.dim() < 2
                                  ? std::sqrt(3.0)
                                  : std::sqrt(3.0 / static_cast<double>(p.size(-1)));
    const double centre = norm ? 1.0 : 0.0;
    auto values = torch::empty(p.sizes(), torch::kFloat32);
    float* out = values.data_ptr<float>();
    at::parallel_for(0, values.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const double u = static_cast<double>(mix(stream + static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;  // [0, 1)
        out[i] = static_cast<float>(centre + half_width * (2.0 * u - 1.0));
      }
    });
    p.copy_(values);
  }
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
