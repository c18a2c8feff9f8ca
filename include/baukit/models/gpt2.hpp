/// @file gpt2.hpp
/// @brief GPT-2, with Hugging Face's module names (`transformer.h.N.attn.c_attn`, `lm_head`, ...), every module
/// traceable, loading the same checkpoint directories as `GPT2LMHeadModel.from_pretrained`.
///
/// @code
/// auto model = baukit::models::GPT2LMHeadModel::from_pretrained("gpt2-xl");
/// torch::Tensor logits = model->forward(ids, {}, nullptr);   // [batch, tokens, vocab]
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/io/checkpoint.hpp>
#include <baukit/io/safetensors.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/models/config.hpp>
#include <baukit/models/layers.hpp>
#include <baukit/models/pretrained.hpp>
#include <baukit/models/save.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

namespace baukit::models {

/// GPT-2's hyperparameters, with Hugging Face's names and defaults.
struct GPT2Config {
  int64_t vocab_size = 50257;                    ///< Vocabulary size.
  int64_t n_positions = 1024;                    ///< Longest sequence.
  int64_t n_embd = 768;                          ///< Width of the residual stream.
  int64_t n_layer = 12;                          ///< Number of blocks.
  int64_t n_head = 12;                           ///< Attention heads per block.
  int64_t n_inner = 0;                           ///< MLP width; 0 means 4 * n_embd.
  std::string activation_function = "gelu_new";  ///< MLP activation.
  double layer_norm_epsilon = 1e-5;              ///< LayerNorm epsilon.
  double resid_pdrop = 0.1;                      ///< Dropout after attention and MLP (training only).
  double embd_pdrop = 0.1;                       ///< Dropout after the embeddings (training only).
  double attn_pdrop = 0.1;                       ///< Dropout on attention probabilities (training only).
  bool scale_attn_weights = true;                ///< Scale scores by 1/sqrt(head_dim).
  bool scale_attn_by_inverse_layer_idx = false;  ///< Also scale scores by 1/(layer index + 1).
  bool tie_word_embeddings = true;               ///< `lm_head` shares `wte`'s weight.

  /// The MLP width.
  [[nodiscard]] int64_t inner() const { return n_inner > 0 ? n_inner : 4 * n_embd; }

  /// The table of `config.json` keys and the members they set: reading, defaults, errors and `to_json` all go
  /// through it. `field(key, member, positive)`.
  template <class Config, class Field>
  static void for_each_field(Config& c, Field&& field) {
    field("vocab_size", c.vocab_size, true);
    field("n_positions", c.n_positions, true);
    field("n_embd", c.n_embd, true);
    field("n_layer", c.n_layer, true);
    field("n_head", c.n_head, true);
    field("n_inner", c.n_inner, false);
    field("activation_function", c.activation_function, false);
    field("layer_norm_epsilon", c.layer_norm_epsilon, false);
    field("resid_pdrop", c.resid_pdrop, false);
    field("embd_pdrop", c.embd_pdrop, false);
    field("attn_pdrop", c.attn_pdrop, false);
    field("scale_attn_weights", c.scale_attn_weights, false);
    field("scale_attn_by_inverse_layer_idx", c.scale_attn_by_inverse_layer_idx, false);
    field("tie_word_embeddings", c.tie_word_embeddings, false);
  }

  /// Reads a parsed `config.json`, with GPT-2's defaults for missing keys; unsupported settings fail by name.
  static GPT2Config from_config(const ConfigFile& file) {
    GPT2Config c;
    if (const auto type = file.get<std::string>("model_type", "gpt2"); type != "gpt2")
      file.fail("model_type", fmt::format("is '{}', not 'gpt2'", type));
    for_each_field(c, ConfigReader{file});
    if (!ActivationImpl::supported().count(c.activation_function))
      file.fail("activation_function", fmt::format("'{}' is not supported", c.activation_function));
    if (file.get<bool>("add_cross_attention", false))
      file.fail("add_cross_attention", "is true: cross-attention is not supported");
    if (c.n_embd % c.n_head != 0)
      file.fail("n_embd", fmt::format("{} is not divisible by n_head {}", c.n_embd, c.n_head));
    return c;
  }
  /// Reads `directory/config.json`; see `from_config`.
  static GPT2Config from_pretrained(const std::filesystem::path& directory) {
    return from_config(ConfigFile::read(directory));
  }

