/// @file gpt_neox.hpp
/// @brief GPT-NeoX (Pythia, GPT-NeoX-20B), with Hugging Face's module names (`gpt_neox.embed_in`,
/// `gpt_neox.layers.N.attention.query_key_value`, `mlp.dense_h_to_4h`, `gpt_neox.final_layer_norm`, `embed_out`),
/// every module traceable. Queries, keys and values come from one fused projection laid out per head
/// (`[heads, 3, head_size]`); rotary embedding turns the first `rotary_pct` of each head (rotate-half); with
/// `use_parallel_residual` (Pythia) attention and MLP read the block's input through their own LayerNorms and are
/// added together, otherwise the MLP reads the stream after attention.
///
/// @code
/// auto model = baukit::models::GPTNeoXForCausalLM::from_pretrained("pythia-6.9b");
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/checkpoint.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/models/config.hpp>
#include <baukit/models/layers.hpp>
#include <baukit/models/mlp.hpp>
#include <baukit/models/pretrained.hpp>
#include <baukit/models/rotary.hpp>
#include <baukit/models/save.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

namespace baukit::models {

/// GPT-NeoX's hyperparameters, with Hugging Face's names and defaults (`GPTNeoXConfig`: GPT-NeoX-20B's).
struct GPTNeoXConfig {
  int64_t vocab_size = 50432;              ///< Rows of the embedding and `embed_out` (padded past the tokenizer).
  int64_t hidden_size = 6144;              ///< Width of the residual stream.
  int64_t num_hidden_layers = 44;          ///< Number of blocks.
  int64_t num_attention_heads = 64;        ///< Attention heads per block.
  int64_t intermediate_size = 24576;       ///< Width inside the MLP.
  std::string hidden_act = "gelu";         ///< The MLP's activation.
  double rotary_pct = 0.25;                ///< Share of each head that turns (`partial_rotary_factor`).
  double rotary_emb_base = 10000.0;        ///< Rotary base (`rope_theta`).
  RopeScaling rope_scaling;                ///< Long-context frequency scaling.
  double attention_dropout = 0.0;          ///< On attention probabilities (training only).
  double hidden_dropout = 0.0;             ///< After the embedding, attention and MLP (training only).
  int64_t max_position_embeddings = 2048;  ///< Longest sequence.
  double layer_norm_eps = 1e-5;            ///< LayerNorm epsilon.
  bool use_parallel_residual = true;       ///< x + attn(ln1(x)) + mlp(ln2(x)); else sequential.
  bool attention_bias = true;              ///< Biases on `query_key_value` and `dense`.
  bool tie_word_embeddings = false;        ///< `embed_out` shares `embed_in`'s weight.
  nlohmann::json bos_token_id = 0;         ///< As config.json gives it.
  nlohmann::json eos_token_id = 2;         ///< As config.json gives it.
  torch::ScalarType weight_dtype = torch::kFloat32;  ///< How linear and embedding weights are kept in memory.

  /// Width of a head.
  [[nodiscard]] int64_t head_size() const { return hidden_size / num_attention_heads; }
  /// Rotated dimensions of a head: `int(head_size * rotary_pct)`, as Hugging Face truncates it.
  [[nodiscard]] int64_t rotary_ndims() const {
    return static_cast<int64_t>(static_cast<double>(head_size()) * rotary_pct);
  }

  /// The table of `config.json` keys and the members they set: reading, defaults, errors and `to_json` all go
  /// through it. `field(key, member, positive)`.
  template <class Config, class Field>
  static void for_each_field(Config& c, Field&& field) {
    field("vocab_size", c.vocab_size, true);
    field("hidden_size", c.hidden_size, true);
    field("num_hidden_layers", c.num_hidden_layers, true);
    field("num_attention_heads", c.num_attention_heads, true);
    field("intermediate_size", c.intermediate_size, true);
    field("hidden_act", c.hidden_act, false);
    field("rotary_pct", c.rotary_pct, true);
    field("rotary_emb_base", c.rotary_emb_base, true);
    field("attention_dropout", c.attention_dropout, false);
    field("hidden_dropout", c.hidden_dropout, false);
    field("max_position_embeddings", c.max_position_embeddings, true);
    field("layer_norm_eps", c.layer_norm_eps, true);
    field("use_parallel_residual", c.use_parallel_residual, false);
    field("attention_bias", c.attention_bias, false);
    field("tie_word_embeddings", c.tie_word_embeddings, false);
    field("bos_token_id", c.bos_token_id, false);
    field("eos_token_id", c.eos_token_id, false);
  }

