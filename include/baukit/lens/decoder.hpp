/// @file lens/decoder.hpp
/// @brief The logit lens decoder as a composable `torch::nn::Sequential`, built from modules the model owns
/// (shared, not copied) plus new ones.
///
/// @code
/// auto decoder = baukit::make_decoder(*model);            // Sequential(ln_f, lm_head, softmax)
/// torch::Tensor probs = decoder->forward(hidden_states);  // [..., vocab]
/// // Any decoder will do, e.g. a learned translator in front of the model's own stages (shared, not copied):
/// auto tuned = torch::nn::Sequential(torch::nn::Linear(width, width));
/// for (const auto& stage : *decoder) tuned->push_back(stage);
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/models/causal_lm.hpp>

namespace baukit {

/// `Sequential(ln_f, lm_head, Softmax(dim=-1))` as the seed builds it; the first two are the model's own
/// modules (the final norm and the unembedding), so the decoder always sees the model's current weights, and a
/// model whose logits are a transform of the unembedding's output (`CausalLM::logit_transform`) has it as a third,
/// `logit_transform`, so that the decoder computes the model's own head. Without `softmax`, it returns logits.
inline torch::nn::Sequential make_decoder(models::CausalLM& model, bool softmax = true) {
  torch::OrderedDict<std::string, torch::nn::AnyModule> items;
  items.insert("ln_f", model.final_norm());
  items.insert("lm_head", model.unembedding());
  if (auto transform = model.logit_transform(); !transform.is_empty())
    items.insert("logit_transform", std::move(transform));
  if (softmax) items.insert("softmax", torch::nn::AnyModule(TracedSoftmax(torch::nn::SoftmaxOptions(-1))));
  return torch::nn::Sequential(std::move(items));
}

}  // namespace baukit