  /// The `config.json` Hugging Face writes for this configuration.
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}};
    for_each_field(*this, ConfigWriter{j});
    j["n_ctx"] = n_positions;
    if (n_inner == 0) j["n_inner"] = nullptr;  // Hugging Face: null means 4 * n_embd
    j["bos_token_id"] = j["eos_token_id"] = 50256;
    return j;
  }

  /// What the `CausalLM` interface reports.
  [[nodiscard]] ModelShape shape() const { return {"gpt2", n_layer, n_positions, vocab_size}; }
};

/// Causal self-attention: `c_attn` makes q, k, v; scores scaled, masked, softmaxed; `c_proj` mixes heads.
class GPT2AttentionImpl : public torch::nn::Cloneable<GPT2AttentionImpl> {
 public:
  /// The attention of block `layer_idx`.
  GPT2AttentionImpl(const GPT2Config& config, int64_t layer_idx) : config_(config), layer_idx_(layer_idx) { reset(); }
  /// Registers the submodules.
  void reset() override {
    c_attn = register_module("c_attn", Conv1D(config_.n_embd, 3 * config_.n_embd));
    c_proj = register_module("c_proj", Conv1D(config_.n_embd, config_.n_embd));
    attn_dropout = register_module("attn_dropout", TracedDropout(config_.attn_pdrop));
    resid_dropout = register_module("resid_dropout", TracedDropout(config_.resid_pdrop));
  }

  /// `x` [batch, tokens, n_embd]; `mask` [batch or 1, 1, tokens, past + tokens], true where a query may not look
  /// (undefined: nothing masked); `cache` extended with this call's keys and values when given.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2), heads = config_.n_head;
    auto split_heads = [&](const torch::Tensor& t) {
      return t.view({batch, tokens, heads, width / heads}).transpose(1, 2);
    };
    const auto qkv = c_attn(x).split(width, 2);  // 3 x [batch, tokens, width]
    const auto q = split_heads(qkv[0]);          // [batch, heads, tokens, hd]
    const auto [k, v] = cache ? cache->append(static_cast<std::size_t>(layer_idx_), split_heads(qkv[1]),
                                              split_heads(qkv[2]))  // [batch, heads, past + tokens, hd]
                              : std::pair(split_heads(qkv[1]), split_heads(qkv[2]));
    double scale = config_.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(width / heads)) : 1.0;
    if (config_.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(layer_idx_ + 1);
    auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // [batch, heads, tokens, past + tokens]
    // The most negative float rather than -inf: a fully masked row (left padding) stays finite.
    if (mask.defined()) scores = scores.masked_fill(mask, std::numeric_limits<float>::lowest());
    const auto probs = attn_dropout(torch::softmax(scores, -1));
    const auto y = torch::matmul(probs, v).transpose(1, 2).reshape({batch, tokens, width});  // heads side by side
    return resid_dropout(c_proj(y));
  }

  Conv1D c_attn{nullptr};                ///< x -> q, k, v
  Conv1D c_proj{nullptr};                ///< heads -> residual
  TracedDropout attn_dropout{nullptr};   ///< On attention probabilities.
  TracedDropout resid_dropout{nullptr};  ///< On the output.

 private:
  GPT2Config config_;
  int64_t layer_idx_;
};
/// Traceable holder of `GPT2AttentionImpl`.
BAUKIT_TRACED_MODULE(GPT2Attention);

/// The MLP: `c_fc`, activation, `c_proj`.
class GPT2MLPImpl : public torch::nn::Cloneable<GPT2MLPImpl> {
 public:
  /// The MLP for `config`.
  explicit GPT2MLPImpl(const GPT2Config& config) : config_(config) { reset(); }
  /// Registers the submodules.
  void reset() override {
    c_fc = register_module("c_fc", Conv1D(config_.n_embd, config_.inner()));
    act = register_module("act", Activation(config_.activation_function));
    c_proj = register_module("c_proj", Conv1D(config_.inner(), config_.n_embd));
    dropout = register_module("dropout", TracedDropout(config_.resid_pdrop));
  }
  /// dropout(c_proj(act(c_fc(x)))).
  torch::Tensor forward(const torch::Tensor& x) { return dropout(c_proj(act(c_fc(x)))); }

  Conv1D c_fc{nullptr};            ///< n_embd -> inner
  Activation act{nullptr};         ///< The activation.
  Conv1D c_proj{nullptr};          ///< inner -> n_embd
  TracedDropout dropout{nullptr};  ///< On the output.

