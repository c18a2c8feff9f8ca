/// @file rotary.hpp
/// @brief Rotary position embedding with Hugging Face's semantics: both layouts (rotate-half as Llama and GPT-NeoX
/// have it, adjacent pairs as GPT-J has it), partial rotary dimensions, and the `rope_scaling` types `linear`,
/// `dynamic`, `llama3` and `yarn` (`modeling_rope_utils.py`).
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/models/config.hpp>
#include <cmath>
#include <numbers>
#include <optional>
#include <string>
#include <utility>

namespace baukit::models {

/// Which dimensions of a head turn together.
enum class RotaryLayout {
  half,      ///< Dimension i with i + rotary_dim/2 (Llama, Mistral, Qwen, Gemma, GPT-NeoX: `rotate_half`).
  adjacent,  ///< Dimensions 2i and 2i+1 (GPT-J: `rotate_every_two`).
};

/// `config.json`'s `rope_scaling` (or `rope_parameters`): how frequencies are stretched for long contexts.
struct RopeScaling {
  std::string type = "default";                  ///< `default`, `linear`, `dynamic`, `llama3` or `yarn`.
  double factor = 1.0;                           ///< How much longer a context than trained on.
  int64_t original_max_position_embeddings = 0;  ///< The trained context (llama3, yarn; 0: `max_position_embeddings`).
  double low_freq_factor = 1.0;                  ///< llama3: wavelengths above original / this are scaled fully.
  double high_freq_factor = 4.0;                 ///< llama3: wavelengths below original / this are kept.
  std::optional<double> attention_factor;        ///< yarn: scale of cos and sin (default from `factor` and mscale).
  double beta_fast = 32.0;                       ///< yarn: rotations where extrapolation ends.
  double beta_slow = 1.0;                        ///< yarn: rotations where interpolation starts.
  double mscale = 0.0;                           ///< yarn (DeepSeek): numerator's mscale; 0 unless given.
  double mscale_all_dim = 0.0;                   ///< yarn (DeepSeek): denominator's mscale; 0 unless given.
  bool truncate = true;                          ///< yarn: round the correction range to whole dimensions.

  /// Reads `config`'s `rope_scaling`, or the `rope_parameters` of newer configs (null or absent: `default`).
  /// A type this does not compute fails by name, e.g. `'rope_scaling.rope_type' "longrope" is not supported`.
  static RopeScaling read(const ConfigFile& config, int64_t max_position_embeddings) {
    RopeScaling s;
    const char* key = config.json.contains("rope_parameters") && config.json["rope_parameters"].is_object()
                          ? "rope_parameters"
                          : "rope_scaling";
    if (!config.json.contains(key) || config.json[key].is_null()) return s;
    const auto& j = config.json[key];
    if (!j.is_object()) config.fail(key, "must be an object or null");
    auto number = [&](const char* name, double fallback) {
      if (!j.contains(name) || j[name].is_null()) return fallback;
      if (!j[name].is_number()) config.fail(fmt::format("{}.{}", key, name), "must be a number");
      return j[name].get<double>();
    };
    const char* type_key = j.contains("rope_type") ? "rope_type" : "type";
    if (j.contains(type_key)) {
      if (!j[type_key].is_string()) config.fail(fmt::format("{}.{}", key, type_key), "must be a string");
      s.type = j[type_key].get<std::string>();
    }
    if (s.type != "default" && s.type != "linear" && s.type != "dynamic" && s.type != "llama3" && s.type != "yarn")
      config.fail(fmt::format("{}.{}", key, type_key),
                  fmt::format("\"{}\" is not supported (supported: default, linear, dynamic, llama3, yarn)", s.type));
    const bool needs_factor = s.type == "linear" || s.type == "dynamic" || s.type == "llama3";
    if (needs_factor && !(j.contains("factor") && j["factor"].is_number()))
      config.fail(fmt::format("{}.factor", key), fmt::format("is required for rope_type \"{}\"", s.type));
    s.original_max_position_embeddings =
        static_cast<int64_t>(number("original_max_position_embeddings", static_cast<double>(max_position_embeddings)));
    // yarn without a factor: the ratio of the context to the trained one (Hugging Face's rule).
    s.factor = number("factor", s.type == "yarn" ? static_cast<double>(max_position_embeddings) /
                                                       static_cast<double>(s.original_max_position_embeddings)
                                                 : 1.0);
    if (!(s.factor >= 1.0) && s.type != "default")
      config.fail(fmt::format("{}.factor", key), fmt::format("must be at least 1, not {}", s.factor));
    s.low_freq_factor = number("low_freq_factor", s.low_freq_factor);
    s.high_freq_factor = number("high_freq_factor", s.high_freq_factor);
    if (s.type == "llama3" && !(s.high_freq_factor > s.low_freq_factor))
      config.fail(fmt::format("{}.high_freq_factor", key), "must exceed low_freq_factor");
    if (j.contains("attention_factor") && !j["attention_factor"].is_null())
      s.attention_factor = number("attention_factor", 1.0);
    s.beta_fast = number("beta_fast", s.beta_fast);
    s.beta_slow = number("beta_slow", s.beta_slow);
    s.mscale = number("mscale", 0.0);
    s.mscale_all_dim = number("mscale_all_dim", 0.0);
    if (j.contains("truncate") && j["truncate"].is_boolean()) s.truncate = j["truncate"].get<bool>();
    return s;
  }

