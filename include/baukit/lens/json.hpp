/// @file json.hpp
/// @brief A lens result as JSON (every number the page shows), and the shape check the page and the JSON share.
#pragma once

#include <fmt/format.h>

#include <baukit/lens/lens.hpp>
#include <baukit/lens/statistics.hpp>
#include <baukit/tokenizer.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// Throws `std::invalid_argument` unless `result` has a shape the page and the JSON can show: each view's row
/// labels match its rows of cells, every row has a cell per prompt token, every cell its top-k tokens with their
/// probabilities, and at least one view is not empty. (A `LensGrid` assembled by hand can break any of these.)
inline void check_lens_result(const LensResult& result) {
  auto check = [&](const LensGrid& grid, const std::string& view) {
    auto fail = [&](const std::string& why) {
      throw std::invalid_argument(fmt::format("lens result: the {} view {}", view, why));
    };
    if (grid.rows.size() != grid.cells.size())
      fail(fmt::format("has {} rows of cells but {} row labels", grid.cells.size(), grid.rows.size()));
    for (std::size_t r = 0; r < grid.cells.size(); ++r) {
      if (grid.cells[r].size() != result.ids.size())
        fail(fmt::format("has {} cells in row {}, but the prompt has {} tokens", grid.cells[r].size(), r,
                         result.ids.size()));
      for (std::size_t t = 0; t < grid.cells[r].size(); ++t) {
        const auto& cell = grid.cells[r][t];
        if (cell.tokens.empty() || cell.tokens.size() != cell.probs.size())
          fail(fmt::format("has a cell (row {}, position {}) with {} tokens and {} probabilities", r, t,
                           cell.tokens.size(), cell.probs.size()));
      }
    }
  };
  if (result.generated >= result.ids.size() && result.generated > 0)
    throw std::invalid_argument(fmt::format("lens result: {} of its {} tokens are marked generated, leaving no prompt",
                                            result.generated, result.ids.size()));
  check(result.lens, "lens");
  check(result.delta_lens, "delta_lens");
  // The JSON's own keys (to_json) and the two views.
  std::set<std::string> taken = {"ids",  "prompt_tokens", "prompt",         "generated", "topk",
                                 "lens", "delta_lens",    "learned_lenses", "target"};
  for (const auto& learned : result.learned) {
    if (learned.name.empty() || !taken.insert(learned.name).second)
      throw std::invalid_argument(
          fmt::format("lens result: a learned lens is named '{}', which is empty, another view's or the JSON's own key",
                      learned.name));
    check(learned.grid, learned.name);
    if (learned.grid.rows != result.lens.rows)
      throw std::invalid_argument(fmt::format("lens result: the {} view's rows differ from the lens's", learned.name));
  }
  if (result.lens.cells.empty() && result.delta_lens.cells.empty()) throw std::invalid_argument("lens result: empty");
}

/// Every number of a lens as JSON, for scripts: ids and token strings (`generated`: how many of them, at the end,
/// the model generated; `prompt` is the text of the others), per view (`lens`, `delta_lens`) the
/// arrays `tokens`, `token_strings`, `probs` `[row][position][k]` and `magnitudes`, `entropy`, `kl_to_final`,
/// `rank_of_final_top1`, `rank_of_target` `[row][position]`; each learned lens as one more view under its name
/// (`tuned_lens`, `jacobian_lens`), listed in `learned_lenses`.
inline nlohmann::json to_json(const LensResult& result, const Tokenizer& tokenizer) {
  check_lens_result(result);
  auto view = [&](const LensGrid& grid) {
    nlohmann::json out = {{"rows", grid.rows}};
    auto per_cell = [&](const char* key, auto get) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& row : grid.cells) {
        nlohmann::json values = nlohmann::json::array();
        for (const auto& cell : row) values.push_back(get(cell));
        rows.push_back(std::move(values));
      }
      out[key] = std::move(rows);
    };
    per_cell("tokens", [](const LensCell& c) { return c.tokens; });
    per_cell("token_strings", [&](const LensCell& c) {
      std::vector<std::string> strings;
      for (auto id : c.tokens) strings.push_back(tokenizer.token_text(id));
      return strings;
    });
    per_cell("probs", [](const LensCell& c) { return c.probs; });
    per_cell("magnitudes", [](const LensCell& c) { return c.magnitude; });
    for (const auto& statistic : lens_statistics())
      if (!statistic.json_key.empty()) per_cell(statistic.json_key.c_str(), statistic.value);
    return out;
  };
  std::vector<std::string> prompt_tokens;
  for (auto id : result.ids) prompt_tokens.push_back(tokenizer.decode(id));
  const std::vector<int64_t> prompt(result.ids.begin(),
                                    result.ids.end() - static_cast<std::ptrdiff_t>(result.generated));
  nlohmann::json out = {{"ids", result.ids},
                        {"prompt_tokens", prompt_tokens},
                        {"prompt", tokenizer.decode(prompt)},
                        {"generated", result.generated},
                        {"topk", result.topk},
                        {"lens", view(result.lens)},
                        {"delta_lens", view(result.delta_lens)}};
  out["learned_lenses"] = nlohmann::json::array();
  for (const auto& learned : result.learned) {
    out[learned.name] = view(learned.grid);
    out["learned_lenses"].push_back({{"name", learned.name}, {"label", learned.label}});
  }
  out["target"] = result.target >= 0
                      ? nlohmann::json{{"id", result.target}, {"token", tokenizer.token_text(result.target)}}
                      : nlohmann::json(nullptr);
  return out;
}

}  // namespace baukit
