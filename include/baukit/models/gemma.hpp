/// @file gemma.hpp
/// @brief Gemma 2 and Gemma 3 (text), one model for the `model_type`s `gemma2` and `gemma3_text`: the models of
/// Gemma Scope. What sets them apart from Llama, each easy to miss: RMSNorm scaling by `1 + weight`; the embedding
/// scaled by sqrt(hidden_size) rounded to the checkpoint's dtype; GeGLU with tanh GELU; four norms per layer (the
/// "sandwich": before and after attention and MLP); scores scaled by `query_pre_attn_scalar^-0.5`; sliding-window
/// and global layers alternating; Gemma 2's soft-capping of attention scores and of the final logits; Gemma 3's
/// q/k norms and its second rotary base for the sliding layers; tied embeddings. Hugging Face's names
/// (`model.layers.N.pre_feedforward_layernorm`, ...), every module traceable.
///
/// @code
/// auto model = baukit::models::GemmaForCausalLM::from_pretrained("gemma-2-2b");
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/checkpoint.hpp>
#include <baukit/models/attention.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/models/config.hpp>
#include <baukit/models/layers.hpp>
#include <baukit/models/mlp.hpp>
#include <baukit/models/norms.hpp>
#include <baukit/models/pretrained.hpp>
#include <baukit/models/rotary.hpp>
#include <baukit/models/save.hpp>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace baukit::models {

/// The hyperparameters of `gemma2` and `gemma3_text`, with Hugging Face's names; defaults are each type's
/// (`GemmaConfig::defaults`: Gemma-2-2B's and Gemma-3-4B's text model).
struct GemmaConfig {
  std::string model_type = "gemma2";                     ///< `gemma2` or `gemma3_text`.
  int64_t vocab_size = 256000;                           ///< Rows of the embedding (and the tied unembedding).
  int64_t hidden_size = 2304;                            ///< Width of the residual stream.
  int64_t intermediate_size = 9216;                      ///< Width inside the MLP.
  int64_t num_hidden_layers = 26;                        ///< Number of layers.
  int64_t num_attention_heads = 8;                       ///< Query heads.
  int64_t num_key_value_heads = 4;                       ///< Key/value heads.
  int64_t head_dim = 256;                                ///< Width of a head.
  std::string hidden_activation = "gelu_pytorch_tanh";   ///< The MLP gate's activation.
  int64_t max_position_embeddings = 8192;                ///< Longest sequence.
  double rms_norm_eps = 1e-6;                            ///< RMSNorm epsilon.
  double rope_theta = 10000.0;                           ///< Rotary base (Gemma 3: of the global layers).
  double rope_local_base_freq = 10000.0;                 ///< Gemma 3: rotary base of the sliding layers.
  RopeScaling rope_scaling;                              ///< Gemma 3: scaling of the global layers' frequencies.
  bool attention_bias = false;                           ///< Biases on q, k, v and o.
  double query_pre_attn_scalar = 256;                    ///< Scores are scaled by its inverse square root.
  int64_t sliding_window = 4096;                         ///< Keys a sliding layer's query sees, itself included.
  int64_t sliding_window_pattern = 2;                    ///< Every this-many-th layer is global (Gemma 2: 2, 3: 6).
  std::optional<double> final_logit_softcapping = 30.0;  ///< Gemma 2: logits become cap * tanh(logits / cap).
  std::optional<double> attn_logit_softcapping = 50.0;   ///< Gemma 2: the same on attention scores.
  bool tie_word_embeddings = true;                       ///< `lm_head` shares the embedding's weight.
  std::vector<std::string> layer_types;                  ///< Per layer `sliding_attention` or `full_attention`.
  nlohmann::json bos_token_id = 2;                       ///< As config.json gives it.
  nlohmann::json eos_token_id = 1;                       ///< As config.json gives it.
  nlohmann::json pad_token_id = 0;                       ///< As config.json gives it.
  torch::ScalarType checkpoint_dtype =
      torch::kFloat32;                               ///< `torch_dtype`: the dtype the embedding scale is rounded to.
  torch::ScalarType weight_dtype = torch::kFloat32;  ///< How linear and embedding weights are kept in memory.