  /// As `config.json` writes it (null for `default`).
  [[nodiscard]] nlohmann::json to_json() const {
    if (type == "default") return nullptr;
    nlohmann::json j = {{"rope_type", type}, {"factor", factor}};
    if (type == "llama3")
      j.update({{"low_freq_factor", low_freq_factor},
                {"high_freq_factor", high_freq_factor},
                {"original_max_position_embeddings", original_max_position_embeddings}});
    if (type == "yarn") {
      j["original_max_position_embeddings"] = original_max_position_embeddings;
      if (attention_factor) j["attention_factor"] = *attention_factor;
      j.update({{"beta_fast", beta_fast}, {"beta_slow", beta_slow}});
    }
    return j;
  }
};

/// What a rotary embedding is: `RotaryOptions(128).base(500000).scaling(...)`.
struct RotaryOptions {
  /// Rotary embedding for heads of `head_dim` dimensions, all of them rotated.
  explicit RotaryOptions(int64_t head_dim) : head_dim_(head_dim), rotary_dim_(head_dim) {}
  /// Width of a head.
  TORCH_ARG(int64_t, head_dim);
  /// The first this many dimensions of each head turn (`partial_rotary_factor` * head_dim); even.
  TORCH_ARG(int64_t, rotary_dim);
  /// `rope_theta`.
  TORCH_ARG(double, base) = 10000.0;
  /// Which dimensions pair up.
  TORCH_ARG(RotaryLayout, layout) = RotaryLayout::half;
  /// Frequency scaling for long contexts.
  TORCH_ARG(RopeScaling, scaling) = {};
  /// `max_position_embeddings`: where `dynamic` starts stretching.
  TORCH_ARG(int64_t, max_position_embeddings) = 2048;
};

/// Rotary position embedding: per position, angles `position * inv_freq`, and the rotation of query and key
/// dimensions by them. Not a module: it has no weights (Hugging Face's `inv_freq` buffer is not persistent).
class RotaryEmbedding {
 public:
  /// The embedding `options` describe; frequencies computed once (except `dynamic`'s, per call).
  explicit RotaryEmbedding(RotaryOptions options) : options_(std::move(options)) {
    if (options_.rotary_dim() % 2 != 0 || options_.rotary_dim() < 2 || options_.rotary_dim() > options_.head_dim())
      throw std::invalid_argument(
          fmt::format("rotary embedding: {} rotated dimensions must be even and within the "
                      "head's {}",
                      options_.rotary_dim(), options_.head_dim()));
    std::tie(inv_freq_, attention_factor_) = frequencies(options_.base());
  }

  /// `cos` and `sin` [batch, tokens, rotary_dim] at `positions` [batch, tokens], float32, laid out for `apply`.
  [[nodiscard]] std::pair<torch::Tensor, torch::Tensor> angles(const torch::Tensor& positions) const {
    const auto longest = options_.scaling().type == "dynamic" ? positions.max().item<int64_t>() + 1 : 0;
    const auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq(longest).to(positions.device());
    const auto emb =
        options_.layout() == RotaryLayout::half ? torch::cat({freqs, freqs}, -1) : freqs.repeat_interleave(2, -1);
    return {emb.cos() * attention_factor_, emb.sin() * attention_factor_};
  }

