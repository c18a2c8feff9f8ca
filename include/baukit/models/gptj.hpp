/// @file gptj.hpp
/// @brief GPT-J, with Hugging Face's module names (`transformer.h.N.attn.q_proj`, `mlp.fc_in`, `lm_head`, ...),
/// every module traceable. Attention and MLP read the same LayerNorm in parallel; rotary position embedding
/// turns adjacent pairs (2i, 2i+1) of the first `rotary_dim` dimensions of each head (`RotaryLayout::adjacent`).
/// Weights stored as F16 stay F16 (memory-mapped) and are upcast per layer at use, so GPT-J-6B's float16 checkpoint
/// runs in 24 GB.
///
/// @code
/// auto model = baukit::models::GPTJForCausalLM::from_pretrained("gpt-j-6B-float16");
/// @endcode
#pragma once

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

/// GPT-J's hyperparameters, with Hugging Face's names and defaults (GPT-J-6B's).
struct GPTJConfig {
  int64_t vocab_size = 50400;                        ///< Vocabulary size (GPT-2's 50257 plus added tokens).
  int64_t n_positions = 2048;                        ///< Longest sequence.
  int64_t n_embd = 4096;                             ///< Width of the residual stream.
  int64_t n_layer = 28;                              ///< Number of blocks.
  int64_t n_head = 16;                               ///< Attention heads per block.
  int64_t rotary_dim = 64;                           ///< Dimensions of each head that are rotated.
  int64_t n_inner = 0;                               ///< MLP width; 0 means 4 * n_embd.
  std::string activation_function = "gelu_new";      ///< MLP activation.
  double layer_norm_epsilon = 1e-5;                  ///< LayerNorm epsilon.
  double resid_pdrop = 0.0;                          ///< Dropout after attention and MLP (training only).
  double embd_pdrop = 0.0;                           ///< Dropout after the embedding (training only).
  double attn_pdrop = 0.0;                           ///< Dropout on attention probabilities (training only).
  torch::ScalarType weight_dtype = torch::kFloat32;  ///< How linear and embedding weights are kept in memory.

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
    field("rotary_dim", c.rotary_dim, true);
    field("n_inner", c.n_inner, false);
    field("activation_function", c.activation_function, false);
    field("layer_norm_epsilon", c.layer_norm_epsilon, false);
    field("resid_pdrop", c.resid_pdrop, false);
    field("embd_pdrop", c.embd_pdrop, false);
    field("attn_pdrop", c.attn_pdrop, false);
  }

  /// Reads a parsed `config.json`; unsupported settings fail by name. Weights are kept as `torch_dtype` when that
  /// is float16 or bfloat16 (upcast at use), else float32, unless `options` say otherwise.
  static GPTJConfig from_config(const ConfigFile& file, const PretrainedOptions& options = {}) {
    GPTJConfig c;
    if (const auto type = file.get<std::string>("model_type", "gptj"); type != "gptj")
      file.fail("model_type", fmt::format("is '{}', not 'gptj'", type));
    for_each_field(c, ConfigReader{file});
    if (!ActivationImpl::supported().count(c.activation_function))
      file.fail("activation_function", fmt::format("'{}' is not supported", c.activation_function));
    if (!file.get<bool>("rotary", true))
      file.fail("rotary", "is false: GPT-J without rotary embedding is not supported");
    if (file.get<bool>("tie_word_embeddings", false))
      file.fail("tie_word_embeddings", "is true: GPT-J's lm_head is untied");
    if (c.n_embd % c.n_head != 0)
      file.fail("n_embd", fmt::format("{} is not divisible by n_head {}", c.n_embd, c.n_head));
    if (c.rotary_dim > c.n_embd / c.n_head || c.rotary_dim % 2 != 0)
      file.fail("rotary_dim",
                fmt::format("{} must be even and at most the head size {}", c.rotary_dim, c.n_embd / c.n_head));
    c.weight_dtype = weight_dtype_for(file.get<std::string>("torch_dtype", "float32"), options);
    return c;
  }
  /// Reads `directory/config.json`; see `from_config`.
  static GPTJConfig from_pretrained(const std::filesystem::path& directory, const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// The `config.json` Hugging Face writes for this configuration.
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j = {{"model_type", "gptj"}, {"architectures", {"GPTJForCausalLM"}}};
    for_each_field(*this, ConfigWriter{j});
    if (n_inner == 0) j["n_inner"] = nullptr;  // Hugging Face: null means 4 * n_embd
    j.update({{"rotary", true},
              {"tie_word_embeddings", false},
              {"torch_dtype", dtype_name(weight_dtype)},
              {"bos_token_id", 50256},
              {"eos_token_id", 50256}});
    return j;
  }

  /// GPT-J's rotary embedding: adjacent pairs of the first `rotary_dim` dimensions of each head, base 10000.
  [[nodiscard]] RotaryOptions rotary() const {
    return RotaryOptions(n_embd / n_head)
        .rotary_dim(rotary_dim)
        .layout(RotaryLayout::adjacent)
        .max_position_embeddings(n_positions);
  }

  /// What the `CausalLM` interface reports.
  [[nodiscard]] ModelShape shape() const { return {"gptj", n_layer, n_positions, vocab_size}; }
};