 private:
  GPT2Config config_;
};
/// Traceable holder of `GPT2MLPImpl`.
BAUKIT_TRACED_MODULE(GPT2MLP);

/// A transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). Its output is the residual stream.
class GPT2BlockImpl : public torch::nn::Cloneable<GPT2BlockImpl> {
 public:
  /// Block `layer_idx` of `config`.
  GPT2BlockImpl(const GPT2Config& config, int64_t layer_idx) : config_(config), layer_idx_(layer_idx) { reset(); }
  /// Registers the submodules.
  void reset() override {
    const auto norm = torch::nn::LayerNormOptions({config_.n_embd}).eps(config_.layer_norm_epsilon);
    ln_1 = register_module("ln_1", TracedLayerNorm(norm));
    attn = register_module("attn", GPT2Attention(config_, layer_idx_));
    ln_2 = register_module("ln_2", TracedLayerNorm(norm));
    mlp = register_module("mlp", GPT2MLP(config_));
  }
  /// The block; `mask` and `cache` as for `GPT2AttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, KVCache* cache) {
    auto h = x + attn(ln_1(x), mask, cache);
    return h + mlp(ln_2(h));
  }

  TracedLayerNorm ln_1{nullptr};  ///< Before attention.
  GPT2Attention attn{nullptr};    ///< Self-attention.
  TracedLayerNorm ln_2{nullptr};  ///< Before the MLP.
  GPT2MLP mlp{nullptr};           ///< The MLP.

 private:
  GPT2Config config_;
  int64_t layer_idx_;
};
/// Traceable holder of `GPT2BlockImpl`.
BAUKIT_TRACED_MODULE(GPT2Block);

/// The body: token and position embeddings, dropout, the blocks, and the final LayerNorm.
class GPT2ModelImpl : public torch::nn::Cloneable<GPT2ModelImpl> {
 public:
  /// The body for `config`.
  explicit GPT2ModelImpl(const GPT2Config& config) : config_(config) { reset(); }
  /// Registers the submodules (embeddings uninitialised).
  void reset() override {
    auto embedding = [](int64_t rows, int64_t width) {
      return torch::nn::EmbeddingOptions(rows, width)._weight(torch::empty({rows, width}));
    };
    wte = register_module("wte", TracedEmbedding(embedding(config_.vocab_size, config_.n_embd)));
    wpe = register_module("wpe", TracedEmbedding(embedding(config_.n_positions, config_.n_embd)));
    drop = register_module("drop", TracedDropout(config_.embd_pdrop));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.n_layer; ++i) h->push_back(GPT2Block(config_, i));
    ln_f = register_module(
        "ln_f", TracedLayerNorm(torch::nn::LayerNormOptions({config_.n_embd}).eps(config_.layer_norm_epsilon)));
  }

  /// Hidden states after `ln_f` [batch, tokens, n_embd]; arguments as for `CausalLM::forward`.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) {
    const auto [positions, mask] =
        causal_inputs(input_ids, attention_mask, cache ? cache->length() : 0, config_.n_positions, "GPT-2");
    check_input_ids(input_ids, config_.vocab_size, "GPT-2");
    auto x = drop(wte(input_ids) + wpe(positions));
    for (const auto& block : *h) x = block->as<GPT2Block::Impl>()->forward(x, mask, cache);
    return ln_f(x);
  }

  TracedEmbedding wte{nullptr};      ///< Token embedding [vocab, n_embd].
  TracedEmbedding wpe{nullptr};      ///< Position embedding [n_positions, n_embd].
  TracedDropout drop{nullptr};       ///< After the embeddings; its output is the stream before block 0.
  torch::nn::ModuleList h{nullptr};  ///< The blocks, `GPT2Block`.
  TracedLayerNorm ln_f{nullptr};     ///< The final LayerNorm.

 private:
  GPT2Config config_;
};
/// Traceable holder of `GPT2ModelImpl`.
BAUKIT_TRACED_MODULE(GPT2Model);

/// GPT-2 with its language-model head, as Hugging Face's `GPT2LMHeadModel`.
class GPT2LMHeadModelImpl : public CausalLMModule<GPT2LMHeadModelImpl> {
 public:
  /// An uninitialised model for `config` (load a checkpoint, or call `init_weights`).
  explicit GPT2LMHeadModelImpl(GPT2Config config) : config(std::move(config)) { reset(); }
  /// Registers the submodules; `lm_head` shares `wte`'s weight when tied.
  void reset() override {
    transformer = register_module("transformer", GPT2Model(config));
    lm_head = register_module(
        "lm_head", Linear(LinearOptions(config.n_embd, config.vocab_size)
                              .tied_weight(config.tie_word_embeddings ? transformer->wte->weight : torch::Tensor())));
  }

