/// @file causal_lm.hpp
/// @brief `CausalLM`: what the lens, generation and the command need of a model family, and `KVCache`.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace baukit::models {

/// Keys and values of past positions, one pair per layer, so each new token costs one position's compute.
struct KVCache {
  std::vector<torch::Tensor> keys;    ///< Per layer: [batch, heads, past, head_dim]; undefined before the first call.
  std::vector<torch::Tensor> values;  ///< Per layer, like `keys`.

  /// A cache for `layers` layers.
  explicit KVCache(std::size_t layers = 0) : keys(layers), values(layers) {}
  /// The number of cached positions.
  [[nodiscard]] int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }

  /// Appends layer `layer`'s new keys and values ([batch, heads, tokens, head_dim]) along the positions and returns
  /// all of them, past and new; throws naming the layer if the cache has no slot for it.
  std::pair<torch::Tensor, torch::Tensor> append(std::size_t layer, const torch::Tensor& key,
                                                 const torch::Tensor& value) {
    if (layer >= keys.size())
      throw std::out_of_range(fmt::format("KVCache: layer {} of a cache for {} layers", layer, keys.size()));
    auto &past_key = keys[layer], &past_value = values[layer];
    past_key = past_key.defined() ? torch::cat({past_key, key}, 2) : key;
    past_value = past_value.defined() ? torch::cat({past_value, value}, 2) : value;
    return {past_key, past_value};
  }
};

/// Token positions and the attention mask for a causal forward, as every family computes them.
struct CausalInputs {
  torch::Tensor positions;  ///< [batch or 1, tokens]: each token's position, counting only real tokens before it.
  torch::Tensor mask;  ///< [batch or 1, 1, tokens, past + tokens], true where a query may not look; undefined: none.
};

/// Positions and mask for `input_ids` [batch, tokens] after `past` cached positions. The causal mask is aligned
/// bottom-right (query i sees keys up to past + i), so a key/value cache gives the same result as recomputation;
/// `attention_mask` [batch, past + tokens] (1 = token, 0 = padding) masks left padding and shifts positions.
inline CausalInputs causal_inputs(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, int64_t past,
                                  int64_t max_positions, const std::string& family) {
  const int64_t tokens = input_ids.size(1);
  if (tokens == 0) throw std::invalid_argument(fmt::format("{}: forward needs at least one token", family));
  if (past + tokens > max_positions)
    throw std::invalid_argument(
        fmt::format("{}: {} tokens (with {} cached) exceed n_positions = {}", family, tokens, past, max_positions));
  const auto options = torch::TensorOptions().device(input_ids.device());
  CausalInputs inputs;
  if (attention_mask.defined()) {
    inputs.positions = (attention_mask.to(torch::kLong).cumsum(-1) - 1).clamp_min(0).slice(1, past, past + tokens);
    inputs.mask = (attention_mask == 0).view({attention_mask.size(0), 1, 1, past + tokens});
  } else {
    inputs.positions = torch::arange(past, past + tokens, options.dtype(torch::kLong)).unsqueeze(0);
  }
  if (tokens > 1) {
    auto causal = torch::ones({tokens, past + tokens}, options.dtype(torch::kBool))
                      .triu(past + 1)
                      .view({1, 1, tokens, past + tokens});
    inputs.mask = inputs.mask.defined() ? (inputs.mask | causal) : causal;
  }
  return inputs;
}

/// Throws `std::invalid_argument` naming the first id of `input_ids` outside `[0, vocab_size)` and its place (an
/// embedding lookup would fail with libtorch's bare "index out of range in self").
inline void check_input_ids(const torch::Tensor& input_ids, int64_t vocab_size, const std::string& family) {
  if (input_ids.numel() == 0) return;
  const auto outside = (input_ids < 0) | (input_ids >= vocab_size);
  if (!outside.any().item<bool>()) return;
  const auto flat = outside.reshape({-1}).nonzero()[0].item<int64_t>();
  const auto tokens = input_ids.size(-1);
  throw std::invalid_argument(fmt::format("{}: input id {} (batch row {}, position {}) is outside the vocabulary of {}",
                                          family, input_ids.reshape({-1})[flat].item<int64_t>(), flat / tokens,
                                          flat % tokens, vocab_size));
}

