/// @file llama.hpp
/// @brief The Llama architecture and its close relatives, one model for four `model_type`s: `llama` (Llama 2,
/// Llama 3/3.1/3.2, TinyLlama, SmolLM), `mistral` (sliding window), `qwen2` (q/k/v bias) and `qwen3` (per-head q/k
/// RMSNorm, explicit `head_dim`). Hugging Face's names (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
/// `mlp.gate_proj`, `input_layernorm`, `post_attention_layernorm`, `model.norm`, `lm_head`), every module traceable.
///
/// @code
/// auto model = baukit::models::LlamaForCausalLM::from_pretrained("Llama-3.2-1B");
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
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace baukit::models {

/// The hyperparameters of `llama`, `mistral`, `qwen2` and `qwen3`, with Hugging Face's names; defaults are each
/// type's (`LlamaConfig::defaults`).
struct LlamaConfig {
  std::string model_type = "llama";                  ///< `llama`, `mistral`, `qwen2` or `qwen3`.
  int64_t vocab_size = 32000;                        ///< Rows of the embedding and the unembedding.
  int64_t hidden_size = 4096;                        ///< Width of the residual stream.
  int64_t intermediate_size = 11008;                 ///< Width inside the MLP.
  int64_t num_hidden_layers = 32;                    ///< Number of blocks.
  int64_t num_attention_heads = 32;                  ///< Query heads.
  std::optional<int64_t> num_key_value_heads;        ///< Key/value heads; unset: one per query head.
  std::optional<int64_t> head_dim;                   ///< Width of a head; unset: hidden_size / heads.
  int64_t max_position_embeddings = 2048;            ///< Longest sequence.
  std::string hidden_act = "silu";                   ///< The MLP gate's activation.
  double rms_norm_eps = 1e-6;                        ///< RMSNorm epsilon.
  double rope_theta = 10000.0;                       ///< Rotary base.
  double partial_rotary_factor = 1.0;                ///< Share of each head that turns.
  RopeScaling rope_scaling;                          ///< Long-context frequency scaling.
  bool attention_bias = false;                       ///< `llama`, `qwen3`: biases on q, k, v and o.
  bool mlp_bias = false;                             ///< `llama`: biases on the MLP's projections.
  bool tie_word_embeddings = false;                  ///< `lm_head` shares the embedding's weight.
  std::optional<int64_t> sliding_window;             ///< `mistral`, `qwen2`, `qwen3`: the window, if any.
  bool use_sliding_window = false;                   ///< `qwen2`, `qwen3`: whether the window is used at all.
  int64_t max_window_layers = 28;                    ///< `qwen2`, `qwen3`: layers from this index on use the window.
  std::vector<std::string> layer_types;              ///< Per layer `full_attention` or `sliding_attention` (derived).
  nlohmann::json bos_token_id = 1;                   ///< As config.json gives it (an id or null).
  nlohmann::json eos_token_id = 2;                   ///< As config.json gives it (an id, a list or null).
  torch::ScalarType weight_dtype = torch::kFloat32;  ///< How linear and embedding weights are kept in memory.

  /// The model types this config describes.
  static const std::vector<std::string>& model_types() {
    static const std::vector<std::string> types = {"llama", "mistral", "qwen2", "qwen3"};
    return types;
  }

  /// Hugging Face's defaults for `model_type` (the `LlamaConfig`, `MistralConfig`, `Qwen2Config` and
  /// `Qwen3Config` constructors).
  static LlamaConfig defaults(const std::string& model_type) {
    LlamaConfig c;
    c.model_type = model_type;
    if (model_type == "mistral") {
      c.intermediate_size = 14336;
      c.num_key_value_heads = 8;
      c.max_position_embeddings = 4096 * 32;
      c.sliding_window = 4096;
    } else if (model_type == "qwen2" || model_type == "qwen3") {
      c.vocab_size = 151936;
      c.intermediate_size = 22016;
      c.max_position_embeddings = 32768;
      c.sliding_window = 4096;
      c.bos_token_id = nullptr;
      c.eos_token_id = nullptr;
      if (model_type == "qwen3") c.head_dim = 128;
    }
    return c;
  }

  /// The table of `config.json` keys: each key with the member it sets, for this model type. Reading,
  /// defaults, errors and `to_json` all go through it. `field(key, member, positive)`.
  template <class Config, class Field>
  static void for_each_field(Config& c, Field&& field) {
    const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
    field("vocab_size", c.vocab_size, true);
    field("hidden_size", c.hidden_size, true);
    field("intermediate_size", c.intermediate_size, true);
    field("num_hidden_layers", c.num_hidden_layers, true);
    field("num_attention_heads", c.num_attention_heads, true);
    field("num_key_value_heads", c.num_key_value_heads, true);
    field("head_dim", c.head_dim, true);
    field("max_position_embeddings", c.max_position_embeddings, true);
    field("hidden_act", c.hidden_act, false);
    field("rms_norm_eps", c.rms_norm_eps, true);
    field("rope_theta", c.rope_theta, true);
    field("tie_word_embeddings", c.tie_word_embeddings, false);
    if (c.model_type == "llama") field("mlp_bias", c.mlp_bias, false);
    if (c.model_type == "llama" || c.model_type == "qwen3") field("attention_bias", c.attention_bias, false);
    if (c.model_type != "llama") field("sliding_window", c.sliding_window, true);
    if (qwen) {
      field("use_sliding_window", c.use_sliding_window, false);
      field("max_window_layers", c.max_window_layers, false);
    }
    field("bos_token_id", c.bos_token_id, false);
    field("eos_token_id", c.eos_token_id, false);
  }

  /// Key/value heads.
  [[nodiscard]] int64_t kv_heads() const { return num_key_value_heads.value_or(num_attention_heads); }
  /// Width of a head.
  [[nodiscard]] int64_t head_size() const { return head_dim.value_or(hidden_size / num_attention_heads); }
  /// Biases on q, k and v: always for `qwen2`, else `attention_bias`.
  [[nodiscard]] bool qkv_bias() const { return model_type == "qwen2" || attention_bias; }
  /// A bias on o: never for `qwen2`, else `attention_bias`.
  [[nodiscard]] bool output_bias() const { return model_type != "qwen2" && attention_bias; }
  /// Layer `layer`'s window (0: it sees every earlier token).
  [[nodiscard]] int64_t window(int64_t layer) const {
    return layer_types.at(static_cast<std::size_t>(layer)) == "sliding_attention" ? sliding_window.value_or(0) : 0;
  }

  /// Hugging Face's layer types when config.json lists none: every layer slides for Mistral with a window; Qwen's
  /// layers from `max_window_layers` on slide when `use_sliding_window` is set.
  static std::vector<std::string> default_layer_types(const LlamaConfig& c) {
    std::vector<std::string> types;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      bool slides = false;
      if (c.model_type == "mistral") slides = c.sliding_window.has_value();
      if (c.model_type == "qwen2" || c.model_type == "qwen3")
        slides = c.use_sliding_window && c.sliding_window && i >= c.max_window_layers;
      types.emplace_back(slides ? "sliding_attention" : "full_attention");
    }
    return types;
  }

  /// Reads a parsed `config.json` of one of `model_types()`; unsupported settings fail by name.
  static LlamaConfig from_config(const ConfigFile& file, const PretrainedOptions& options = {}) {
    const auto type = file.get<std::string>("model_type", "");
    if (std::find(model_types().begin(), model_types().end(), type) == model_types().end())
      file.fail("model_type", fmt::format("is '{}', not one of llama, mistral, qwen2, qwen3", type));
    auto c = defaults(type);
    for_each_field(c, ConfigReader{file});
    if (file.json.contains("rope_parameters") && file.json["rope_parameters"].is_object()) {  // newer configs
      const auto& p = file.json["rope_parameters"];
      if (p.contains("rope_theta") && p["rope_theta"].is_number()) c.rope_theta = p["rope_theta"].get<double>();
      if (p.contains("partial_rotary_factor") && p["partial_rotary_factor"].is_number())
        c.partial_rotary_factor = p["partial_rotary_factor"].get<double>();
    }
    c.partial_rotary_factor = file.get<double>("partial_rotary_factor", c.partial_rotary_factor);
    c.rope_scaling = RopeScaling::read(file, c.max_position_embeddings);
    if (!ActivationImpl::supported().count(c.hidden_act))
      file.fail("hidden_act", fmt::format("'{}' is not supported", c.hidden_act));
    if (c.num_attention_heads % c.kv_heads() != 0)
      file.fail("num_key_value_heads",
                fmt::format("{} does not divide num_attention_heads {}", c.kv_heads(), c.num_attention_heads));
    if (!c.head_dim && c.hidden_size % c.num_attention_heads != 0)
      file.fail("hidden_size", fmt::format("{} is not divisible by num_attention_heads {} (and no head_dim is given)",
                                           c.hidden_size, c.num_attention_heads));
    const auto rotary = static_cast<int64_t>(static_cast<double>(c.head_size()) * c.partial_rotary_factor);
    if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1) || rotary < 2 || rotary % 2 != 0)
      file.fail("partial_rotary_factor", fmt::format("{} of head_dim {} must give an even number of rotated dimensions",
                                                     c.partial_rotary_factor, c.head_size()));
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
    for (const auto& t : c.layer_types)
      if (t == "sliding_attention" && !c.sliding_window)
        file.fail("sliding_window", "is null, but layer_types has sliding_attention layers");
    c.weight_dtype =
        weight_dtype_for(file.get<std::string>("torch_dtype", file.get<std::string>("dtype", "float32")), options);
    return c;
  }

  /// Reads `directory/config.json`; see `from_config`.
  static LlamaConfig from_pretrained(const std::filesystem::path& directory, const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// What the `CausalLM` interface reports.
  [[nodiscard]] ModelShape shape() const {
    return {model_type, num_hidden_layers, max_position_embeddings, vocab_size};
  }

  /// The `config.json` Hugging Face writes for this configuration and model type.
  [[nodiscard]] nlohmann::json to_json() const {
    static const std::map<std::string, std::string> architectures = {{"llama", "LlamaForCausalLM"},
                                                                     {"mistral", "MistralForCausalLM"},
                                                                     {"qwen2", "Qwen2ForCausalLM"},
                                                                     {"qwen3", "Qwen3ForCausalLM"}};
    nlohmann::json j = {{"model_type", model_type}, {"architectures", {architectures.at(model_type)}}};
    auto copy = *this;
    copy.num_key_value_heads = kv_heads();
    copy.head_dim = head_size();
    for_each_field(copy, ConfigWriter{j});
    j["rope_scaling"] = rope_scaling.to_json();
    if (partial_rotary_factor != 1.0) j["partial_rotary_factor"] = partial_rotary_factor;
    if (layer_types != default_layer_types(*this)) j["layer_types"] = layer_types;
    j["torch_dtype"] = dtype_name(weight_dtype);
    j["attention_dropout"] = 0.0;
    return j;
  }
};

