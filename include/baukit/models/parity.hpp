/// @file models/parity.hpp
/// @brief A model against a reference of its family's forward: what a new family is checked with. The reference
/// is the format the project's own reference scripts write (`tests/data/llama/make_reference.py`,
/// `tests/data/hf-reference/make_reference.py`): a JSON document with, per prompt, its `ids`, the lens top-5
/// (`lens.tokens`, `lens.probs` [layer][position][5]), the 10 `generated` greedy tokens and optionally
/// `final_logits_top5` or `logits_last_top64`; and a safetensors file with, per prompt `i`, `p{i}.hidden`
/// [layers, tokens, width] (each block's output), `p{i}.embed` (the stream before block 0) and optionally
/// `p{i}.logits_last`.
///
/// @code
/// auto model = baukit::models::from_pretrained(dir);
/// const auto report = baukit::models::compare_to_reference(*model, dir / "reference.json",
///                                                          dir / "reference.safetensors");
/// if (!report.within(1e-4)) std::cerr << report.summary() << "\n";
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/generate.hpp>
#include <baukit/io/checkpoint.hpp>
#include <baukit/io/safetensors.hpp>
#include <baukit/lens/decoder.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/trace.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace baukit::models {

/// How far a model is from a reference: the largest differences, and every discrete result that differs.
struct ParityReport {
  double hidden = 0;     ///< Largest |difference| of a block's output, over prompts, blocks and positions.
  double embedding = 0;  ///< Largest |difference| of the stream before block 0.
  double logits = 0;     ///< Largest |difference| of the last position's logits (all, or the reference's 64 largest).
  int64_t cells = 0;     ///< Lens cells compared.
  /// Each lens or final top-5 cell, and each greedy continuation (with or without the cache), that differs, named
  /// by prompt, layer and position. Neighbours whose reference probabilities differ by less than 1e-5 may swap.
  std::vector<std::string> mismatches;

  /// Hidden states and the embedding within `tolerance`, logits within ten times it, nothing mismatched.
  [[nodiscard]] bool within(double tolerance) const {
    return hidden < tolerance && embedding < tolerance && logits < 10 * tolerance && mismatches.empty();
  }
  /// One line of the differences, then the first mismatches.
  [[nodiscard]] std::string summary(std::size_t shown = 10) const {
    auto text = fmt::format(
        "hidden {:.3g}, embedding {:.3g}, logits {:.3g}; {} of {} lens cells and continuations "
        "differ",
        hidden, embedding, logits, mismatches.size(), cells);
    for (std::size_t i = 0; i < std::min(shown, mismatches.size()); ++i) text += "\n  " + mismatches[i];
    return text;
  }
};

namespace detail {

/// Whether `got` equals `expected`, allowing neighbours whose reference probabilities differ by less than 1e-5 to
/// swap.
inline bool same_top_k(const std::vector<int64_t>& got, const std::vector<int64_t>& expected,
                       const std::vector<double>& probs) {
  if (got.size() != expected.size()) return false;
  for (std::size_t k = 0; k < got.size(); ++k) {
    if (got[k] == expected[k]) continue;
    const bool tie = (k + 1 < got.size() && got[k] == expected[k + 1] && std::abs(probs[k] - probs[k + 1]) < 1e-5) ||
                     (k > 0 && got[k] == expected[k - 1] && std::abs(probs[k] - probs[k - 1]) < 1e-5);
    if (!tie) return false;
  }
  return true;
}

/// The ids of the 5 largest entries of `row` [vocab].
inline std::vector<int64_t> top5(const torch::Tensor& row) {
  const auto ids = std::get<1>(row.topk(5)).contiguous();
  return {ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()};
}

/// The largest |a - b|, both as float32 on the CPU.
inline double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32).cpu() - b.to(torch::kFloat32).cpu()).abs().max().item<double>();
}

}  // namespace detail