  /// Reads a parsed `config.json`; unsupported settings fail by name. Newer configs' `rope_theta`,
  /// `partial_rotary_factor` and `rope_parameters` take precedence over `rotary_emb_base` and `rotary_pct`, as
  /// Hugging Face reads them.
  static GPTNeoXConfig from_config(const ConfigFile& file, const PretrainedOptions& options = {}) {
    GPTNeoXConfig c;
    if (const auto type = file.get<std::string>("model_type", "gpt_neox"); type != "gpt_neox")
      file.fail("model_type", fmt::format("is '{}', not 'gpt_neox'", type));
    for_each_field(c, ConfigReader{file});
    c.rotary_emb_base = file.get<double>("rope_theta", c.rotary_emb_base);
    c.rotary_pct = file.get<double>("partial_rotary_factor", c.rotary_pct);
    if (file.json.contains("rope_parameters") && file.json["rope_parameters"].is_object()) {
      const auto& p = file.json["rope_parameters"];
      if (p.contains("rope_theta") && p["rope_theta"].is_number()) c.rotary_emb_base = p["rope_theta"].get<double>();
      if (p.contains("partial_rotary_factor") && p["partial_rotary_factor"].is_number())
        c.rotary_pct = p["partial_rotary_factor"].get<double>();
    }
    c.rope_scaling = RopeScaling::read(file, c.max_position_embeddings);
    if (!ActivationImpl::supported().count(c.hidden_act))
      file.fail("hidden_act", fmt::format("'{}' is not supported", c.hidden_act));
    if (c.hidden_size % c.num_attention_heads != 0)
      file.fail("hidden_size",
                fmt::format("{} is not divisible by num_attention_heads {}", c.hidden_size, c.num_attention_heads));
    if (!(c.rotary_pct > 0 && c.rotary_pct <= 1) || c.rotary_ndims() < 2 || c.rotary_ndims() % 2 != 0)
      file.fail("rotary_pct", fmt::format("{} of the head size {} must give an even number of rotated dimensions",
                                          c.rotary_pct, c.head_size()));
    c.weight_dtype =
        weight_dtype_for(file.get<std::string>("torch_dtype", file.get<std::string>("dtype", "float32")), options);
    return c;
  }
  /// Reads `directory/config.json`; see `from_config`.
  static GPTNeoXConfig from_pretrained(const std::filesystem::path& directory, const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// The `config.json` Hugging Face writes for this configuration.
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j = {{"model_type", "gpt_neox"}, {"architectures", {"GPTNeoXForCausalLM"}}};
    for_each_field(*this, ConfigWriter{j});
    j["rope_scaling"] = rope_scaling.to_json();
    j["torch_dtype"] = dtype_name(weight_dtype);
    return j;
  }

  /// The rotary embedding: rotate-half over the first `rotary_ndims()` dimensions of each head.
  [[nodiscard]] RotaryOptions rotary() const {
    return RotaryOptions(head_size())
        .rotary_dim(rotary_ndims())
        .base(rotary_emb_base)
        .scaling(rope_scaling)
        .max_position_embeddings(max_position_embeddings);
  }

