/// @file gptj.hpp
/// @brief GPT-J, with Hugging Face's module names (`transformer.h.N.attn.q_proj`, `mlp.fc_in`, `lm_head`, ...),
/// every module traceable. Attention and MLP read the same LayerNorm in parallel; rotary position embedding
/// turns adjacent pairs (2i, 2i+1) of the first `rotary_dim` dimensions of each head. Weights stored as F16 stay
/// F16 (memory-mapped) and are upcast per layer at use, so GPT-J-6B's float16 checkpoint runs in 24 GB.
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

  /// Reads `directory/config.json`; unsupported settings fail by name. Weights are kept as `torch_dtype` when
  /// that is float16 or bfloat16 (upcast at use), else float32.
  static GPTJConfig from_pretrained(const std::filesystem::path& directory) {
    const auto file = ConfigFile::read(directory);
    GPTJConfig c;
    if (const auto type = file.get<std::string>("model_type", "gptj"); type != "gptj")
      file.fail("model_type", fmt::format("is '{}', not 'gptj'", type));
    c.vocab_size = file.positive("vocab_size", c.vocab_size);
    c.n_positions = file.positive("n_positions", c.n_positions);
    c.n_embd = file.positive("n_embd", c.n_embd);
    c.n_layer = file.positive("n_layer", c.n_layer);
    c.n_head = file.positive("n_head", c.n_head);
    c.rotary_dim = file.positive("rotary_dim", c.rotary_dim);
    c.n_inner = file.get<int64_t>("n_inner", 0);
    if (c.n_inner < 0) file.fail("n_inner", "must not be negative");
    c.activation_function = file.get<std::string>("activation_function", c.activation_function);
    if (!ActivationImpl::supported().count(c.activation_function))
      file.fail("activation_function", fmt::format("'{}' is not supported", c.activation_function));
    c.layer_norm_epsilon = file.get<double>("layer_norm_epsilon", c.layer_norm_epsilon);
    c.resid_pdrop = file.get<double>("resid_pdrop", c.resid_pdrop);
    c.embd_pdrop = file.get<double>("embd_pdrop", c.embd_pdrop);
    c.attn_pdrop = file.get<double>("attn_pdrop", c.attn_pdrop);
    if (!file.get<bool>("rotary", true))
      file.fail("rotary", "is false: GPT-J without rotary embedding is not supported");
    if (file.get<bool>("tie_word_embeddings", false))
      file.fail("tie_word_embeddings", "is true: GPT-J's lm_head is untied");
    if (c.n_embd % c.n_head != 0)
      file.fail("n_embd", fmt::format("{} is not divisible by n_head {}", c.n_embd, c.n_head));
    if (c.rotary_dim > c.n_embd / c.n_head || c.rotary_dim % 2 != 0)
      file.fail("rotary_dim",
                fmt::format("{} must be even and at most the head size {}", c.rotary_dim, c.n_embd / c.n_head));
    const auto dtype = file.get<std::string>("torch_dtype", "float32");
    c.weight_dtype = dtype == "float16" ? torch::kFloat16 : dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
    return c;
  }

  /// The `config.json` Hugging Face writes for this configuration.
  [[nodiscard]] nlohmann::json to_json() const {
    return {{"model_type", "gptj"},
            {"architectures", {"GPTJForCausalLM"}},
            {"vocab_size", vocab_size},
            {"n_positions", n_positions},
            {"n_embd", n_embd},
            {"n_layer", n_layer},
            {"n_head", n_head},
            {"rotary_dim", rotary_dim},
            {"rotary", true},
            {"n_inner", n_inner > 0 ? nlohmann::json(n_inner) : nlohmann::json(nullptr)},
            {"activation_function", activation_function},
            {"layer_norm_epsilon", layer_norm_epsilon},
            {"resid_pdrop", resid_pdrop},
            {"embd_pdrop", embd_pdrop},
            {"attn_pdrop", attn_pdrop},
            {"tie_word_embeddings", false},
            {"torch_dtype", weight_dtype == torch::kFloat16    ? "float16"
                            : weight_dtype == torch::kBFloat16 ? "bfloat16"
                                                               : "float32"},
            {"bos_token_id", 50256},
            {"eos_token_id", 50256}};
  }
};

/// Rotates adjacent pairs (2i, 2i+1): (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...).
inline torch::Tensor rotate_every_two(const torch::Tensor& x) {
  const auto even = x.slice(-1, 0, c10::nullopt, 2), odd = x.slice(-1, 1, c10::nullopt, 2);
  return torch::stack({-odd, even}, -1).flatten(-2);
}