/// Where a family keeps what the lens needs: every name is a module name for `Trace`.
struct LensLayout {
  std::vector<std::string>
      blocks;               ///< The blocks, in order, whose outputs are the residual stream (`transformer.h.N`).
  std::string embedding;    ///< The module whose output is the stream before block 0 (`transformer.drop`).
  std::string final_norm;   ///< The final normalisation (`transformer.ln_f`).
  std::string unembedding;  ///< The unembedding (`lm_head`).
  /// Per block, the module whose output, added to the block's input, is the stream after attention
  /// (`transformer.h.N.attn`); empty where the family has no such point (parallel attention and MLP).
  std::vector<std::string> attention;
};

/// A causal language model of any family, as the lens, `generate` and `baukit-lens` use it. Each family's
/// model class implements it; `baukit::models::from_pretrained` picks the family from `config.json`.
class CausalLM {
 public:
  virtual ~CausalLM() = default;

  /// Logits [batch, tokens, vocab] for `input_ids` [batch, tokens]. `attention_mask` [batch, past + tokens]
  /// (1 = token, 0 = padding) may be undefined; `cache` may be null, else it is read and extended.
  virtual torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                KVCache* cache) = 0;

  /// The model as a module, for tracing and utilities.
  virtual torch::nn::Module& module() = 0;
  /// The module names the lens needs.
  [[nodiscard]] virtual LensLayout lens_layout() const = 0;
  /// The final normalisation module, to build decoders from (shared, not copied).
  virtual torch::nn::AnyModule final_norm() = 0;
  /// The unembedding module, to build decoders from (shared, not copied).
  virtual torch::nn::AnyModule unembedding() = 0;
  /// What the model does to the unembedding's output to make its logits (Gemma 2's final soft-capping), as a
  /// module after `unembedding()` in the lens decoder; empty (the default) when the logits are the unembedding's
  /// output.
  virtual torch::nn::AnyModule logit_transform() { return {}; }

  /// The number of layers (blocks).
  [[nodiscard]] virtual int64_t num_layers() const = 0;
  /// The longest sequence the model takes.
  [[nodiscard]] virtual int64_t max_positions() const = 0;
  /// The size of the output vocabulary.
  [[nodiscard]] virtual int64_t vocab_size() const = 0;
  /// The family's name as in `config.json`'s `model_type`.
  [[nodiscard]] virtual std::string model_type() const = 0;

  /// The device the parameters are on.
  [[nodiscard]] torch::Device device() { return module().parameters().front().device(); }
};

/// What every family's config tells the `CausalLM` interface: `Config::shape()` returns it.
struct ModelShape {
  std::string model_type;     ///< `config.json`'s `model_type`.
  int64_t num_layers = 0;     ///< Blocks.
  int64_t max_positions = 0;  ///< The longest sequence.
  int64_t vocab_size = 0;     ///< Rows of the unembedding.
};

/// The part of a family's top-level model that is the same in every family: a libtorch module (`Cloneable<Impl>`)
/// that is a `CausalLM`, answering `module()` and the size questions from `Impl::config.shape()`. The family adds
/// `forward`, `lens_layout`, `final_norm` and `unembedding`.
template <class Impl>
class CausalLMModule : public torch::nn::Cloneable<Impl>, public CausalLM {
 public:
  /// This model as a module.
  torch::nn::Module& module() override { return *this; }
  /// The number of blocks.
  [[nodiscard]] int64_t num_layers() const override { return shape().num_layers; }
  /// The longest sequence.
  [[nodiscard]] int64_t max_positions() const override { return shape().max_positions; }
  /// The vocabulary size.
  [[nodiscard]] int64_t vocab_size() const override { return shape().vocab_size; }
  /// `config.json`'s `model_type`.
  [[nodiscard]] std::string model_type() const override { return shape().model_type; }

 private:
  [[nodiscard]] ModelShape shape() const { return static_cast<const Impl&>(*this).config.shape(); }
};

}  // namespace baukit::models