/// GPT-J attention: q, k, v projections without bias, rotary on q and k, causal softmax in float32, `out_proj`.
class GPTJAttentionImpl : public torch::nn::Cloneable<GPTJAttentionImpl> {
 public:
  /// The attention of block `layer_idx`.
  GPTJAttentionImpl(const GPTJConfig& config, int64_t layer_idx)
      : config_(config), layer_idx_(layer_idx), rotary_(config.rotary()) {
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto d = config_.n_embd;
    q_proj = register_module("q_proj", Linear(LinearOptions(d, d).dtype(config_.weight_dtype)));
    k_proj = register_module("k_proj", Linear(LinearOptions(d, d).dtype(config_.weight_dtype)));
    v_proj = register_module("v_proj", Linear(LinearOptions(d, d).dtype(config_.weight_dtype)));
    out_proj = register_module("out_proj", Linear(LinearOptions(d, d).dtype(config_.weight_dtype)));
    attn_dropout = register_module("attn_dropout", TracedDropout(config_.attn_pdrop));
    resid_dropout = register_module("resid_dropout", TracedDropout(config_.resid_pdrop));
  }
  /// `x` [batch, tokens, n_embd]; `cos`, `sin` the rotary angles at each token (`RotaryEmbedding::angles`);
  /// `mask` true where a query may not look.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2), heads = config_.n_head,
                  head_dim = width / heads;
    auto split = [&](const torch::Tensor& t) { return t.view({batch, tokens, heads, head_dim}).transpose(1, 2); };
    // [batch, heads, tokens, head_dim]; the first rotary_dim dimensions of each head of q and k turn with position
    const auto q = rotary_.apply(split(q_proj(x)), cos, sin), new_k = rotary_.apply(split(k_proj(x)), cos, sin);
    const auto new_v = split(v_proj(x));
    const auto [k, v] =
        cache ? cache->append(static_cast<std::size_t>(layer_idx_), new_k, new_v) : std::pair(new_k, new_v);
    // [batch, heads, tokens, past + tokens], in float32 as Hugging Face computes it
    auto scores = torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(-2, -1));
    if (mask.defined()) scores = scores.masked_fill(mask, std::numeric_limits<float>::lowest());
    scores = scores / std::sqrt(static_cast<double>(head_dim));
    const auto probs = attn_dropout(torch::softmax(scores, -1).to(v.scalar_type()));
    const auto y = torch::matmul(probs, v).transpose(1, 2).reshape({batch, tokens, width});  // heads side by side
    return resid_dropout(out_proj(y));
  }

  Linear q_proj{nullptr};                ///< Queries.
  Linear k_proj{nullptr};                ///< Keys.
  Linear v_proj{nullptr};                ///< Values.
  Linear out_proj{nullptr};              ///< Heads -> residual.
  TracedDropout attn_dropout{nullptr};   ///< On attention probabilities.
  TracedDropout resid_dropout{nullptr};  ///< On the output.

 private:
  GPTJConfig config_;
  int64_t layer_idx_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GPTJAttentionImpl`.
BAUKIT_TRACED_MODULE(GPTJAttention);

/// GPT-J's MLP: the kit's plain `MLP` under GPT-J's names (`fc_in`, `act`, `fc_out`, `dropout`).
using GPTJMLP = MLP;

/// A GPT-J block: x + attn(ln_1(x)) + mlp(ln_1(x)). Its output is the residual stream.
class GPTJBlockImpl : public torch::nn::Cloneable<GPTJBlockImpl> {
 public:
  /// Block `layer_idx` of `config`.
  GPTJBlockImpl(const GPTJConfig& config, int64_t layer_idx) : config_(config), layer_idx_(layer_idx) { reset(); }
  /// Registers the submodules.
  void reset() override {
    ln_1 = register_module(
        "ln_1", TracedLayerNorm(torch::nn::LayerNormOptions({config_.n_embd}).eps(config_.layer_norm_epsilon)));
    attn = register_module("attn", GPTJAttention(config_, layer_idx_));
    mlp = register_module("mlp", MLP(MLPOptions(config_.n_embd, config_.inner())
                                         .activation(config_.activation_function)
                                         .dtype(config_.weight_dtype)
                                         .dropout(config_.resid_pdrop)));
  }
  /// The block; arguments as for `GPTJAttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const auto h = ln_1(x);
    return x + attn(h, cos, sin, mask, cache) + mlp(h);
  }

  TracedLayerNorm ln_1{nullptr};  ///< Shared by attention and MLP.
  GPTJAttention attn{nullptr};    ///< Self-attention.
  MLP mlp{nullptr};               ///< The MLP (`fc_in`, `act`, `fc_out`).

 private:
  GPTJConfig config_;
  int64_t layer_idx_;
};
/// Traceable holder of `GPTJBlockImpl`.
BAUKIT_TRACED_MODULE(GPTJBlock);