/// Rotary position embedding on `x` [batch, tokens, heads, rotary_dim] at `positions` [batch, tokens].
inline torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t dim = x.size(-1);
  const auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, dim, 2, x.options().dtype(torch::kFloat32)) /
                                                      static_cast<double>(dim));
  const auto angles = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [batch, tokens, dim/2]
  const auto sin = angles.sin().repeat_interleave(2, -1).unsqueeze(2);         // [batch, tokens, 1, dim]
  const auto cos = angles.cos().repeat_interleave(2, -1).unsqueeze(2);
  return x * cos + rotate_every_two(x) * sin;
}

/// GPT-J attention: q, k, v projections without bias, rotary on q and k, causal softmax in float32, `out_proj`.
class GPTJAttentionImpl : public torch::nn::Cloneable<GPTJAttentionImpl> {
 public:
  /// The attention of block `layer_idx`.
  GPTJAttentionImpl(const GPTJConfig& config, int64_t layer_idx) : config_(config), layer_idx_(layer_idx) { reset(); }
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
  /// `x` [batch, tokens, n_embd]; `positions` [batch, tokens]; `mask` true where a query may not look.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions, const torch::Tensor& mask,
                        KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2), heads = config_.n_head,
                  head_dim = width / heads;
    auto split = [&](const torch::Tensor& t) { return t.view({batch, tokens, heads, head_dim}); };
    auto rotate = [&](const torch::Tensor& t) {  // the first rotary_dim dimensions of each head turn with position
      const auto turned = apply_rotary(t.slice(-1, 0, config_.rotary_dim), positions);
      return torch::cat({turned, t.slice(-1, config_.rotary_dim)}, -1).transpose(1, 2);
    };
    auto q = rotate(split(q_proj(x))), k = rotate(split(k_proj(x)));  // [batch, heads, tokens, head_dim]
    auto v = split(v_proj(x)).transpose(1, 2);                        // [batch, heads, tokens, head_dim]
    if (cache) {
      auto &past_k = cache->keys.at(layer_idx_), &past_v = cache->values.at(layer_idx_);
      if (past_k.defined()) {
        k = torch::cat({past_k, k}, 2);
        v = torch::cat({past_v, v}, 2);
      }
      past_k = k;  // [batch, heads, past + tokens, head_dim]
      past_v = v;
    }
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
};
/// Traceable holder of `GPTJAttentionImpl`.
BAUKIT_TRACED_MODULE(GPTJAttention);

/// The MLP: `fc_in`, activation, `fc_out`.
class GPTJMLPImpl : public torch::nn::Cloneable<GPTJMLPImpl> {
 public:
  /// The MLP for `config`.
  explicit GPTJMLPImpl(const GPTJConfig& config) : config_(config) { reset(); }
  /// Registers the submodules.
  void reset() override {
    fc_in = register_module(
        "fc_in", Linear(LinearOptions(config_.n_embd, config_.inner()).bias(true).dtype(config_.weight_dtype)));
    act = register_module("act", Activation(config_.activation_function));
    fc_out = register_module(
        "fc_out", Linear(LinearOptions(config_.inner(), config_.n_embd).bias(true).dtype(config_.weight_dtype)));
    dropout = register_module("dropout", TracedDropout(config_.resid_pdrop));
  }
  /// dropout(fc_out(act(fc_in(x)))).
  torch::Tensor forward(const torch::Tensor& x) { return dropout(fc_out(act(fc_in(x)))); }

  Linear fc_in{nullptr};           ///< n_embd -> inner
  Activation act{nullptr};         ///< The activation.
  Linear fc_out{nullptr};          ///< inner -> n_embd
  TracedDropout dropout{nullptr};  ///< On the output.

 private:
  GPTJConfig config_;
};
/// Traceable holder of `GPTJMLPImpl`.
BAUKIT_TRACED_MODULE(GPTJMLP);

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
    mlp = register_module("mlp", GPTJMLP(config_));
  }
  /// The block; arguments as for `GPTJAttentionImpl::forward`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions, const torch::Tensor& mask,
                        KVCache* cache) {
    const auto h = ln_1(x);
    return x + attn(h, positions, mask, cache) + mlp(h);
  }

  TracedLayerNorm ln_1{nullptr};  ///< Shared by attention and MLP.
  GPTJAttention attn{nullptr};    ///< Self-attention.
  GPTJMLP mlp{nullptr};           ///< The MLP.

 private:
  GPTJConfig config_;
  int64_t layer_idx_;
};
/// Traceable holder of `GPTJBlockImpl`.
BAUKIT_TRACED_MODULE(GPTJBlock);

