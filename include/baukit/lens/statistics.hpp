/// @file statistics.hpp
/// @brief The statistics a lens cell shows, as one table: the page's "Text shows" choices and their shading, the
/// hover lines and the JSON fields all come from it. A new statistic is one entry here, its `LensCell` field, and
/// its kernel (`kernels/lens_statistics.hpp`).
#pragma once

#include <fmt/format.h>

#include <baukit/lens/lens.hpp>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace baukit {

/// One statistic of `LensCell`, as the page and the JSON show it.
struct LensStatistic {
  std::string page_key;       ///< The page's choice and `#stat=` value ("kl").
  std::string label;          ///< The choice's text; `{target}` stands for the target token.
  std::string json_key;       ///< Its per-cell field in `to_json` ("kl_to_final"); "" when the JSON has it otherwise.
  bool needs_target = false;  ///< Offered on the page only when a target token was given.
  /// The value in the JSON.
  std::function<nlohmann::json(const LensCell&)> value;
  /// How dark the page draws the cell's text, 0 (grey) to 1 (black); `log_vocab` is log(vocabulary size).
  std::function<double(const LensCell&, double log_vocab)> darkness;
  /// The cell's hover line ("" for none); `target` is the target token's text.
  std::function<std::string(const LensCell&, const std::string& target)> hover;
};

/// The table, in the page's order.
inline const std::vector<LensStatistic>& lens_statistics() {
  static const std::vector<LensStatistic> table = [] {
    auto rank_darkness = [](int64_t rank, double log_vocab) {
      return rank > 0 ? 1.0 - std::log(static_cast<double>(rank)) / log_vocab : 0.0;
    };
    return std::vector<LensStatistic>{
        {"prob", "top-1 probability", "", false, nullptr,
         [](const LensCell& c, double) { return c.probs.empty() ? 0.0 : static_cast<double>(c.probs[0]); },
         [](const LensCell&, const std::string&) { return std::string(); }},
        {"entropy", "entropy (low = dark)", "entropy", false, [](const LensCell& c) { return c.entropy; },
         [](const LensCell& c, double log_vocab) { return 1.0 - c.entropy / log_vocab; },
         [](const LensCell& c, const std::string&) { return fmt::format("entropy: {:.2f} nats", c.entropy); }},
        {"kl", "KL to final (low = dark)", "kl_to_final", false, [](const LensCell& c) { return c.kl_to_final; },
         [](const LensCell& c, double) { return std::exp(-static_cast<double>(c.kl_to_final)); },
         [](const LensCell& c, const std::string&) { return fmt::format("KL to final: {:.3f}", c.kl_to_final); }},
        {"rank", "rank of final top-1 (high = dark)", "rank_of_final_top1", false,
         [](const LensCell& c) { return c.rank_of_final_top1; },
         [=](const LensCell& c, double log_vocab) { return rank_darkness(c.rank_of_final_top1, log_vocab); },
         [](const LensCell& c, const std::string&) {
           return fmt::format("rank of final top-1: {}", c.rank_of_final_top1);
         }},
        {"target", "rank of {target}", "rank_of_target", true, [](const LensCell& c) { return c.rank_of_target; },
         [=](const LensCell& c, double log_vocab) { return rank_darkness(c.rank_of_target, log_vocab); },
         [](const LensCell& c, const std::string& target) {
           return target.empty() ? std::string() : fmt::format("rank of {}: {}", target, c.rank_of_target);
         }},
    };
  }();
  return table;
}

}  // namespace baukit