/// A decoder layer: x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(.)). Its output is
/// the residual stream.
class LlamaDecoderLayerImpl : public torch::nn::Cloneable<LlamaDecoderLayerImpl> {
 public:
  /// Layer `layer_idx` of `config`, turning queries and keys by `rotary`.
  LlamaDecoderLayerImpl(const LlamaConfig& config, int64_t layer_idx, RotaryEmbedding rotary)
      : config_(config), layer_idx_(layer_idx), rotary_(std::move(rotary)) {
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto& c = config_;
    const auto norm = RMSNormOptions(c.hidden_size).eps(c.rms_norm_eps);
    input_layernorm = register_module("input_layernorm", RMSNorm(norm));
    auto attention = AttentionOptions(c.hidden_size, c.num_attention_heads, c.kv_heads(), c.head_size())
                         .qkv_bias(c.qkv_bias())
                         .output_bias(c.output_bias())
                         .sliding_window(c.window(layer_idx_))
                         .layer_idx(layer_idx_)
                         .dtype(c.weight_dtype);
    if (c.model_type == "qwen3") attention.qk_norm_eps(c.rms_norm_eps);
    self_attn = register_module("self_attn", Attention(attention, rotary_));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(norm));
    mlp = register_module("mlp", GatedMLP(GatedMLPOptions(c.hidden_size, c.intermediate_size)
                                              .activation(c.hidden_act)
                                              .bias(c.mlp_bias)
                                              .dtype(c.weight_dtype)));
  }
  /// The layer; arguments as for `AttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const auto h = x + self_attn(input_layernorm(x), cos, sin, mask, cache);
    return h + mlp(post_attention_layernorm(h));
  }

  RMSNorm input_layernorm{nullptr};           ///< Before attention.
  Attention self_attn{nullptr};               ///< Self-attention.
  RMSNorm post_attention_layernorm{nullptr};  ///< Before the MLP.
  GatedMLP mlp{nullptr};                      ///< The gated MLP.

 private:
  LlamaConfig config_;
  int64_t layer_idx_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `LlamaDecoderLayerImpl`.
