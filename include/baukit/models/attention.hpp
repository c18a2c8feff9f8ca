/// @file attention.hpp
/// @brief Self-attention as Llama-style families have it: grouped-query heads (`num_key_value_heads`), an explicit
/// `head_dim`, optional q/k/v and output biases, optional per-head q/k RMSNorm (Qwen 3), rotary embedding, an
/// optional sliding window (Mistral), a key/value cache and left padding. Hugging Face's names: `q_proj`, `k_proj`,
/// `v_proj`, `o_proj`, `q_norm`, `k_norm`.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/models/layers.hpp>
#include <baukit/models/norms.hpp>
#include <baukit/models/rotary.hpp>
#include <cmath>
#include <limits>
#include <optional>

namespace baukit::models {

/// What an `Attention` is: `AttentionOptions(4096, 32, 8, 128).qkv_bias(true)`.
struct AttentionOptions {
  /// Attention from a stream of `hidden_size` with `num_heads` query heads sharing `num_kv_heads` key/value heads
  /// of `head_dim` dimensions each.
  AttentionOptions(int64_t hidden_size, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim)
      : hidden_size_(hidden_size), num_heads_(num_heads), num_kv_heads_(num_kv_heads), head_dim_(head_dim) {}
  /// Width of the residual stream.
  TORCH_ARG(int64_t, hidden_size);
  /// Query heads.
  TORCH_ARG(int64_t, num_heads);
  /// Key/value heads; each serves num_heads / num_kv_heads query heads.
  TORCH_ARG(int64_t, num_kv_heads);
  /// Width of one head.
  TORCH_ARG(int64_t, head_dim);
  /// Biases on q, k and v (Qwen 2, Llama's `attention_bias`).
  TORCH_ARG(bool, qkv_bias) = false;
  /// A bias on the output projection (Llama's `attention_bias`).
  TORCH_ARG(bool, output_bias) = false;
  /// RMSNorm over each query and key head before rotary, with this epsilon (Qwen 3, Gemma 3); none when unset.
  TORCH_ARG(std::optional<double>, qk_norm_eps) = std::nullopt;
  /// The q/k norms scale by `1 + weight` (Gemma 3's RMSNorm).
  TORCH_ARG(bool, qk_norm_unit_offset) = false;
  /// Soft-caps the scaled scores before the mask, `cap * tanh(scores / cap)` (Gemma 2's `attn_logit_softcapping`);
  /// 0: none.
  TORCH_ARG(double, softcap) = 0.0;
  /// A query sees at most this many keys, itself included (Mistral's `sliding_window`); 0: all before it.
  TORCH_ARG(int64_t, sliding_window) = 0;
  /// Multiplies the scores; 0 means head_dim^-0.5.
  TORCH_ARG(double, scaling) = 0.0;
  /// Which cache slot the layer uses.
  TORCH_ARG(int64_t, layer_idx) = 0;
  /// How projection weights are stored (upcast at use).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat32;
};

/// `cap * tanh(x / cap)`: `x` squashed smoothly into (-cap, cap) (Gemma 2's attention and final logit soft-capping).
inline torch::Tensor soft_cap(const torch::Tensor& x, double cap) {
  return torch::tanh(x / cap) * cap;
}

/// Causal self-attention: `o_proj(softmax(q k^T * scaling + mask) v)`, scores and softmax in float32 as Hugging
/// Face's eager attention computes them.
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  /// The attention `options` describe, turning queries and keys by `rotary`.
  AttentionImpl(AttentionOptions options, RotaryEmbedding rotary)
      : options(std::move(options)), rotary_(std::move(rotary)) {
    if (this->options.num_heads() % this->options.num_kv_heads() != 0)
      throw std::invalid_argument(fmt::format("attention: {} heads cannot share {} key/value heads evenly",
                                              this->options.num_heads(), this->options.num_kv_heads()));
    reset();
  }
  /// Registers the submodules.
  void reset() override {
    const auto& o = options;
    const int64_t d = o.hidden_size(), q = o.num_heads() * o.head_dim(), kv = o.num_kv_heads() * o.head_dim();
    q_proj = register_module("q_proj", Linear(LinearOptions(d, q).bias(o.qkv_bias()).dtype(o.dtype())));
    k_proj = register_module("k_proj", Linear(LinearOptions(d, kv).bias(o.qkv_bias()).dtype(o.dtype())));
    v_proj = register_module("v_proj", Linear(LinearOptions(d, kv).bias(o.qkv_bias()).dtype(o.dtype())));
    o_proj = register_module("o_proj", Linear(LinearOptions(q, d).bias(o.output_bias()).dtype(o.dtype())));
    if (o.qk_norm_eps()) {
      const auto norm = RMSNormOptions(o.head_dim()).eps(*o.qk_norm_eps()).unit_offset(o.qk_norm_unit_offset());
      q_norm = register_module("q_norm", RMSNorm(norm));
      k_norm = register_module("k_norm", RMSNorm(norm));
    }
  }

