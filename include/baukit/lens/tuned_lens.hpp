/// @file lens/tuned_lens.hpp
/// @brief The tuned lens (Belrose et al. 2023): per layer an affine translator applied residually,
/// `h + A h + b`, then the model's own head. Reads and writes the format of the reference implementation
/// (AlignmentResearch/tuned-lens, `tuned_lens/nn/lenses.py`): a folder with `config.json` (`TunedLensConfig`) and
/// `params.pt`, torch.save of the `layer_translators` ModuleList's state dict: `{i}.weight` `[d, d]` and `{i}.bias`
/// `[d]` for `i` in `0 .. num_hidden_layers - 1`, translator `i` acting on Hugging Face's `hidden_states[i]` (0: the
/// embedding; `i`: block `i - 1`'s output). The last block's output needs none.
///
/// @code
/// auto tuned = baukit::load_tuned_lens(dir);  // checks every key and shape, naming the file
/// auto result = baukit::logit_lens(*model, tok.encode(prompt), baukit::LensOptions().learned_lenses({tuned.ptr()}));
/// baukit::save_tuned_lens(*tuned, "my-lens");  // loads in Python with TunedLens.from_model_and_pretrained
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/atomic_file.hpp>
#include <baukit/io/checkpoint.hpp>
#include <baukit/io/torch_bin.hpp>
#include <baukit/lens/learned.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// A tuned lens's `config.json`, with the reference implementation's fields and defaults.
struct TunedLensConfig {
  std::string base_model_name_or_path;             ///< The model the lens was tuned for.
  int64_t d_model = 0;                             ///< Its hidden size.
  int64_t num_hidden_layers = 0;                   ///< Its number of blocks (one translator each, the first for
                                                   ///< the embedding).
  bool bias = true;                                ///< Whether the translators have a bias.
  std::optional<std::string> base_model_revision;  ///< The model's revision, when known.
  std::optional<std::string> unembed_hash;         ///< The reference's hash of the unembedding (not checked here).
  std::string lens_type = "linear_tuned_lens";     ///< The only type there is.

  /// As `config.json` holds it.
  [[nodiscard]] nlohmann::ordered_json to_json() const {
    auto optional = [](const std::optional<std::string>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
    return {{"base_model_name_or_path", base_model_name_or_path},
            {"d_model", d_model},
            {"num_hidden_layers", num_hidden_layers},
            {"bias", bias},
            {"base_model_revision", optional(base_model_revision)},
            {"unembed_hash", optional(unembed_hash)},
            {"lens_type", lens_type}};
  }

  /// From `config.json`'s contents (`file` names it in errors). Unknown keys are ignored, as the reference does.
  static TunedLensConfig from_json(const nlohmann::json& json, const std::filesystem::path& file) {
    auto fail = [&](const std::string& why) { throw io::CheckpointError(io::CheckpointErrorKind::config, file, why); };
    if (!json.is_object()) fail("a tuned lens config must be a JSON object");
    TunedLensConfig config;
    auto positive = [&](const char* key) {
      if (!json.contains(key)) fail(fmt::format("'{}' is missing", key));
      if (!json[key].is_number_integer() || json[key].get<int64_t>() < 1)
        fail(fmt::format("'{}' must be a positive integer, not {}", key, json[key].dump()));
      return json[key].get<int64_t>();
    };
    auto text = [&](const char* key) -> std::optional<std::string> {
      if (!json.contains(key) || json[key].is_null()) return std::nullopt;
      if (!json[key].is_string()) fail(fmt::format("'{}' must be a string or null, not {}", key, json[key].dump()));
      return json[key].get<std::string>();
    };
    config.d_model = positive("d_model");
    config.num_hidden_layers = positive("num_hidden_layers");
    config.base_model_name_or_path = text("base_model_name_or_path").value_or("");
    config.base_model_revision = text("base_model_revision");
    config.unembed_hash = text("unembed_hash");
    if (json.contains("bias")) {
      if (!json["bias"].is_boolean()) fail(fmt::format("'bias' must be true or false, not {}", json["bias"].dump()));
      config.bias = json["bias"].get<bool>();
    }
    config.lens_type = text("lens_type").value_or(config.lens_type);
    if (config.lens_type != "linear_tuned_lens")
      fail(fmt::format("'lens_type' is '{}'; only 'linear_tuned_lens' is supported", config.lens_type));
    return config;
  }
};

/// The tuned lens's translators, `Linear(d, d)` each, registered as `0`, `1`, ... so that the parameters are named
/// as in `params.pt`. A new lens's translators are zero: it starts as the logit lens.
class TunedLensImpl : public torch::nn::Module, public LearnedLens {
 public:
  /// A zero lens of `config`'s shape; `source` names its files in messages.
  explicit TunedLensImpl(TunedLensConfig config, std::filesystem::path source = {})
      : config_(std::move(config)), source_(std::move(source)) {
    if (config_.d_model < 1 || config_.num_hidden_layers < 1)
      throw std::invalid_argument(fmt::format("tuned lens: d_model {} and num_hidden_layers {} must be positive",
                                              config_.d_model, config_.num_hidden_layers));
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
      auto translator =
          torch::nn::Linear(torch::nn::LinearOptions(config_.d_model, config_.d_model).bias(config_.bias));
      translator->weight.zero_();
      if (config_.bias) translator->bias.zero_();
      translators_.push_back(register_module(std::to_string(i), translator));
    }
  }