  /// What the `CausalLM` interface reports.
  [[nodiscard]] ModelShape shape() const {
    return {"gpt_neox", num_hidden_layers, max_position_embeddings, vocab_size};
  }
};

/// GPT-NeoX attention: one projection to queries, keys and values, laid out per head as `[heads, 3, head_size]`
/// (head h's query, key and value side by side), rotary on q and k, causal softmax in float32, `dense`.
class GPTNeoXAttentionImpl : public torch::nn::Cloneable<GPTNeoXAttentionImpl> {
 public:
  /// The attention of block `layer_idx`, turning queries and keys by `rotary`.
  GPTNeoXAttentionImpl(const GPTNeoXConfig& config, int64_t layer_idx, RotaryEmbedding rotary)
      : config_(config), layer_idx_(layer_idx), rotary_(std::move(rotary)) {
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto d = config_.hidden_size;
    const auto linear = [&](int64_t out) {
      return Linear(LinearOptions(d, out).bias(config_.attention_bias).dtype(config_.weight_dtype));
    };
    query_key_value = register_module("query_key_value", linear(3 * d));
    dense = register_module("dense", linear(d));
    attention_dropout = register_module("attention_dropout", TracedDropout(config_.attention_dropout));
  }
  /// `x` [batch, tokens, hidden]; `cos`, `sin` the rotary angles at each token; `mask` true where a query may not
  /// look; `cache` read and extended when given.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1), heads = config_.num_attention_heads,
                  head = config_.head_size();
    // [batch, heads, tokens, 3 * head_size], then q, k, v [batch, heads, tokens, head_size]
    const auto qkv = query_key_value(x).view({batch, tokens, heads, 3 * head}).transpose(1, 2);
    const auto parts = qkv.chunk(3, -1);
    const auto q = rotary_.apply(parts[0], cos, sin), new_k = rotary_.apply(parts[1], cos, sin);
    const auto [k, v] =
        cache ? cache->append(static_cast<std::size_t>(layer_idx_), new_k, parts[2]) : std::pair(new_k, parts[2]);
    auto scores = torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(-2, -1)) /
                  std::sqrt(static_cast<double>(head));
    if (mask.defined()) scores = scores.masked_fill(mask, std::numeric_limits<float>::lowest());
    const auto probs = attention_dropout(torch::softmax(scores, -1));
    const auto y = torch::matmul(probs, v.to(torch::kFloat32)).transpose(1, 2).reshape({batch, tokens, -1});
    return dense(y);
  }

  Linear query_key_value{nullptr};           ///< hidden -> 3 * hidden, per head [q, k, v].
  Linear dense{nullptr};                     ///< Heads -> residual.
  TracedDropout attention_dropout{nullptr};  ///< On attention probabilities.

 private:
  GPTNeoXConfig config_;
  int64_t layer_idx_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GPTNeoXAttentionImpl`.
BAUKIT_TRACED_MODULE(GPTNeoXAttention);

/// A GPT-NeoX block. Parallel (`use_parallel_residual`): x + attention(input_layernorm(x)) +
/// mlp(post_attention_layernorm(x)); sequential: h = x + attention(input_layernorm(x)), then h +
/// mlp(post_attention_layernorm(h)). Its output is the residual stream.
class GPTNeoXLayerImpl : public torch::nn::Cloneable<GPTNeoXLayerImpl> {
 public:
  /// Block `layer_idx` of `config`, turning queries and keys by `rotary`.
  GPTNeoXLayerImpl(const GPTNeoXConfig& config, int64_t layer_idx, RotaryEmbedding rotary)
      : config_(config), layer_idx_(layer_idx), rotary_(std::move(rotary)) {
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto& c = config_;
    const auto norm = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps);
    input_layernorm = register_module("input_layernorm", TracedLayerNorm(norm));
    post_attention_layernorm = register_module("post_attention_layernorm", TracedLayerNorm(norm));
    post_attention_dropout = register_module("post_attention_dropout", TracedDropout(c.hidden_dropout));
    post_mlp_dropout = register_module("post_mlp_dropout", TracedDropout(c.hidden_dropout));
    attention = register_module("attention", GPTNeoXAttention(c, layer_idx_, rotary_));
    mlp = register_module("mlp", MLP(MLPOptions(c.hidden_size, c.intermediate_size)
                                         .activation(c.hidden_act)
                                         .dtype(c.weight_dtype)
                                         .names("dense_h_to_4h", "act", "dense_4h_to_h")));
  }
  /// The block; arguments as for `GPTNeoXAttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const auto attended = post_attention_dropout(attention(input_layernorm(x), cos, sin, mask, cache));
    if (config_.use_parallel_residual) return x + attended + post_mlp_dropout(mlp(post_attention_layernorm(x)));
    const auto h = x + attended;
    return h + post_mlp_dropout(mlp(post_attention_layernorm(h)));
  }

  TracedLayerNorm input_layernorm{nullptr};           ///< Before attention.
  TracedLayerNorm post_attention_layernorm{nullptr};  ///< Before the MLP (of x when parallel, else of x + attention).
  TracedDropout post_attention_dropout{nullptr};      ///< After attention.
  TracedDropout post_mlp_dropout{nullptr};            ///< After the MLP.
  GPTNeoXAttention attention{nullptr};                ///< Self-attention.
  MLP mlp{nullptr};                                   ///< The MLP (`dense_h_to_4h`, `act`, `dense_4h_to_h`).

 private:
  GPTNeoXConfig config_;
  int64_t layer_idx_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GPTNeoXLayerImpl`.
BAUKIT_TRACED_MODULE(GPTNeoXLayer);

/// The body: `embed_in`, `emb_dropout`, the layers and `final_layer_norm`; rotary angles computed once per forward.
class GPTNeoXModelImpl : public torch::nn::Cloneable<GPTNeoXModelImpl> {
 public:
  /// The body for `config`.
  explicit GPTNeoXModelImpl(const GPTNeoXConfig& config) : config_(config), rotary_(config.rotary()) { reset(); }
  /// Registers the submodules (the embedding uninitialised, kept as `weight_dtype`).
  void reset() override {
    const auto& c = config_;
    embed_in = register_module(
        "embed_in",
        TracedEmbedding(torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size)
                            ._weight(torch::empty({c.vocab_size, c.hidden_size}, torch::dtype(c.weight_dtype)))));
    emb_dropout = register_module("emb_dropout", TracedDropout(c.hidden_dropout));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(GPTNeoXLayer(c, i, rotary_));
    final_layer_norm = register_module(
        "final_layer_norm", TracedLayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  }
  /// Hidden states after `final_layer_norm`, float32; arguments as for `CausalLM::forward`.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) {
    const auto [positions, mask] = causal_inputs(input_ids, attention_mask, cache ? cache->length() : 0,
                                                 config_.max_position_embeddings, "gpt_neox");
    check_input_ids(input_ids, config_.vocab_size, "gpt_neox");
    const auto [cos, sin] = rotary_.angles(positions);
    auto x = emb_dropout(embed_in(input_ids).to(torch::kFloat32));
    for (const auto& layer : *layers) x = layer->as<GPTNeoXLayer::Impl>()->forward(x, cos, sin, mask, cache);
    return final_layer_norm(x);
  }

  TracedEmbedding embed_in{nullptr};          ///< Token embedding [vocab, hidden].
  TracedDropout emb_dropout{nullptr};         ///< After the embedding; its output is the stream before layer 0.
  torch::nn::ModuleList layers{nullptr};      ///< The blocks, `GPTNeoXLayer`.
  TracedLayerNorm final_layer_norm{nullptr};  ///< The final LayerNorm.

 private:
  GPTNeoXConfig config_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GPTNeoXModelImpl`.