/// The body: token embedding, dropout, the blocks, and the final LayerNorm.
class GPTJModelImpl : public torch::nn::Cloneable<GPTJModelImpl> {
 public:
  /// The body for `config`.
  explicit GPTJModelImpl(const GPTJConfig& config) : config_(config) { reset(); }
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
    auto x = drop(wte(input_ids).to(torch::kFloat32));
    for (const auto& block : *h) x = block->as<GPTJBlock::Impl>()->forward(x, positions, mask, cache);
    return ln_f(x);
  }

  TracedEmbedding wte{nullptr};      ///< Token embedding [vocab, n_embd].
  TracedDropout drop{nullptr};       ///< After the embedding; its output is the stream before block 0.
  torch::nn::ModuleList h{nullptr};  ///< The blocks, `GPTJBlock`.
  TracedLayerNorm ln_f{nullptr};     ///< The final LayerNorm.

 private:
  GPTJConfig config_;
};
/// Traceable holder of `GPTJModelImpl`.
BAUKIT_TRACED_MODULE(GPTJModel);

/// GPT-J with its language-model head, as Hugging Face's `GPTJForCausalLM`.
class GPTJForCausalLMImpl : public torch::nn::Cloneable<GPTJForCausalLMImpl>, public CausalLM {
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

  /// Loads `directory` as `GPTJForCausalLM.from_pretrained` does, in eval mode; F16/BF16 weights stay mapped.
  static std::shared_ptr<GPTJForCausalLMImpl> from_pretrained(const std::filesystem::path& directory,
                                                              torch::Device device = torch::kCPU,
                                                              bool check_finite = true) {
    auto config = GPTJConfig::from_pretrained(directory);
    const auto state = io::read_checkpoint(directory);  // headers only: nothing is allocated yet
    const int64_t d = config.n_embd, vocab = config.vocab_size;
    check_config_against_checkpoint(directory, state, "transformer.",
                                    {{"wte.weight", {vocab, d}, {"vocab_size", "n_embd"}},
                                     {"lm_head.weight", {vocab, d}, {"vocab_size", "n_embd"}},
                                     {"h.0.attn.q_proj.weight", {d, d}, {"n_embd"}},
                                     {"h.0.mlp.fc_in.weight", {config.inner(), d}, {"n_inner", "n_embd"}}},
                                    "n_layer", config.n_layer, "h.");
    auto model = std::make_shared<GPTJForCausalLMImpl>(std::move(config));
    io::load_state_dict(*model, state,
                        io::LoadOptions()
                            .optional_prefix("transformer.")
                            .ignore(R"(\.attn\.(masked_)?bias$)")
                            .check_finite(check_finite),
                        directory);
    model->eval();
    if (device != torch::kCPU) model->to(device);
    return model;
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
  /// This model as a module.
  torch::nn::Module& module() override { return *this; }
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
  /// `n_layer`.
  [[nodiscard]] int64_t num_layers() const override { return config.n_layer; }
  /// `n_positions`.
  [[nodiscard]] int64_t max_positions() const override { return config.n_positions; }
  /// `vocab_size`.
  [[nodiscard]] int64_t vocab_size() const override { return config.vocab_size; }
  /// "gptj".
  [[nodiscard]] std::string model_type() const override { return "gptj"; }

  GPTJConfig config;               ///< Hyperparameters.
  GPTJModel transformer{nullptr};  ///< The body.
  Linear lm_head{nullptr};         ///< The unembedding [vocab, n_embd], with bias.
};
/// Holder of `GPTJForCausalLMImpl`, as `TORCH_MODULE` makes, plus `from_pretrained`.
class GPTJForCausalLM : public torch::nn::ModuleHolder<GPTJForCausalLMImpl> {
 public:
  using torch::nn::ModuleHolder<GPTJForCausalLMImpl>::ModuleHolder;
  /// Loads a checkpoint directory; see `GPTJForCausalLMImpl::from_pretrained`.
  static GPTJForCausalLM from_pretrained(const std::filesystem::path& directory, torch::Device device = torch::kCPU,
                                         bool check_finite = true) {
    return GPTJForCausalLM(GPTJForCausalLMImpl::from_pretrained(directory, device, check_finite));
  }
};

}  // namespace baukit::models