BAUKIT_TRACED_MODULE(LlamaDecoderLayer);

/// The body: token embedding, the layers, the final RMSNorm; rotary angles computed once per forward.
class LlamaModelImpl : public torch::nn::Cloneable<LlamaModelImpl> {
 public:
  /// The body for `config`.
  explicit LlamaModelImpl(const LlamaConfig& config) : config_(config), rotary_(rotary_options(config)) { reset(); }
  /// Registers the submodules (the embedding uninitialised, kept as `weight_dtype`).
  void reset() override {
    const auto& c = config_;
    embed_tokens = register_module(
        "embed_tokens",
        TracedEmbedding(torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size)
                            ._weight(torch::empty({c.vocab_size, c.hidden_size}, torch::dtype(c.weight_dtype)))));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c, i, rotary_));
    norm = register_module("norm", RMSNorm(RMSNormOptions(c.hidden_size).eps(c.rms_norm_eps)));
  }
  /// Hidden states after `norm`, float32; arguments as for `CausalLM::forward`.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) {
    const auto [positions, mask] = causal_inputs(input_ids, attention_mask, cache ? cache->length() : 0,
                                                 config_.max_position_embeddings, config_.model_type);
    check_input_ids(input_ids, config_.vocab_size, config_.model_type);
    const auto [cos, sin] = rotary_.angles(positions);
    auto x = embed_tokens(input_ids).to(torch::kFloat32);
    for (const auto& layer : *layers) x = layer->as<LlamaDecoderLayer::Impl>()->forward(x, cos, sin, mask, cache);
    return norm(x);
  }

  /// The rotary embedding `config` describes (`rope_theta`, `partial_rotary_factor`, `rope_scaling`).
  static RotaryOptions rotary_options(const LlamaConfig& c) {
    return RotaryOptions(c.head_size())
        .rotary_dim(static_cast<int64_t>(static_cast<double>(c.head_size()) * c.partial_rotary_factor))
        .base(c.rope_theta)
        .scaling(c.rope_scaling)
        .max_position_embeddings(c.max_position_embeddings);
  }

  TracedEmbedding embed_tokens{nullptr};  ///< [vocab, hidden]; its output is the stream before layer 0.
  torch::nn::ModuleList layers{nullptr};  ///< The layers, `LlamaDecoderLayer`.
  RMSNorm norm{nullptr};                  ///< The final RMSNorm.

 private:
  LlamaConfig config_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `LlamaModelImpl`.