  /// The model types this config describes.
  static const std::vector<std::string>& model_types() {
    static const std::vector<std::string> types = {"gemma2", "gemma3_text"};
    return types;
  }
  /// Whether this is Gemma 3 (q/k norms, two rotary bases).
  [[nodiscard]] bool gemma3() const { return model_type == "gemma3_text"; }

  /// Hugging Face's defaults for `model_type` (the `Gemma2Config` and `Gemma3TextConfig` constructors).
  static GemmaConfig defaults(const std::string& model_type) {
    GemmaConfig c;
    c.model_type = model_type;
    if (model_type == "gemma3_text") {
      c.vocab_size = 262208;
      c.max_position_embeddings = 131072;
      c.rope_theta = 1e6;
      c.sliding_window_pattern = 6;
      c.final_logit_softcapping = std::nullopt;
      c.attn_logit_softcapping = std::nullopt;
    }
    return c;
  }

  /// The table of `config.json` keys and the members they set, for this model type. `field(key, member, positive)`.
  template <class Config, class Field>
  static void for_each_field(Config& c, Field&& field) {
    field("vocab_size", c.vocab_size, true);
    field("hidden_size", c.hidden_size, true);
    field("intermediate_size", c.intermediate_size, true);
    field("num_hidden_layers", c.num_hidden_layers, true);
    field("num_attention_heads", c.num_attention_heads, true);
    field("num_key_value_heads", c.num_key_value_heads, true);
    field("head_dim", c.head_dim, true);
    field("hidden_activation", c.hidden_activation, false);
    field("max_position_embeddings", c.max_position_embeddings, true);
    field("rms_norm_eps", c.rms_norm_eps, true);
    field("rope_theta", c.rope_theta, true);
    if (c.model_type == "gemma3_text") field("rope_local_base_freq", c.rope_local_base_freq, true);
    field("attention_bias", c.attention_bias, false);
    field("query_pre_attn_scalar", c.query_pre_attn_scalar, true);
    field("sliding_window", c.sliding_window, true);
    field("final_logit_softcapping", c.final_logit_softcapping, true);
    field("attn_logit_softcapping", c.attn_logit_softcapping, true);
    field("tie_word_embeddings", c.tie_word_embeddings, false);
    field("bos_token_id", c.bos_token_id, false);
    field("eos_token_id", c.eos_token_id, false);
    field("pad_token_id", c.pad_token_id, false);
  }

  /// Hugging Face's layer types when config.json lists none: layer i is global when (i + 1) is a multiple of
  /// `sliding_window_pattern`, else it slides (Gemma 2: odd layers global; Gemma 3: every sixth).
  static std::vector<std::string> default_layer_types(const GemmaConfig& c) {
    std::vector<std::string> types;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      types.emplace_back((i + 1) % c.sliding_window_pattern != 0 ? "sliding_attention" : "full_attention");
    return types;
  }
  /// Whether layer `layer` slides.
  [[nodiscard]] bool slides(int64_t layer) const {
    return layer_types.at(static_cast<std::size_t>(layer)) == "sliding_attention";
  }

