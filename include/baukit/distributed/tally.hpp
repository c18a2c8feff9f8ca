/// @file distributed/tally.hpp
/// @brief `tally` over a job: each rank tallies its share of the corpus (windows `rank, rank + world_size, ...`,
/// cached and checkpointed per rank as `stats::tally` does), then the ranks' statistics are merged in rank order,
/// so every rank returns the statistic of the whole corpus.
///
/// @code
/// auto group = baukit::distributed::ProcessGroup::connect(env);
/// baukit::io::CorpusReader corpus("wiki.txt", tokenizer,
///                                 baukit::io::CorpusOptions().window(128).rank(env.rank).world_size(env.world_size));
/// auto variance = baukit::distributed::tally(baukit::stats::Variance(), *model, "transformer.h.6", corpus, group);
/// @endcode
#pragma once

#include <fmt/format.h>

#include <baukit/distributed/process_group.hpp>
#include <baukit/io/corpus.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/stats/tally.hpp>
#include <functional>
#include <stdexcept>
#include <string>

namespace baukit::distributed {

/// Checks that `corpus` is split for this process's place in `group`.
inline void check_split(const io::CorpusReader& corpus, const ProcessGroup& group) {
  const auto& options = corpus.options();
  if (options.rank() != group.rank() || options.world_size() != group.world_size())
    throw std::invalid_argument(
        fmt::format("{}: the corpus is split for rank {} of {}, but this process is rank {} of {} (give CorpusOptions "
                    "rank and world_size from the Environment)",
                    corpus.path().string(), options.rank(), options.world_size(), group.rank(), group.world_size()));
}

/// `stats::tally` of this rank's windows, reduced over `group`: the whole corpus's statistic, on every rank.
template <typename S>
S tally(S stat, models::CausalLM& model, const std::string& layer, io::CorpusReader& corpus, ProcessGroup& group,
        const stats::TallyOptions& options = {},
        const std::function<torch::Tensor(const torch::Tensor&)>& feed = stats::token_rows) {
  check_split(corpus, group);
  return reduce(stats::tally(std::move(stat), model, layer, corpus, options, feed), group);
}

}  // namespace baukit::distributed