  /// `h + A h + b` with layer `layer`'s translator (block `layer`'s output; -1 the embedding); the last block's
  /// output unchanged. Computed in `state`'s dtype.
  torch::Tensor forward(const torch::Tensor& state, int64_t layer) const {
    const int64_t index = layer + 1;  // the reference's numbering: hidden_states[index]
    if (index < 0 || index > config_.num_hidden_layers)
      throw std::invalid_argument(
          fmt::format("tuned lens: no layer {}; it has translators for the embedding (-1) and blocks 0..{}", layer,
                      config_.num_hidden_layers - 2));
    if (index == config_.num_hidden_layers) return state;
    const auto& t = translators_[static_cast<std::size_t>(index)];
    const auto bias = config_.bias ? t->bias.to(state.scalar_type()) : torch::Tensor();
    return state + torch::linear(state, t->weight.to(state.scalar_type()), bias);
  }

  [[nodiscard]] std::string name() const override { return "tuned_lens"; }
  [[nodiscard]] std::string label() const override { return "tuned lens"; }
  void check_fits(int64_t num_layers, int64_t width) const override {
    if (config_.num_hidden_layers != num_layers || config_.d_model != width)
      throw std::invalid_argument(
          fmt::format("tuned lens {}: made for {} layers of width {} (num_hidden_layers, d_model), but the model has "
                      "{} layers of width {}",
                      source_.empty() ? std::string("(new)") : source_.string(), config_.num_hidden_layers,
                      config_.d_model, num_layers, width));
  }
  [[nodiscard]] torch::Tensor translate(const torch::Tensor& state, int64_t layer) const override {
    return forward(state, layer);
  }

  /// The lens's configuration.
  [[nodiscard]] const TunedLensConfig& config() const { return config_; }
  /// Translator `index` (the reference's numbering: 0 acts on the embedding).
  [[nodiscard]] torch::nn::Linear translator(int64_t index) const {
    return translators_.at(static_cast<std::size_t>(index));
  }

 private:
  TunedLensConfig config_;
  std::filesystem::path source_;
  std::vector<torch::nn::Linear> translators_;
};
/// The `ModuleHolder` of `TunedLensImpl`.
TORCH_MODULE(TunedLens);

/// A zero tuned lens (the logit lens, to be trained) for `model`, `width` its hidden size.
inline TunedLens make_tuned_lens(models::CausalLM& model, int64_t width, std::string base_model_name_or_path = {}) {
  TunedLensConfig config;
  config.base_model_name_or_path = std::move(base_model_name_or_path);
  config.d_model = width;
  config.num_hidden_layers = model.num_layers();
  return TunedLens(config);
}

/// Loads a tuned lens from `directory` (`config.json`, `params.pt`) through the restricted unpickler. Every
/// translator's weight and bias must be present with shape `[d_model, d_model]` and `[d_model]`, and nothing else;
/// errors name the file and the key. Parameters are kept in float32 (F16/BF16 files upcast exactly).
inline TunedLens load_tuned_lens(const std::filesystem::path& directory) {
  const auto config_path = directory / "config.json", params_path = directory / "params.pt";
  const auto config = TunedLensConfig::from_json(io::read_json_file(config_path), config_path);
  TunedLens lens(config, directory);
  auto fail = [&](io::CheckpointErrorKind kind, const std::string& why) {
    throw io::CheckpointError(kind, params_path, why);
  };
  std::map<std::string, torch::Tensor> tensors;
  for (auto& [key, tensor] : io::load_torch_bin(params_path)) tensors.emplace(key, tensor);
  torch::NoGradGuard no_grad;
  for (auto& item : lens->named_parameters()) {
    const auto& key = item.key();
    auto& parameter = item.value();
    const auto it = tensors.find(key);
    if (it == tensors.end())
      fail(io::CheckpointErrorKind::missing,
           fmt::format("no '{}': a lens of {} layers (config.json's num_hidden_layers{}) has one", key,
                       config.num_hidden_layers, config.bias ? ", with bias" : ""));
    if (it->second.sizes() != parameter.sizes())
      fail(io::CheckpointErrorKind::shape,
           fmt::format("'{}' has shape {}, but d_model {} needs {}", key, io::detail::shape(it->second.sizes()),
                       config.d_model, io::detail::shape(parameter.sizes())));
    if (!it->second.is_floating_point())
      fail(io::CheckpointErrorKind::dtype,
           fmt::format("'{}' is {}, not a floating-point tensor", key, c10::toString(it->second.scalar_type())));
    parameter.copy_(it->second);
    tensors.erase(it);
  }
  if (!tensors.empty())
    fail(
        io::CheckpointErrorKind::unexpected,
        fmt::format("'{}' is not a translator parameter of a lens of {} layers{}", tensors.begin()->first,
                    config.num_hidden_layers, tensors.size() > 1 ? fmt::format(" ({} more)", tensors.size() - 1) : ""));
  return lens;
}

/// Saves `lens` to `directory` (created if needed) as the reference implementation does: `config.json` and
/// `params.pt` (torch.save's zip format, written by libtorch's `pickle_save`, which `torch.load` reads), each put
/// in place atomically. Parameters are written as float32.
inline void save_tuned_lens(const TunedLensImpl& lens, const std::filesystem::path& directory) {
  std::filesystem::create_directories(directory);
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& item : lens.named_parameters())
    state.insert(item.key(), item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous());
  const auto bytes = torch::pickle_save(state);
  io::write_file_atomically(directory / "params.pt", [&](std::ostream& out) {
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  });
  io::write_file_atomically(directory / "config.json",
                            [&](std::ostream& out) { out << lens.config().to_json().dump(2) << '\n'; });
}

}  // namespace baukit
