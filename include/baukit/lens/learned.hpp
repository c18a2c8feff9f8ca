/// @file lens/learned.hpp
/// @brief A learned lens (the tuned lens, the Jacobian lens): per layer a translator in front of the model's own
/// head, so that it decodes like the logit lens. `LearnedLens` is what the lens, the JSON and the page need of one;
/// `make_decoder(model, lens, layer)` is one layer's decoder as a `Sequential`, the translator its first stage.
///
/// @code
/// auto tuned = baukit::load_tuned_lens(dir);                   // config.json + params.pt, as tuned-lens saves them
/// auto decoder = baukit::make_decoder(*model, tuned.ptr(), 3);  // Sequential(translator, ln_f, lm_head, softmax)
/// torch::Tensor probs = decoder->forward(hidden_states);        // block 3's output, decoded
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/lens/decoder.hpp>
#include <baukit/models/causal_lm.hpp>
#include <memory>
#include <string>
#include <utility>

namespace baukit {

/// A lens that translates each layer's residual stream into the final layer's basis before the model's head
/// (final norm, unembedding, any logit transform) decodes it.
class LearnedLens {
 public:
  virtual ~LearnedLens() = default;

  /// The view's key in the JSON and on the page ("tuned_lens", "jacobian_lens").
  [[nodiscard]] virtual std::string name() const = 0;
  /// The view's label on the page ("tuned lens").
  [[nodiscard]] virtual std::string label() const = 0;
  /// Throws `std::invalid_argument` unless the lens can translate every block output of a model of `num_layers`
  /// layers and `width` wide; the message names the lens's file and what differs.
  virtual void check_fits(int64_t num_layers, int64_t width) const = 0;
  /// `state` `[..., width]`, the output of block `layer` (-1: the embedding, where the lens has a translator for
  /// it), translated for the model's head. The lens grid never asks for the last block: its output is what the
  /// head decodes already. Differentiable in the lens's parameters (the tuned lens trains through it).
  [[nodiscard]] virtual torch::Tensor translate(const torch::Tensor& state, int64_t layer) const = 0;
};

/// The model's hidden size: the length of its final norm's weight.
inline int64_t model_width(models::CausalLM& model) {
  const auto name = model.lens_layout().final_norm + ".weight";
  const auto parameters = model.module().named_parameters();
  if (const auto* weight = parameters.find(name)) return weight->size(-1);
  throw std::invalid_argument(
      fmt::format("the {} model has no parameter '{}' to tell its width", model.model_type(), name));
}

/// One layer of a learned lens as a module, so that it can be a decoder's first stage (and be traced).
class LayerTranslatorImpl : public torch::nn::Module, public Hookable {
 public:
  /// Block `layer`'s translator of `lens`.
  LayerTranslatorImpl(std::shared_ptr<const LearnedLens> lens, int64_t layer) : lens_(std::move(lens)), layer_(layer) {
    if (!lens_) throw std::invalid_argument("LayerTranslator: no lens");
  }
  /// `lens->translate(state, layer)`, with this module's hooks.
  torch::Tensor forward(const torch::Tensor& state) {
    return apply_forward_hooks(lens_->translate(state, layer_), state);
  }

 private:
  std::shared_ptr<const LearnedLens> lens_;
  int64_t layer_;
};
/// The `ModuleHolder` of `LayerTranslatorImpl`.
TORCH_MODULE(LayerTranslator);

/// Block `layer`'s decoder of `lens`: `Sequential(translator, ln_f, lm_head, [logit_transform], [softmax])`, the
/// last stages the model's own (shared, not copied), as `make_decoder(model)` builds them.
inline torch::nn::Sequential make_decoder(models::CausalLM& model, std::shared_ptr<const LearnedLens> lens,
                                          int64_t layer, bool softmax = true) {
  auto head = make_decoder(model, softmax);
  torch::OrderedDict<std::string, torch::nn::AnyModule> items;
  items.insert("translator", torch::nn::AnyModule(LayerTranslator(std::move(lens), layer)));
  const auto names = head->named_children();
  std::size_t index = 0;
  for (const auto& stage : *head) items.insert(names[index++].key(), stage);
  return torch::nn::Sequential(std::move(items));
}

}  // namespace baukit