BAUKIT_TRACED_MODULE(GPTNeoXModel);

/// GPT-NeoX with its head, as Hugging Face's `GPTNeoXForCausalLM`.
class GPTNeoXForCausalLMImpl : public CausalLMModule<GPTNeoXForCausalLMImpl> {
 public:
  /// An uninitialised model for `config`.
  explicit GPTNeoXForCausalLMImpl(GPTNeoXConfig config) : config(std::move(config)) { reset(); }
  /// Registers the submodules; `embed_out` shares `embed_in`'s weight when tied.
  void reset() override {
    gpt_neox = register_module("gpt_neox", GPTNeoXModel(config));
    embed_out = register_module(
        "embed_out",
        Linear(LinearOptions(config.hidden_size, config.vocab_size)
                   .dtype(config.weight_dtype)
                   .tied_weight(config.tie_word_embeddings ? gpt_neox->embed_in->weight : torch::Tensor())));
  }
  /// Logits [batch, tokens, vocab], float32.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) override {
    return embed_out(gpt_neox(input_ids, attention_mask, cache));
  }

  /// Loads the checkpoint of a parsed `config.json` (from its directory) as `GPTNeoXForCausalLM.from_pretrained`
  /// does, in eval mode; F16/BF16 weights stay mapped unless `options.weight_dtype()` says otherwise.
  static std::shared_ptr<GPTNeoXForCausalLMImpl> from_config(const ConfigFile& file,
                                                             const PretrainedOptions& options = {}) {
    const auto directory = file.path.parent_path();
    auto config = GPTNeoXConfig::from_config(file, options);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.hidden_size, vocab = config.vocab_size;
    std::vector<ExpectedShape> shapes = {
        {"gpt_neox.embed_in.weight", {vocab, d}, {"vocab_size", "hidden_size"}},
        {"gpt_neox.layers.0.attention.query_key_value.weight", {3 * d, d}, {"hidden_size"}},
        {"gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
         {config.intermediate_size, d},
         {"intermediate_size", "hidden_size"}}};
    if (!config.tie_word_embeddings) shapes.push_back({"embed_out.weight", {vocab, d}, {"vocab_size", "hidden_size"}});
    check_config_against_checkpoint(directory, state, "", shapes, "num_hidden_layers", config.num_hidden_layers,
                                    "gpt_neox.layers.");
    // Older checkpoints carry each layer's causal-mask buffers and rotary frequencies.
    auto load = io::LoadOptions().ignore(R"(\.attention\.(masked_)?bias$|\.rotary_emb\.inv_freq$)");
    if (config.tie_word_embeddings) load.may_be_missing({"embed_out.weight"});
    return build_pretrained<GPTNeoXForCausalLMImpl>(std::move(config), state, load, directory, options);
  }
  /// Loads `directory`; see `from_config`.
  static std::shared_ptr<GPTNeoXForCausalLMImpl> from_pretrained(const std::filesystem::path& directory,
                                                                 const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// Writes `config.json` and `model.safetensors`, every tensor stored as `weight_dtype` (a tied `embed_out` is
  /// not stored); LayerNorms are read back as float32.
  void save_pretrained(const std::filesystem::path& directory) {
    save_checkpoint(*this, config.to_json(), directory, config.weight_dtype, tied_names());
  }
  /// The tensors a tied checkpoint does not store.
  [[nodiscard]] std::set<std::string> tied_names() const {
    return config.tie_word_embeddings ? std::set<std::string>{"embed_out.weight"} : std::set<std::string>{};
  }

  // CausalLM
  /// `gpt_neox.layers.N`, `gpt_neox.emb_dropout`, `gpt_neox.final_layer_norm`, `embed_out`; after attention
  /// (sequential blocks only): `gpt_neox.layers.N.post_attention_dropout`. Parallel blocks (Pythia) have no point
  /// after attention alone: attention and MLP both read the block's input.
  [[nodiscard]] LensLayout lens_layout() const override {
    LensLayout layout{{}, "gpt_neox.emb_dropout", "gpt_neox.final_layer_norm", "embed_out", {}};
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      layout.blocks.push_back(fmt::format("gpt_neox.layers.{}", i));
      if (!config.use_parallel_residual)
        layout.attention.push_back(fmt::format("gpt_neox.layers.{}.post_attention_dropout", i));
    }
    return layout;
  }
  /// `gpt_neox.final_layer_norm`.
  torch::nn::AnyModule final_norm() override { return torch::nn::AnyModule(gpt_neox->final_layer_norm); }
  /// `embed_out`.
  torch::nn::AnyModule unembedding() override { return torch::nn::AnyModule(embed_out); }

  GPTNeoXConfig config;            ///< Hyperparameters.
  GPTNeoXModel gpt_neox{nullptr};  ///< The body.
  Linear embed_out{nullptr};       ///< The unembedding [vocab, hidden], untied in Pythia.
};
/// Holder of `GPTNeoXForCausalLMImpl`, with `from_pretrained`.
using GPTNeoXForCausalLM = PretrainedHolder<GPTNeoXForCausalLMImpl>;

}  // namespace baukit::models