/// Runs `model` on every prompt of `reference` (the JSON document) and compares it with it and with `tensors` (see
/// the file's description): each block's output and the embedding traced at the lens layout's names, the logits,
/// the lens top-5 through the model's own decoder, and `greedy` greedy tokens with and without the cache. On the
/// model's device, compared on the CPU. Throws `std::invalid_argument` naming what the reference lacks.
inline ParityReport compare_to_reference(CausalLM& model, const nlohmann::json& reference,
                                         const std::map<std::string, torch::Tensor>& tensors, int64_t greedy = 10) {
  torch::NoGradGuard no_grad;
  const auto layout = model.lens_layout();
  const auto tensor = [&](const std::string& name) -> const torch::Tensor& {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw std::invalid_argument(fmt::format("reference: no tensor '{}'", name));
    return it->second;
  };
  if (!reference.contains("prompts") || !reference["prompts"].is_array())
    throw std::invalid_argument("reference: no 'prompts' list");
  ParityReport report;
  auto decoder = make_decoder(model);
  const auto& prompts = reference["prompts"];
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto& prompt = prompts[p];
    const auto ids = prompt.at("ids").get<std::vector<int64_t>>();
    auto names = layout.blocks;
    names.insert(names.begin(), layout.embedding);
    torch::Tensor logits, states;
    {
      TraceDict traces(model.module(), names);
      logits = model.forward(torch::tensor(ids, torch::kLong).unsqueeze(0).to(model.device()), {}, nullptr).cpu();
      std::vector<torch::Tensor> hidden;
      for (const auto& block : layout.blocks) hidden.push_back(traces[block].output()[0].to(torch::kFloat32));
      states = torch::stack(hidden);
      report.embedding = std::max(report.embedding, detail::max_difference(traces[layout.embedding].output()[0],
                                                                           tensor(fmt::format("p{}.embed", p))));
    }
    report.hidden = std::max(report.hidden, detail::max_difference(states, tensor(fmt::format("p{}.hidden", p))));
    const auto last = logits[0][-1];
    if (const auto it = tensors.find(fmt::format("p{}.logits_last", p)); it != tensors.end()) {
      report.logits = std::max(report.logits, detail::max_difference(last, it->second));
    } else if (prompt.contains("logits_last_top64")) {
      const auto& top = prompt["logits_last_top64"];
      const auto at = torch::tensor(top.at("ids").get<std::vector<int64_t>>(), torch::kLong);
      const auto values = torch::tensor(top.at("values").get<std::vector<double>>(), torch::kFloat32);
      report.logits = std::max(report.logits, detail::max_difference(last.index_select(0, at), values));
    }
    if (prompt.contains("final_logits_top5"))
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const auto row = logits[0][static_cast<int64_t>(t)];
        const auto expected = prompt["final_logits_top5"][t].get<std::vector<int64_t>>();
        const auto probs = torch::softmax(row, -1);
        std::vector<double> expected_probs;
        for (const auto id : expected) expected_probs.push_back(probs[id].item<double>());
        if (!detail::same_top_k(detail::top5(row), expected, expected_probs))
          report.mismatches.push_back(fmt::format("prompt {}: the output's top-5 at position {}", p, t));
      }
    const auto lens = decoder->forward(states.to(model.device())).cpu();  // [layers, tokens, vocab]
    for (int64_t layer = 0; layer < lens.size(0); ++layer)
      for (int64_t t = 0; t < lens.size(1); ++t) {
        ++report.cells;
        const auto& cell_tokens =
            prompt.at("lens").at("tokens")[static_cast<std::size_t>(layer)][static_cast<std::size_t>(t)];
        const auto& cell_probs =
            prompt.at("lens").at("probs")[static_cast<std::size_t>(layer)][static_cast<std::size_t>(t)];
        if (!detail::same_top_k(detail::top5(lens[layer][t]), cell_tokens.get<std::vector<int64_t>>(),
                                cell_probs.get<std::vector<double>>()))
          report.mismatches.push_back(fmt::format("prompt {}: the lens top-5 at {} position {}", p,
                                                  layout.blocks[static_cast<std::size_t>(layer)], t));
      }
    if (prompt.contains("generated")) {
      const auto expected = prompt["generated"].get<std::vector<int64_t>>();
      const auto n = std::min<int64_t>(greedy, static_cast<int64_t>(expected.size()));
      const std::vector<int64_t> wanted(expected.begin(), expected.begin() + n);
      for (const bool cache : {true, false}) {
        ++report.cells;
        if (generate_ids(model, {ids}, n, GenerateOptions().use_cache(cache)).front() != wanted)
          report.mismatches.push_back(
              fmt::format("prompt {}: the {} greedy tokens {} the cache", p, n, cache ? "with" : "without"));
      }
    }
  }
  return report;
}

/// As above, with the reference read from `json` and `safetensors` files.
inline ParityReport compare_to_reference(CausalLM& model, const std::filesystem::path& json,
                                         const std::filesystem::path& safetensors, int64_t greedy = 10) {
  io::SafetensorsFile file(safetensors);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : file.entries()) tensors[entry.name] = file.tensor(entry).to(torch::kFloat32).clone();
  return compare_to_reference(model, io::read_json_file(json), tensors, greedy);
}

}  // namespace baukit::models
