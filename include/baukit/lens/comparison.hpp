/// @file lens/comparison.hpp
/// @brief Lenses compared cell by cell: the KL divergence between two runs' decoded distributions at each layer and
/// position, and chosen tokens' probability and rank in every cell (their trajectories through the layers).
///
/// @code
/// auto a = baukit::residual_stream(*model, tok.encode("The Eiffel Tower is in")).slice(0, 1);
/// auto b = baukit::residual_stream(*model, tok.encode("The Colosseum is in")).slice(0, 1);
/// torch::Tensor kl = baukit::lens_divergence(*model, a, b);  // [layers, positions]: KL(a || b) per cell
/// auto paris = baukit::track_tokens(*model, a, tok.encode(" Paris"));  // paris.probs[0][layer][position]
/// @endcode
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <algorithm>
#include <baukit/lens/decoder.hpp>
#include <baukit/lens/lens.hpp>
#include <baukit/models/causal_lm.hpp>
#include <stdexcept>
#include <vector>

namespace baukit {

/// Tokens' probabilities and ranks in every cell of a lens.
struct TrackedTokens {
  std::vector<int64_t> tokens;  ///< The tokens, in the order asked for.
  torch::Tensor probs;          ///< `[tokens, rows, positions]` float32: each token's decoded probability.
  torch::Tensor ranks;          ///< `[tokens, rows, positions]` int64: each token's 1-based rank.
};

namespace detail {

/// Decodes `states` `[rows, positions, width]` through the model's lens decoder in chunks of rows of at most
/// `chunk_bytes` of values, calling `fn(first_row, log_probs)` with `log_probs` `[chunk rows, positions, vocab]`
/// float32 on the CPU.
template <class Fn>
void for_each_decoded_chunk(models::CausalLM& model, const torch::Tensor& states, int64_t chunk_bytes, Fn&& fn) {
  torch::NoGradGuard no_grad;
  auto decoder = make_decoder(model);
  const int64_t rows = states.size(0), positions = states.size(1);
  const int64_t vocab = model.vocab_size();
  const int64_t chunk = std::max<int64_t>(1, chunk_bytes / std::max<int64_t>(1, positions * vocab * 4));
  for (int64_t begin = 0; begin < rows; begin += chunk) {
    const int64_t end = std::min(rows, begin + chunk);
    const auto [probs, logits] = decode_with_logits(decoder, states.slice(0, begin, end));
    // From the logits when the decoder ends in a softmax (exact in the tail); else its probabilities' logarithm.
    const auto log_probs =
        logits.defined() ? torch::log_softmax(logits.to(torch::kFloat32), -1) : torch::log(probs.to(torch::kFloat32));
    fn(begin, log_probs.cpu());
  }
}

}  // namespace detail

/// KL(a ‖ b) per cell, in nats, between the decoded distributions of two lenses' states (`[rows, positions, width]`
/// each, e.g. two prompts' `residual_stream(...).slice(0, 1)`), position by position from the first: `[rows,
/// min(positions)]` float32. Rows must agree.
inline torch::Tensor lens_divergence(models::CausalLM& model, const torch::Tensor& a, const torch::Tensor& b,
                                     int64_t chunk_bytes = int64_t{128} << 20) {
  if (a.dim() != 3 || b.dim() != 3 || a.size(0) != b.size(0) || a.size(2) != b.size(2))
    throw std::invalid_argument(
        fmt::format("lens_divergence: states {} and {} must be [rows, positions, width] with "
                    "the same rows and width",
                    fmt::join(a.sizes(), "x"), fmt::join(b.sizes(), "x")));
  const int64_t positions = std::min(a.size(1), b.size(1));
  auto out = torch::empty({a.size(0), positions}, torch::kFloat32);
  const auto both = torch::cat({a.slice(1, 0, positions), b.slice(1, 0, positions)}, 1);  // one decode for both
  detail::for_each_decoded_chunk(model, both, chunk_bytes, [&](int64_t first, const torch::Tensor& log_probs) {
    const auto log_a = log_probs.slice(1, 0, positions), log_b = log_probs.slice(1, positions);
    const auto kl = (log_a.exp() * (log_a - log_b)).sum(-1).clamp_min(0);
    out.slice(0, first, first + kl.size(0)).copy_(kl);
  });
  return out;
}

/// The probability and rank of each of `tokens` in every cell of `states` `[rows, positions, width]`.
inline TrackedTokens track_tokens(models::CausalLM& model, const torch::Tensor& states,
                                  const std::vector<int64_t>& tokens, int64_t chunk_bytes = int64_t{128} << 20) {
  if (states.dim() != 3)
    throw std::invalid_argument(
        fmt::format("track_tokens: states {} must be [rows, positions, width]", fmt::join(states.sizes(), "x")));
  for (const auto token : tokens)
    if (token < 0 || token >= model.vocab_size())
      throw std::invalid_argument(
          fmt::format("track_tokens: token {} is outside the vocabulary of {}", token, model.vocab_size()));
  TrackedTokens out;
  out.tokens = tokens;
  const auto count = static_cast<int64_t>(tokens.size());
  out.probs = torch::zeros({count, states.size(0), states.size(1)}, torch::kFloat32);
  out.ranks = torch::zeros({count, states.size(0), states.size(1)}, torch::kLong);
  if (tokens.empty()) return out;
  const auto index = torch::tensor(tokens, torch::kLong);
  detail::for_each_decoded_chunk(model, states, chunk_bytes, [&](int64_t first, const torch::Tensor& log_probs) {
    const auto chosen = log_probs.index_select(-1, index);  // [chunk, positions, tokens]
    for (int64_t i = 0; i < count; ++i) {
      const auto mine = chosen.select(-1, i).unsqueeze(-1);
      out.probs[i].slice(0, first, first + log_probs.size(0)).copy_(mine.squeeze(-1).exp());
      out.ranks[i].slice(0, first, first + log_probs.size(0)).copy_((log_probs > mine).sum(-1) + 1);
    }
  });
  return out;
}

}  // namespace baukit