/// The body: token embedding, dropout, the blocks, and the final LayerNorm; rotary angles computed once per forward.
class GPTJModelImpl : public torch::nn::Cloneable<GPTJModelImpl> {
 public:
  /// The body for `config`.
  explicit GPTJModelImpl(const GPTJConfig& config) : config_(config), rotary_(config.rotary()) { reset(); }
  /// Registers the submodules (the embedding uninitialised, kept as `weight_dtype`).
  void reset() override {
    wte = register_module("wte", TracedEmbedding(torch::nn::EmbeddingOptions(config_.vocab_size, config_.n_embd)
                                                     ._weight(torch::empty({config_.vocab_size, config_.n_embd},
                                                                           torch::dtype(config_.weight_dtype)))));
    drop = register_module("drop", TracedDropout(config_.embd_pdrop));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.n_layer; ++i) h->push_back(GPTJBlock(config_, i));
    ln_f = register_module(
        "ln_f", TracedLayerNorm(torch::nn::LayerNormOptions({config_.n_embd}).eps(config_.layer_norm_epsilon)));
  }
  /// Hidden states after `ln_f`, float32; arguments as for `CausalLM::forward`.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) {
    const auto [positions, mask] =
        causal_inputs(input_ids, attention_mask, cache ? cache->length() : 0, config_.n_positions, "GPT-J");
    check_input_ids(input_ids, config_.vocab_size, "GPT-J");
    const auto [cos, sin] = rotary_.angles(positions);
    auto x = drop(wte(input_ids).to(torch::kFloat32));
    for (const auto& block : *h) x = block->as<GPTJBlock::Impl>()->forward(x, cos, sin, mask, cache);
    return ln_f(x);
  }

  TracedEmbedding wte{nullptr};      ///< Token embedding [vocab, n_embd].
  TracedDropout drop{nullptr};       ///< After the embedding; its output is the stream before block 0.
  torch::nn::ModuleList h{nullptr};  ///< The blocks, `GPTJBlock`.
  TracedLayerNorm ln_f{nullptr};     ///< The final LayerNorm.

 private:
  GPTJConfig config_;
  RotaryEmbedding rotary_;
};
/// Traceable holder of `GPTJModelImpl`.
BAUKIT_TRACED_MODULE(GPTJModel);