  /// Reads a parsed `config.json` of one of `model_types()`; unsupported settings fail by name.
  static GemmaConfig from_config(const ConfigFile& file, const PretrainedOptions& options = {}) {
    const auto type = file.get<std::string>("model_type", "");
    if (std::find(model_types().begin(), model_types().end(), type) == model_types().end())
      file.fail("model_type", fmt::format("is '{}', not one of gemma2, gemma3_text", type));
    auto c = defaults(type);
    c.hidden_activation = file.get<std::string>("hidden_act", c.hidden_activation);  // older configs' name
    for_each_field(c, ConfigReader{file});
    c.sliding_window_pattern = file.positive("sliding_window_pattern", c.sliding_window_pattern);
    read_rope(file, c);
    if (!ActivationImpl::supported().count(c.hidden_activation))
      file.fail("hidden_activation", fmt::format("'{}' is not supported", c.hidden_activation));
    if (c.num_attention_heads % c.num_key_value_heads != 0)
      file.fail("num_key_value_heads",
                fmt::format("{} does not divide num_attention_heads {}", c.num_key_value_heads, c.num_attention_heads));
    if (c.head_dim % 2 != 0) file.fail("head_dim", fmt::format("{} must be even for rotary embedding", c.head_dim));
    c.layer_types = default_layer_types(c);
    if (file.json.contains("layer_types") && !file.json["layer_types"].is_null()) {
      const auto& given = file.json["layer_types"];
      if (!given.is_array() || static_cast<int64_t>(given.size()) != c.num_hidden_layers)
        file.fail("layer_types", fmt::format("must list {} layers", c.num_hidden_layers));
      for (std::size_t i = 0; i < given.size(); ++i) {
        if (!given[i].is_string() || (given[i] != "full_attention" && given[i] != "sliding_attention"))
          file.fail(fmt::format("layer_types[{}]", i),
                    fmt::format("is {}, not \"full_attention\" or \"sliding_attention\"", given[i].dump()));
        c.layer_types[i] = given[i].get<std::string>();
      }
    }
    const auto stored = file.get<std::string>("torch_dtype", file.get<std::string>("dtype", "float32"));
    c.checkpoint_dtype = weight_dtype_for(stored);
    c.weight_dtype = weight_dtype_for(stored, options);
    return c;
  }
  /// Reads `directory/config.json`; see `from_config`.
  static GemmaConfig from_pretrained(const std::filesystem::path& directory, const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// What the `CausalLM` interface reports.
  [[nodiscard]] ModelShape shape() const {
    return {model_type, num_hidden_layers, max_position_embeddings, vocab_size};
  }

  /// The factor on the embedding: sqrt(hidden_size) rounded to the checkpoint's dtype, as Hugging Face computes
  /// it in the model's dtype (`normalizer` in Gemma 2, `embed_scale.to(weight.dtype)` in Gemma 3) and as the
  /// models were trained: for Gemma-2-9B 59.75 in BF16, not 59.87.
  [[nodiscard]] double embedding_scale() const {
    return torch::tensor(std::sqrt(static_cast<double>(hidden_size)), torch::kFloat32)
        .to(checkpoint_dtype)
        .to(torch::kFloat64)
        .item<double>();
  }

  /// The rotary embedding of the global layers (`rope_theta`, `rope_scaling`), or with `local` of the sliding
  /// ones (Gemma 3: `rope_local_base_freq`, unscaled; Gemma 2: the same as the global ones).
  [[nodiscard]] RotaryOptions rotary(bool local) const {
    auto options = RotaryOptions(head_dim).max_position_embeddings(max_position_embeddings);
    if (local && gemma3()) return options.base(rope_local_base_freq);
    return options.base(rope_theta).scaling(rope_scaling);
  }

  /// The `config.json` Hugging Face writes for this configuration and model type.
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j = {{"model_type", model_type},
                        {"architectures", {gemma3() ? "Gemma3ForCausalLM" : "Gemma2ForCausalLM"}}};
    for_each_field(*this, ConfigWriter{j});
    j["rope_scaling"] = rope_scaling.to_json();
    j["layer_types"] = layer_types;
    if (gemma3()) j["sliding_window_pattern"] = sliding_window_pattern;
    j["torch_dtype"] = dtype_name(weight_dtype);
    return j;
  }

 private:
  // rope_scaling and rope_theta as older configs give them; or the rope_parameters of newer ones, one entry per
  // layer type for Gemma 3 ({"full_attention": {...}, "sliding_attention": {...}}).
  static void read_rope(const ConfigFile& file, GemmaConfig& c) {
    const auto& j = file.json;
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
        j["rope_parameters"].contains("full_attention")) {
      for (const char* kind : {"full_attention", "sliding_attention"}) {
        if (!j["rope_parameters"].contains(kind)) continue;
        const auto& p = j["rope_parameters"][kind];
        const ConfigFile part{{{"rope_parameters", p}}, file.path};
        const bool global = std::string_view(kind) == "full_attention";
        if (global) c.rope_scaling = RopeScaling::read(part, c.max_position_embeddings);
        if (p.is_object() && p.contains("rope_theta") && p["rope_theta"].is_number())
          (global ? c.rope_theta : c.rope_local_base_freq) = p["rope_theta"].get<double>();
      }
      return;
    }
    c.rope_scaling = RopeScaling::read(file, c.max_position_embeddings);
  }
};