  /// The inverse frequencies [rotary_dim / 2], float32, after scaling, for a sequence whose longest position is
  /// `longest` - 1 (only `dynamic` depends on it: past `max_position_embeddings`, NTK-aware scaling enlarges the
  /// base for that length, as Hugging Face's `dynamic_rope_update` recomputes it per call).
  [[nodiscard]] torch::Tensor inv_freq(int64_t longest = 0) const {
    const auto& s = options_.scaling();
    const auto trained = static_cast<double>(options_.max_position_embeddings());
    if (s.type != "dynamic" || static_cast<double>(longest) <= trained) return inv_freq_;
    const double dim = static_cast<double>(options_.rotary_dim());
    const double base = options_.base() * std::pow(s.factor * static_cast<double>(longest) / trained - (s.factor - 1.0),
                                                   dim / (dim - 2.0));
    return default_inv_freq(base);
  }

  /// Rotates the first `rotary_dim` dimensions of `x` [batch, heads, tokens, head_dim] by `cos`, `sin` from
  /// `angles`; the rest pass unchanged.
  [[nodiscard]] torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) const {
    const int64_t rd = options_.rotary_dim();
    const auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // broadcast over heads
    const auto turned = rd == x.size(-1) ? x : x.slice(-1, 0, rd);
    auto rotated = turned * c + rotate(turned) * s;
    return rd == x.size(-1) ? rotated : torch::cat({rotated, x.slice(-1, rd)}, -1);
  }

  /// The factor on cos and sin (yarn's attention factor; 1 otherwise).
  [[nodiscard]] double attention_factor() const { return attention_factor_; }
  /// What the embedding is.
  [[nodiscard]] const RotaryOptions& options() const { return options_; }

 private:
  // (-x2, x1) for halves, (-x1, x0, -x3, x2, ...) for adjacent pairs.
  [[nodiscard]] torch::Tensor rotate(const torch::Tensor& x) const {
    if (options_.layout() == RotaryLayout::half) {
      const auto half = x.size(-1) / 2;
      return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
    }
    const auto even = x.slice(-1, 0, c10::nullopt, 2), odd = x.slice(-1, 1, c10::nullopt, 2);
    return torch::stack({-odd, even}, -1).flatten(-2);
  }

  // 1 / base^(2i / dim), in float32 as Hugging Face computes it.
  [[nodiscard]] torch::Tensor default_inv_freq(double base) const {
    const auto dim = options_.rotary_dim();
    return 1.0 /
           torch::pow(base, torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat32) / static_cast<double>(dim));
  }

  [[nodiscard]] std::pair<torch::Tensor, double> frequencies(double base) const {
    const auto& s = options_.scaling();
    auto inv_freq = default_inv_freq(base);
    if (s.type == "linear") return {inv_freq / s.factor, 1.0};
    if (s.type == "llama3") {
      // Long wavelengths are divided by the factor, short ones kept, the band between blended smoothly.
      const double trained = static_cast<double>(s.original_max_position_embeddings);
      const double low_freq_wavelen = trained / s.low_freq_factor, high_freq_wavelen = trained / s.high_freq_factor;
      const auto wavelen = 2.0 * std::numbers::pi / inv_freq;
      auto scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
      const auto smooth = (trained / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      const auto smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
      const auto medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
      return {torch::where(medium, smoothed, scaled), 1.0};
    }
    if (s.type == "yarn") {
      const auto dim = static_cast<double>(options_.rotary_dim());
      auto get_mscale = [](double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
      double attention =
          s.attention_factor.value_or(s.mscale != 0.0 && s.mscale_all_dim != 0.0
                                          ? get_mscale(s.factor, s.mscale) / get_mscale(s.factor, s.mscale_all_dim)
                                          : get_mscale(s.factor, 1.0));
      auto correction_dim = [&](double rotations) {
        return dim *
               std::log(static_cast<double>(s.original_max_position_embeddings) /
                        (rotations * 2.0 * std::numbers::pi)) /
               (2.0 * std::log(base));
      };
      double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
      if (s.truncate) low = std::floor(low), high = std::ceil(high);
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1.0);
      if (low == high) high += 0.001;  // no zero-width ramp
      const auto ramp =
          ((torch::arange(options_.rotary_dim() / 2, torch::kFloat32) - low) / (high - low)).clamp(0.0, 1.0);
      const auto extrapolation_factor = 1.0 - ramp;
      const auto pos_freqs =
          torch::pow(base, torch::arange(0, options_.rotary_dim(), 2, torch::kLong).to(torch::kFloat32) / dim);
      const auto interpolation = 1.0 / (s.factor * pos_freqs), extrapolation = 1.0 / pos_freqs;
      return {interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor, attention};
    }
    return {inv_freq, 1.0};  // default, and dynamic within the trained context
  }

  RotaryOptions options_;
  torch::Tensor inv_freq_;
  double attention_factor_ = 1.0;
};

}  // namespace baukit::models