/// GPT-J with its language-model head, as Hugging Face's `GPTJForCausalLM`.
class GPTJForCausalLMImpl : public CausalLMModule<GPTJForCausalLMImpl> {
 public:
  /// An uninitialised model for `config`.
  explicit GPTJForCausalLMImpl(GPTJConfig config) : config(std::move(config)) { reset(); }
  /// Registers the submodules.
  void reset() override {
    transformer = register_module("transformer", GPTJModel(config));
    lm_head = register_module(
        "lm_head", Linear(LinearOptions(config.n_embd, config.vocab_size).bias(true).dtype(config.weight_dtype)));
  }
  /// Logits [batch, tokens, vocab], float32.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) override {
    return lm_head(transformer(input_ids, attention_mask, cache));
  }

  /// Loads the checkpoint of a parsed `config.json` (from its directory) as `GPTJForCausalLM.from_pretrained`
  /// does, in eval mode; F16/BF16 weights stay mapped unless `options.weight_dtype()` says otherwise.
  static std::shared_ptr<GPTJForCausalLMImpl> from_config(const ConfigFile& file,
                                                          const PretrainedOptions& options = {}) {
    const auto directory = file.path.parent_path();
    auto config = GPTJConfig::from_config(file, options);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.n_embd, vocab = config.vocab_size;
    check_config_against_checkpoint(directory, state, "transformer.",
                                    {{"wte.weight", {vocab, d}, {"vocab_size", "n_embd"}},
                                     {"lm_head.weight", {vocab, d}, {"vocab_size", "n_embd"}},
                                     {"h.0.attn.q_proj.weight", {d, d}, {"n_embd"}},
                                     {"h.0.mlp.fc_in.weight", {config.inner(), d}, {"n_inner", "n_embd"}}},
                                    "n_layer", config.n_layer, "h.");
    return build_pretrained<GPTJForCausalLMImpl>(
        std::move(config), state,
        io::LoadOptions().optional_prefix("transformer.").ignore(R"(\.attn\.(masked_)?bias$)"), directory, options);
  }
  /// Loads `directory`; see `from_config`.
  static std::shared_ptr<GPTJForCausalLMImpl> from_pretrained(const std::filesystem::path& directory,
                                                              const PretrainedOptions& options = {}) {
    return from_config(ConfigFile::read(directory), options);
  }

  /// Writes `config.json` and `model.safetensors`, every tensor stored as `weight_dtype` (as Hugging Face saves a
  /// float16 model); LayerNorms are read back as float32.
  void save_pretrained(const std::filesystem::path& directory) {
    save_checkpoint(*this, config.to_json(), directory, config.weight_dtype);
  }

  /// GPT-2-style random initialisation (see `init_gpt2_style`), with `out_proj` and `fc_out` as residual projections.
  void init_weights(uint64_t seed) {
    init_gpt2_style(*this, seed, config.n_layer, {"out_proj.weight", "fc_out.weight"});
  }

  // CausalLM
  /// `transformer.h.N`, `transformer.drop`, `transformer.ln_f`, `lm_head`; no point after attention alone.
  [[nodiscard]] LensLayout lens_layout() const override {
    LensLayout layout{{}, "transformer.drop", "transformer.ln_f", "lm_head", {}};
    for (int64_t i = 0; i < config.n_layer; ++i) layout.blocks.push_back(fmt::format("transformer.h.{}", i));
    return layout;
  }
  /// `transformer.ln_f`.
  torch::nn::AnyModule final_norm() override { return torch::nn::AnyModule(transformer->ln_f); }
  /// `lm_head`.
  torch::nn::AnyModule unembedding() override { return torch::nn::AnyModule(lm_head); }

  GPTJConfig config;               ///< Hyperparameters.
  GPTJModel transformer{nullptr};  ///< The body.
  Linear lm_head{nullptr};         ///< The unembedding [vocab, n_embd], with bias.
};
/// Holder of `GPTJForCausalLMImpl`, with `from_pretrained`.
using GPTJForCausalLM = PretrainedHolder<GPTJForCausalLMImpl>;

}  // namespace baukit::models