  /// Logits [batch, tokens, vocab].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) override {
    return lm_head(transformer(input_ids, attention_mask, cache));
  }

  /// Loads the checkpoint of a parsed `config.json` (from its directory) as `GPT2LMHeadModel.from_pretrained`
  /// does, in eval mode. Weights stay float32: a `weight_dtype` other than float32 is refused.
  static std::shared_ptr<GPT2LMHeadModelImpl> from_config(const ConfigFile& file,
                                                          const PretrainedOptions& options = {}) {
    if (options.weight_dtype() && *options.weight_dtype() != torch::kFloat32)
      throw std::invalid_argument(
          fmt::format("gpt2: PretrainedOptions::weight_dtype {} is not supported for this "
                      "family (its Conv1D weights are float32)",
                      dtype_name(*options.weight_dtype())));
    const auto directory = file.path.parent_path();
    auto config = GPT2Config::from_config(file);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.n_embd;
    check_config_against_checkpoint(directory, state, "transformer.",
                                    {{"wte.weight", {config.vocab_size, d}, {"vocab_size", "n_embd"}},
                                     {"wpe.weight", {config.n_positions, d}, {"n_positions", "n_embd"}},
                                     {"h.0.attn.c_attn.weight", {d, 3 * d}, {"n_embd"}},
                                     {"h.0.mlp.c_fc.weight", {d, config.inner()}, {"n_embd", "n_inner"}}},
                                    "n_layer", config.n_layer, "h.");
    auto load = io::LoadOptions().optional_prefix("transformer.").ignore(R"(\.attn\.(masked_)?bias$)");
    if (config.tie_word_embeddings) load.may_be_missing({"lm_head.weight"});
    return build_pretrained<GPT2LMHeadModelImpl>(std::move(config), state, load, directory, options);
  }
  /// Loads `directory` (`config.json` and the weights); see `from_config`.
  static std::shared_ptr<GPT2LMHeadModelImpl> from_pretrained(const std::filesystem::path& directory,
                                                              const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// Writes `config.json` and `model.safetensors` (names with the `transformer.` prefix; a tied `lm_head`
  /// is not stored), stored as `dtype`.
  void save_pretrained(const std::filesystem::path& directory, torch::ScalarType dtype = torch::kFloat32) {
    save_checkpoint(*this, config.to_json(), directory, dtype,
                    config.tie_word_embeddings ? std::set<std::string>{"lm_head.weight"} : std::set<std::string>{});
  }

  /// GPT-2's initialisation (see `init_gpt2_style`), with `c_proj` as the residual projections.
  void init_weights(uint64_t seed) {
    init_gpt2_style(*this, seed, config.n_layer, {"c_proj.weight"},
                    config.tie_word_embeddings ? std::set<std::string>{"lm_head.weight"} : std::set<std::string>{});
  }

  // CausalLM
  /// `transformer.h.N`, `transformer.drop`, `transformer.ln_f`, `lm_head`, `transformer.h.N.attn`.
  [[nodiscard]] LensLayout lens_layout() const override {
    LensLayout layout{{}, "transformer.drop", "transformer.ln_f", "lm_head", {}};
    for (int64_t i = 0; i < config.n_layer; ++i) {
      layout.blocks.push_back(fmt::format("transformer.h.{}", i));
      layout.attention.push_back(fmt::format("transformer.h.{}.attn", i));
    }
    return layout;
  }
  /// `transformer.ln_f`.
  torch::nn::AnyModule final_norm() override { return torch::nn::AnyModule(transformer->ln_f); }
  /// `lm_head`.
  torch::nn::AnyModule unembedding() override { return torch::nn::AnyModule(lm_head); }

  GPT2Config config;               ///< Hyperparameters.
  GPT2Model transformer{nullptr};  ///< The body.
  Linear lm_head{nullptr};         ///< The unembedding [vocab, n_embd].
};
/// Holder of `GPT2LMHeadModelImpl`, with `from_pretrained`.
using GPT2LMHeadModel = PretrainedHolder<GPT2LMHeadModelImpl>;

}  // namespace baukit::models
