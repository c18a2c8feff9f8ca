/// @file causal_lm.hpp
/// @brief `CausalLM`: what the lens, generation and the command need of a model family, and `KVCache`.
#pragma once

#include <torch/torch.h>

#include <string>
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
};

/// Where a family keeps what the lens needs: every name is a module name for `Trace`.
struct LensLayout {
  std::vector<std::string> blocks;  ///< The blocks, in order, whose outputs are the residual stream (`transformer.h.N`).
  std::string embedding;            ///< The module whose output is the stream before block 0 (`transformer.drop`).
  std::string final_norm;           ///< The final normalisation (`transformer.ln_f`).
  std::string unembedding;          ///< The unembedding (`lm_head`).
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
  virtual torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache) = 0;

  /// The model as a module, for tracing and utilities.
  virtual torch::nn::Module& module() = 0;
  /// The module names the lens needs.
  [[nodiscard]] virtual LensLayout lens_layout() const = 0;
  /// The final normalisation module, to build decoders from (shared, not copied).
  virtual torch::nn::AnyModule final_norm() = 0;
  /// The unembedding module, to build decoders from (shared, not copied).
  virtual torch::nn::AnyModule unembedding() = 0;

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

}  // namespace baukit::models