/// The token embedding multiplied by a constant (Gemma's sqrt(hidden_size)), as Gemma 3's
/// `Gemma3TextScaledWordEmbedding`: its output is the residual stream before layer 0. (Gemma 2's Hugging Face code
/// multiplies right after its plain embedding instead; here both families scale inside `embed_tokens`, so the
/// lens and a trace read the stream at `model.embed_tokens` in both.)
class ScaledEmbeddingImpl : public torch::nn::Cloneable<ScaledEmbeddingImpl> {
 public:
  /// `vocab` rows of `dim`, kept as `dtype`, scaled by `scale`.
  ScaledEmbeddingImpl(int64_t vocab, int64_t dim, double scale, torch::ScalarType dtype)
      : vocab_(vocab), dim_(dim), scale_(scale), dtype_(dtype) {
    reset();
  }
  /// Registers `weight` [vocab, dim], uninitialised.
  void reset() override { weight = register_parameter("weight", torch::empty({vocab_, dim_}, torch::dtype(dtype_))); }
  /// The rows of `input_ids`, float32, times the scale.
  torch::Tensor forward(const torch::Tensor& input_ids) {
    return torch::embedding(weight, input_ids).to(torch::kFloat32) * scale_;
  }
  /// The factor on the rows.
  [[nodiscard]] double scale() const { return scale_; }
  /// Prints `ScaledEmbedding(vocab, dim, scale=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "ScaledEmbedding(" << vocab_ << ", " << dim_ << ", scale=" << scale_ << ")";
  }

  torch::Tensor weight;  ///< [vocab, dim].

 private:
  int64_t vocab_, dim_;
  double scale_;
  torch::ScalarType dtype_;
};
/// Traceable holder of `ScaledEmbeddingImpl`.
BAUKIT_TRACED_MODULE(ScaledEmbedding);

/// `cap * tanh(x / cap)` as a module: Gemma 2's final logit soft-capping, the model's last step after `lm_head`
/// and so the lens decoder's too (`CausalLM::logit_transform`).
class SoftCapImpl : public torch::nn::Cloneable<SoftCapImpl> {
 public:
  /// Caps at `cap`.
  explicit SoftCapImpl(double cap) : cap(cap) {}
  /// Nothing to register.
  void reset() override {}
  /// The capped `x`.
  torch::Tensor forward(const torch::Tensor& x) { return soft_cap(x, cap); }
  /// Prints `SoftCap(cap)`.
  void pretty_print(std::ostream& stream) const override { stream << "SoftCap(" << cap << ")"; }

  double cap;  ///< The bound.
};
/// Traceable holder of `SoftCapImpl`.
BAUKIT_TRACED_MODULE(SoftCap);