BAUKIT_TRACED_MODULE(LlamaModel);

/// A Llama-architecture model with its head, as Hugging Face's `LlamaForCausalLM` (and `MistralForCausalLM`,
/// `Qwen2ForCausalLM`, `Qwen3ForCausalLM`).
class LlamaForCausalLMImpl : public CausalLMModule<LlamaForCausalLMImpl> {
 public:
  /// An uninitialised model for `config`.
  explicit LlamaForCausalLMImpl(LlamaConfig config) : config(std::move(config)) { reset(); }
  /// Registers the submodules; `lm_head` shares the embedding's weight when tied.
  void reset() override {
    model = register_module("model", LlamaModel(config));
    lm_head = register_module(
        "lm_head",
        Linear(LinearOptions(config.hidden_size, config.vocab_size)
                   .dtype(config.weight_dtype)
                   .tied_weight(config.tie_word_embeddings ? model->embed_tokens->weight : torch::Tensor())));
  }
  /// Logits [batch, tokens, vocab], float32.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) override {
    return lm_head(model(input_ids, attention_mask, cache));
  }

  /// Loads the checkpoint of a parsed `config.json` (from its directory) as Hugging Face's `from_pretrained` does,
  /// in eval mode; F16/BF16 weights stay mapped unless `options.weight_dtype()` says otherwise.
  static std::shared_ptr<LlamaForCausalLMImpl> from_config(const ConfigFile& file,
                                                           const PretrainedOptions& options = {}) {
    const auto directory = file.path.parent_path();
    auto config = LlamaConfig::from_config(file, options);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.hidden_size, vocab = config.vocab_size,
                  q = config.num_attention_heads * config.head_size(), kv = config.kv_heads() * config.head_size();
    std::vector<ExpectedShape> shapes = {
        {"model.embed_tokens.weight", {vocab, d}, {"vocab_size", "hidden_size"}},
        {"model.layers.0.self_attn.q_proj.weight", {q, d}, {"num_attention_heads", "head_dim", "hidden_size"}},
        {"model.layers.0.self_attn.k_proj.weight", {kv, d}, {"num_key_value_heads", "head_dim", "hidden_size"}},
        {"model.layers.0.mlp.gate_proj.weight", {config.intermediate_size, d}, {"intermediate_size", "hidden_size"}}};
    if (!config.tie_word_embeddings) shapes.push_back({"lm_head.weight", {vocab, d}, {"vocab_size", "hidden_size"}});
    check_config_against_checkpoint(directory, state, "", shapes, "num_hidden_layers", config.num_hidden_layers,
                                    "model.layers.");
    // Llama 2's .bin checkpoints carry each layer's (recomputed) rotary frequencies.
    auto load = io::LoadOptions().ignore(R"(\.rotary_emb\.inv_freq$)");
    if (config.tie_word_embeddings) load.may_be_missing({"lm_head.weight"});
    return build_pretrained<LlamaForCausalLMImpl>(std::move(config), state, load, directory, options);
  }

  /// Loads `directory`; see `from_config`.
  static std::shared_ptr<LlamaForCausalLMImpl> from_pretrained(const std::filesystem::path& directory,
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
  /// `model.layers.N`, `model.embed_tokens`, `model.norm`, `lm_head`; after attention: `model.layers.N.self_attn`.
  [[nodiscard]] LensLayout lens_layout() const override {
    LensLayout layout{{}, "model.embed_tokens", "model.norm", "lm_head", {}};
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      layout.blocks.push_back(fmt::format("model.layers.{}", i));
      layout.attention.push_back(fmt::format("model.layers.{}.self_attn", i));
    }
    return layout;
  }
  /// `model.norm`.
  torch::nn::AnyModule final_norm() override { return torch::nn::AnyModule(model->norm); }
  /// `lm_head`.
  torch::nn::AnyModule unembedding() override { return torch::nn::AnyModule(lm_head); }

  LlamaConfig config;         ///< Hyperparameters.
  LlamaModel model{nullptr};  ///< The body.
  Linear lm_head{nullptr};    ///< The unembedding [vocab, hidden], tied or not.
};
/// Holder of `LlamaForCausalLMImpl`, with `from_pretrained`.
using LlamaForCausalLM = PretrainedHolder<LlamaForCausalLMImpl>;

}  // namespace baukit::models