  /// `x` [batch, tokens, hidden]; `cos`, `sin` from `RotaryEmbedding::angles` at the tokens' positions; `mask`
  /// [batch or 1, 1, tokens, past + tokens] true where a query may not look (undefined: none); `cache` read and
  /// extended when given. Returns [batch, tokens, hidden], float32.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1), hd = options.head_dim();
    auto heads = [&](const torch::Tensor& t, int64_t n) { return t.view({batch, tokens, n, hd}).transpose(1, 2); };
    auto q = heads(q_proj(x), options.num_heads()), k = heads(k_proj(x), options.num_kv_heads());
    auto v = heads(v_proj(x), options.num_kv_heads());  // [batch, heads, tokens, head_dim]
    if (q_norm) q = q_norm(q), k = k_norm(k);
    q = rotary_.apply(q, cos, sin);
    k = rotary_.apply(k, cos, sin);
    // [batch, kv heads, past + tokens, head_dim], cached before heads are shared out
    if (cache) std::tie(k, v) = cache->append(static_cast<std::size_t>(options.layer_idx()), k, v);
    const int64_t group = options.num_heads() / options.num_kv_heads();
    if (group > 1) k = k.repeat_interleave(group, 1), v = v.repeat_interleave(group, 1);  // head h reads h / group
    const double scaling = options.scaling() > 0 ? options.scaling() : 1.0 / std::sqrt(static_cast<double>(hd));
    auto scores = torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(-2, -1)) * scaling;
    if (options.softcap() > 0) scores = soft_cap(scores, options.softcap());
    const auto blocked = with_window(mask, tokens, k.size(2), x.device());
    if (blocked.defined()) scores = scores.masked_fill(blocked, std::numeric_limits<float>::lowest());
    const auto probs = torch::softmax(scores, -1);
    const auto y = torch::matmul(probs, v.to(torch::kFloat32)).transpose(1, 2).reshape({batch, tokens, -1});
    return o_proj(y);
  }

  AttentionOptions options;  ///< What the attention is.
  Linear q_proj{nullptr};    ///< hidden -> heads * head_dim.
  Linear k_proj{nullptr};    ///< hidden -> kv heads * head_dim.
  Linear v_proj{nullptr};    ///< hidden -> kv heads * head_dim.
  Linear o_proj{nullptr};    ///< heads * head_dim -> hidden.
  RMSNorm q_norm{nullptr};   ///< Per query head (Qwen 3, Gemma 3); null otherwise.
  RMSNorm k_norm{nullptr};   ///< Per key head (Qwen 3, Gemma 3); null otherwise.

 private:
  // The causal (and padding) mask with the sliding window's older keys blocked too: query i (at cache index
  // keys - tokens + i) sees key j only if index - j < sliding_window.
  [[nodiscard]] torch::Tensor with_window(const torch::Tensor& mask, int64_t tokens, int64_t keys,
                                          torch::Device device) const {
    const int64_t window = options.sliding_window();
    if (window <= 0 || keys <= window) return mask;
    const auto query_index = torch::arange(keys - tokens, keys, torch::TensorOptions(device).dtype(torch::kLong));
    const auto key_index = torch::arange(keys, torch::TensorOptions(device).dtype(torch::kLong));
    const auto old = (query_index.unsqueeze(1) - key_index.unsqueeze(0) >= window).view({1, 1, tokens, keys});
    return mask.defined() ? (mask | old) : old;
  }

  RotaryEmbedding rotary_;
};
/// Traceable holder of `AttentionImpl`.
BAUKIT_TRACED_MODULE(Attention);

}  // namespace baukit::models