/// A Gemma decoder layer, with its four norms: h = x + post_attention_layernorm(self_attn(input_layernorm(x))),
/// then h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))). Its output is the residual stream.
class GemmaDecoderLayerImpl : public torch::nn::Cloneable<GemmaDecoderLayerImpl> {
 public:
  /// Layer `layer_idx` of `config`, turning queries and keys by `rotary`.
  GemmaDecoderLayerImpl(const GemmaConfig& config, int64_t layer_idx, RotaryEmbedding rotary)
      : config_(config), layer_idx_(layer_idx), rotary_(std::move(rotary)) {
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto& c = config_;
    const auto norm = RMSNormOptions(c.hidden_size).eps(c.rms_norm_eps).unit_offset(true);
    input_layernorm = register_module("input_layernorm", RMSNorm(norm));
    auto attention = AttentionOptions(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
                         .qkv_bias(c.attention_bias)
                         .output_bias(c.attention_bias)
                         .scaling(1.0 / std::sqrt(c.query_pre_attn_scalar))
                         .softcap(c.attn_logit_softcapping.value_or(0.0))
                         .sliding_window(c.slides(layer_idx_) ? c.sliding_window : 0)
                         .layer_idx(layer_idx_)
                         .dtype(c.weight_dtype);
    if (c.gemma3()) attention.qk_norm_eps(c.rms_norm_eps).qk_norm_unit_offset(true);
    self_attn = register_module("self_attn", Attention(attention, rotary_));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(norm));
    pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", RMSNorm(norm));
    mlp = register_module(
        "mlp",
        GatedMLP(
            GatedMLPOptions(c.hidden_size, c.intermediate_size).activation(c.hidden_activation).dtype(c.weight_dtype)));
    post_feedforward_layernorm = register_module("post_feedforward_layernorm", RMSNorm(norm));
  }
  /// The layer; arguments as for `AttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const auto h = x + post_attention_layernorm(self_attn(input_layernorm(x), cos, sin, mask, cache));
    return h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
  }

  RMSNorm input_layernorm{nullptr};             ///< Before attention.
  Attention self_attn{nullptr};                 ///< Self-attention (sliding or global).
  RMSNorm post_attention_layernorm{nullptr};    ///< On attention's output, before the residual sum.
  RMSNorm pre_feedforward_layernorm{nullptr};   ///< Before the MLP.
  GatedMLP mlp{nullptr};                        ///< GeGLU.
  RMSNorm post_feedforward_layernorm{nullptr};  ///< On the MLP's output, before the residual sum.

 private:
  GemmaConfig config_;
  int64_t layer_idx_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GemmaDecoderLayerImpl`.
BAUKIT_TRACED_MODULE(GemmaDecoderLayer);

/// The body: the scaled embedding, the layers, the final RMSNorm; rotary angles computed once per forward (two
/// sets for Gemma 3).
class GemmaModelImpl : public torch::nn::Cloneable<GemmaModelImpl> {
 public:
  /// The body for `config`.
  explicit GemmaModelImpl(const GemmaConfig& config)
      : config_(config), rotary_global_(config.rotary(false)), rotary_local_(config.rotary(true)) {
    reset();
  }
  /// Registers the submodules (the embedding uninitialised, kept as `weight_dtype`).
  void reset() override {
    const auto& c = config_;
    embed_tokens = register_module("embed_tokens",
                                   ScaledEmbedding(c.vocab_size, c.hidden_size, c.embedding_scale(), c.weight_dtype));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      layers->push_back(GemmaDecoderLayer(c, i, c.slides(i) ? rotary_local_ : rotary_global_));
    norm = register_module("norm", RMSNorm(RMSNormOptions(c.hidden_size).eps(c.rms_norm_eps).unit_offset(true)));
  }
  /// Hidden states after `norm`, float32; arguments as for `CausalLM::forward`.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) {
    const auto [positions, mask] = causal_inputs(input_ids, attention_mask, cache ? cache->length() : 0,
                                                 config_.max_position_embeddings, config_.model_type);
    check_input_ids(input_ids, config_.vocab_size, config_.model_type);
    const auto [cos_global, sin_global] = rotary_global_.angles(positions);
    const auto [cos_local, sin_local] =
        config_.gemma3() ? rotary_local_.angles(positions) : std::pair(cos_global, sin_global);
    auto x = embed_tokens(input_ids);
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
      const bool local = config_.slides(i);
      x = layers[i]->as<GemmaDecoderLayer::Impl>()->forward(x, local ? cos_local : cos_global,
                                                            local ? sin_local : sin_global, mask, cache);
    }
    return norm(x);
  }

  ScaledEmbedding embed_tokens{
      nullptr};  ///< [vocab, hidden], times sqrt(hidden); its output is the stream before layer 0.
  torch::nn::ModuleList layers{nullptr};  ///< The layers, `GemmaDecoderLayer`.
  RMSNorm norm{nullptr};                  ///< The final RMSNorm.

 private:
  GemmaConfig config_;
  RotaryEmbedding rotary_global_, rotary_local_;
};
/// Traceable holder of `GemmaModelImpl`.
BAUKIT_TRACED_MODULE(GemmaModel);

/// Gemma 2 or Gemma 3 (text) with its head, as Hugging Face's `Gemma2ForCausalLM` and `Gemma3ForCausalLM`:
/// logits are `lm_head`'s output, soft-capped where `final_logit_softcapping` is set.
class GemmaForCausalLMImpl : public CausalLMModule<GemmaForCausalLMImpl> {
 public:
  /// An uninitialised model for `config`.
  explicit GemmaForCausalLMImpl(GemmaConfig config) : config(std::move(config)) { reset(); }
  /// Registers the submodules; `lm_head` shares the embedding's weight when tied.
  void reset() override {
    model = register_module("model", GemmaModel(config));
    lm_head = register_module(
        "lm_head",
        Linear(LinearOptions(config.hidden_size, config.vocab_size)
                   .dtype(config.weight_dtype)
                   .tied_weight(config.tie_word_embeddings ? model->embed_tokens->weight : torch::Tensor())));
  }
  /// Logits [batch, tokens, vocab], float32, soft-capped when the config says so.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) override {
    const auto logits = lm_head(model(input_ids, attention_mask, cache));
    return config.final_logit_softcapping ? soft_cap(logits, *config.final_logit_softcapping) : logits;
  }

  /// Loads the checkpoint of a parsed `config.json` (from its directory) as Hugging Face's `from_pretrained` does,
  /// in eval mode; F16/BF16 weights stay mapped unless `options.weight_dtype()` says otherwise.
  static std::shared_ptr<GemmaForCausalLMImpl> from_config(const ConfigFile& file,
                                                           const PretrainedOptions& options = {}) {
    const auto directory = file.path.parent_path();
    auto config = GemmaConfig::from_config(file, options);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.hidden_size, vocab = config.vocab_size, q = config.num_attention_heads * config.head_dim,
                  kv = config.num_key_value_heads * config.head_dim;
    std::vector<ExpectedShape> shapes = {
        {"model.embed_tokens.weight", {vocab, d}, {"vocab_size", "hidden_size"}},
        {"model.layers.0.self_attn.q_proj.weight", {q, d}, {"num_attention_heads", "head_dim", "hidden_size"}},
        {"model.layers.0.self_attn.k_proj.weight", {kv, d}, {"num_key_value_heads", "head_dim", "hidden_size"}},
        {"model.layers.0.mlp.gate_proj.weight", {config.intermediate_size, d}, {"intermediate_size", "hidden_size"}}};
    if (!config.tie_word_embeddings) shapes.push_back({"lm_head.weight", {vocab, d}, {"vocab_size", "hidden_size"}});
    check_config_against_checkpoint(directory, state, "", shapes, "num_hidden_layers", config.num_hidden_layers,
                                    "model.layers.");
    auto load = io::LoadOptions();
    if (config.tie_word_embeddings) load.may_be_missing({"lm_head.weight"});
    return build_pretrained<GemmaForCausalLMImpl>(std::move(config), state, load, directory, options);
  }
  /// Loads `directory`; see `from_config`.
  static std::shared_ptr<GemmaForCausalLMImpl> from_pretrained(const std::filesystem::path& directory,
                                                               const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// Writes `config.json` and `model.safetensors`, every tensor stored as `weight_dtype` (a tied `lm_head` is not
  /// stored); norms are read back as float32.
  void save_pretrained(const std::filesystem::path& directory) {
    save_checkpoint(*this, config.to_json(), directory, config.weight_dtype, tied_names());
  }
  /// The tensors a tied checkpoint does not store.
  [[nodiscard]] std::set<std::string> tied_names() const {
    return config.tie_word_embeddings ? std::set<std::string>{"lm_head.weight"} : std::set<std::string>{};
  }

  // CausalLM
  /// `model.layers.N`, `model.embed_tokens` (scaled), `model.norm`, `lm_head`; after attention:
  /// `model.layers.N.post_attention_layernorm` (attention's output is normed before the residual sum).
  [[nodiscard]] LensLayout lens_layout() const override {
    LensLayout layout{{}, "model.embed_tokens", "model.norm", "lm_head", {}};
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      layout.blocks.push_back(fmt::format("model.layers.{}", i));
      layout.attention.push_back(fmt::format("model.layers.{}.post_attention_layernorm", i));
    }
    return layout;
  }
  /// `model.norm`.
  torch::nn::AnyModule final_norm() override { return torch::nn::AnyModule(model->norm); }
  /// `lm_head`.
  torch::nn::AnyModule unembedding() override { return torch::nn::AnyModule(lm_head); }
  /// Gemma 2's final soft-capping (`final_logit_softcapping`), so the lens decodes every layer as the model decodes
  /// its last; none for Gemma 3.
  torch::nn::AnyModule logit_transform() override {
    if (!config.final_logit_softcapping) return {};
    return torch::nn::AnyModule(SoftCap(*config.final_logit_softcapping));
  }

  GemmaConfig config;         ///< Hyperparameters.
  GemmaModel model{nullptr};  ///< The body.
  Linear lm_head{nullptr};    ///< The unembedding [vocab, hidden], tied in every released Gemma.
};
/// Holder of `GemmaForCausalLMImpl`, with `from_pretrained`.
using GemmaForCausalLM = PretrainedHolder<GemmaForCausalLMImpl>;

}  // namespace baukit::models
