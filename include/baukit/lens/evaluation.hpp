/// @file lens/evaluation.hpp
/// @brief The lens over a corpus: for every layer of the logit lens, the delta lens and any learned lens, the
/// mean over a corpus's tokens of KL(final ‖ layer), the entropy, the cross-entropy against the true next token,
/// the top-1 agreement with the final layer and the true next token's rank, each with a 95% confidence interval.
/// Every position of a window but its last is scored (the last has no next token in the window). Each window's
/// mean is one sample of a `stats::Variance` over features `[views, layers, measures]`: windows are equally long,
/// so the mean of their means is the mean over tokens, and the interval (1.96 standard errors of the window means)
/// allows for tokens of one window not being independent. The variance merges exactly, so ranks of a job reduce
/// it (`distributed::reduce(evaluation.windows, group)`), and `tally_windows` gives the cache, checkpoints and
/// progress line.
///
/// @code
/// baukit::io::CorpusReader corpus("held-out.txt", tokenizer, baukit::io::CorpusOptions().window(64));
/// auto evaluation = baukit::evaluate_lens(*model, corpus);
/// double kl = evaluation.mean("lens", 3, "kl_to_final");  // nats, at block 3's output
/// @endcode
#pragma once

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/io/corpus.hpp>
#include <baukit/kernels/lens_statistics.hpp>
#include <baukit/lens/decoder.hpp>
#include <baukit/lens/learned.hpp>
#include <baukit/lens/stream.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/stats/moments.hpp>
#include <baukit/stats/tally.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// One measure of the evaluation, per view and layer.
struct EvalMeasure {
  std::string key;    ///< Its field in the JSON ("kl_to_final").
  std::string label;  ///< Its axis label on the page.
  bool log_scale;     ///< Drawn on a logarithmic axis (the rank).
};

/// The measures, in the order of the features' last dimension.
inline const std::vector<EvalMeasure>& eval_measures() {
  static const std::vector<EvalMeasure> measures{
      {"kl_to_final", "KL(final ‖ layer), nats", false},
      {"entropy", "entropy, nats", false},
      {"cross_entropy", "cross-entropy against the next token, nats", false},
      {"top1_agreement", "top-1 agreement with the final layer", false},
      {"next_token_rank", "rank of the true next token", true},
  };
  return measures;
}

/// How `evaluate_lens` runs.
struct LensEvalOptions {
  /// Learned lenses to evaluate besides the logit and delta lenses (their views named by `LearnedLens::name`).
  TORCH_ARG(std::vector<std::shared_ptr<const LearnedLens>>, learned_lenses) = {};
  /// The most memory one chunk of decoded logits may take.
  TORCH_ARG(int64_t, chunk_bytes) = int64_t{256} << 20;
  /// Batching, `max_windows`, cache, checkpoints and progress, as for `tally`. One window per forward by default:
  /// a float32 product's rounding depends on its rows, so only then are the numbers of a job of any number of
  /// processes the same within float64 rounding.
  TORCH_ARG(stats::TallyOptions, tally) = stats::TallyOptions().batch_size(1);
};

/// The result of `evaluate_lens`: what was measured, and the running statistics of the window means.
struct LensEvaluation {
  std::vector<std::string> views;        ///< "lens", "delta_lens", then the learned lenses' names.
  std::vector<std::string> view_labels;  ///< "logit lens", "delta lens", "tuned lens", ...
  int64_t layers = 0;                    ///< Blocks (rows per view).
  int64_t window = 0;                    ///< Tokens per window (window - 1 are scored).
  stats::Variance windows;               ///< Window means, features `[views, layers, measures]`.
  double forward_seconds = 0;            ///< This process's time in the forwards.
  double decode_seconds = 0;             ///< And in decoding and the statistics.

  /// The index of view `name`; an error names the views there are.
  [[nodiscard]] int64_t view_index(const std::string& name) const {
    const auto it = std::find(views.begin(), views.end(), name);
    if (it == views.end())
      throw std::invalid_argument(
          fmt::format("evaluation: no view '{}' (there are: {})", name, fmt::join(views, ", ")));
    return it - views.begin();
  }
  /// The index of measure `key` in `eval_measures()`.
  [[nodiscard]] static int64_t measure_index(const std::string& key) {
    const auto& measures = eval_measures();
    for (std::size_t m = 0; m < measures.size(); ++m)
      if (measures[m].key == key) return static_cast<int64_t>(m);
    throw std::invalid_argument(fmt::format("evaluation: no measure '{}'", key));
  }
  /// Windows evaluated.
  [[nodiscard]] int64_t window_count() const { return windows.count(); }
  /// Tokens scored.
  [[nodiscard]] int64_t tokens() const { return windows.count() * (window - 1); }
  /// The mean of `measure` at `layer` of `view`.
  [[nodiscard]] double mean(const std::string& view, int64_t layer, const std::string& measure) const {
    return windows.mean()[view_index(view)][layer][measure_index(measure)].item<double>();
  }
  /// Half the width of its 95% confidence interval (NaN with fewer than two windows).
  [[nodiscard]] double ci95(const std::string& view, int64_t layer, const std::string& measure) const {
    return half_widths()[view_index(view)][layer][measure_index(measure)].item<double>();
  }
  /// 1.96 standard errors of every feature's mean, `[views, layers, measures]`.
  [[nodiscard]] torch::Tensor half_widths() const {
    if (windows.count() < 2) return torch::full_like(windows.mean(), std::nan(""));
    return 1.96 * (windows.variance() / static_cast<double>(windows.count())).sqrt();
  }
};

namespace detail {

/// The measures of one decoded position into `out[measures]`: the kernels' statistics for logits `z` against the
/// final distribution `q` (with `sum q log q` = `final_qlogq` and top-1 `final_top1`) and the next token `next`.
inline void eval_position(const float* z, const float* q, int64_t vocab, int64_t final_top1, float final_qlogq,
                          int64_t next, double* out) {
  kernels::DistributionStatistics stats;
  kernels::cell_statistics_from_logits(z, q, vocab, final_top1, next, 1, stats);
  // -log p[next] = logsumexp(z) - z[next], with logsumexp(z) = z[top] - log p[top] from the top token.
  const double log_sum = static_cast<double>(z[stats.tokens[0]]) - std::log(static_cast<double>(stats.probs[0]));
  out[0] = std::max(0.0, static_cast<double>(final_qlogq) + stats.cross_entropy);
  out[1] = stats.entropy;
  out[2] = log_sum - static_cast<double>(z[next]);
  out[3] = stats.tokens[0] == final_top1 ? 1.0 : 0.0;
  out[4] = static_cast<double>(stats.rank_of_target);
}

/// A fingerprint of a learned lens for the cache key: its translation of a fixed state at every layer.
inline std::string learned_lens_fingerprint(const LearnedLens& lens, int64_t layers, int64_t width) {
  const auto probe = torch::linspace(-1, 1, width, torch::kFloat32).unsqueeze(0);
  uint64_t hash = stats::detail::fnv1a(lens.name().data(), lens.name().size());
  for (int64_t l = 0; l + 1 < layers; ++l) {
    const auto out = lens.translate(probe, l).to(torch::kCPU, torch::kFloat32).contiguous();
    hash = stats::detail::fnv1a(out.data_ptr(), out.nbytes(), hash);
  }
  return fmt::format("{:016x}", hash);
}

}  // namespace detail

/// The lens's measures over this rank's windows of `corpus` (see the file's description); windows of at least two
/// tokens, no longer than the model takes.
inline LensEvaluation evaluate_lens(models::CausalLM& model, io::CorpusReader& corpus,
                                    const LensEvalOptions& options = {}) {
  torch::NoGradGuard no_grad;
  const int64_t window = corpus.options().window(), layers = model.num_layers(), width = model_width(model);
  if (window < 2 || window > model.max_positions())
    throw std::invalid_argument(
        fmt::format("evaluate_lens: windows of {} tokens; 2 to {} (the model's positions) "
                    "are possible",
                    window, model.max_positions()));
  LensEvaluation result;
  result.layers = layers;
  result.window = window;
  result.views = {"lens", "delta_lens"};
  result.view_labels = {"logit lens", "delta lens"};
  nlohmann::ordered_json key = {{"evaluation", 1}, {"model", stats::detail::model_fingerprint(model)}};
  for (const auto& learned : options.learned_lenses()) {
    if (!learned) throw std::invalid_argument("evaluate_lens: a learned lens is null");
    if (std::find(result.views.begin(), result.views.end(), learned->name()) != result.views.end())
      throw std::invalid_argument(fmt::format("evaluate_lens: two views are named '{}'", learned->name()));
    learned->check_fits(layers, width);
    result.views.push_back(learned->name());
    result.view_labels.push_back(learned->label());
    key["learned"].push_back({learned->name(), detail::learned_lens_fingerprint(*learned, layers, width)});
  }
  const auto views = static_cast<int64_t>(result.views.size());
  const auto measures = static_cast<int64_t>(eval_measures().size());
  const int64_t scored = window - 1;
  auto decoder = make_decoder(model, /*softmax=*/false);
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };

  result.windows = stats::tally_windows(
      stats::Variance(), corpus, std::move(key), options.tally(), "lens evaluation",
      [&](stats::Variance& stat, const torch::Tensor& ids) {
        auto started = Clock::now();
        std::vector<std::vector<int64_t>> prompts;
        for (int64_t b = 0; b < ids.size(0); ++b)
          prompts.emplace_back(ids[b].data_ptr<int64_t>(), ids[b].data_ptr<int64_t>() + window);
        torch::Tensor logits;
        const auto stream = residual_stream_batch(model, prompts, false, nullptr, &logits);  // [L+1, B, W, d]
        result.forward_seconds += seconds_since(started);
        const int64_t vocab = logits.size(-1);
        if (ids.max().item<int64_t>() >= vocab)
          throw std::invalid_argument(fmt::format("evaluate_lens: {} holds token {}, beyond the model's {} logits",
                                                  corpus.path().string(), ids.max().item<int64_t>(), vocab));
        started = Clock::now();
        auto window_means = torch::zeros({ids.size(0), views, layers, measures}, torch::kFloat64);
        for (int64_t b = 0; b < ids.size(0); ++b) {
          const auto states = stream.select(1, b).slice(0, 1).slice(1, 0, scored);  // [L, scored, d]
          std::vector<torch::Tensor> rows{states, states - stream.select(1, b).slice(0, 0, -1).slice(1, 0, scored)};
          for (const auto& learned : options.learned_lenses()) {
            std::vector<torch::Tensor> translated;
            for (int64_t l = 0; l < layers; ++l)
              translated.push_back(l + 1 < layers ? learned->translate(states[l], l) : states[l]);
            rows.push_back(torch::stack(translated));
          }
          const auto all_rows = torch::cat(rows);  // [views * L, scored, d]
          const auto final_probs = torch::softmax(logits[b].slice(0, 0, scored).to(torch::kFloat32), -1).cpu();
          const auto final_top1 = final_probs.argmax(-1).contiguous();
          const auto final_qlogq = torch::xlogy(final_probs, final_probs).sum(-1).to(torch::kFloat32).contiguous();
          const int64_t* next = ids[b].data_ptr<int64_t>() + 1;
          // Per (row, position) measures, then summed over positions in order: the same numbers whatever the
          // threads' split.
          auto per_position = torch::empty({all_rows.size(0), scored, measures}, torch::kFloat64);
          const int64_t chunk = std::max<int64_t>(1, options.chunk_bytes() / std::max<int64_t>(1, scored * vocab * 4));
          for (int64_t begin = 0; begin < all_rows.size(0); begin += chunk) {
            const int64_t end = std::min(all_rows.size(0), begin + chunk);
            const auto z = decoder->forward(all_rows.slice(0, begin, end))
                               .to(torch::kFloat32)
                               .reshape({-1, vocab})
                               .cpu()
                               .contiguous();
            at::parallel_for(0, (end - begin) * scored, 4, [&](int64_t first, int64_t last) {
              for (int64_t i = first; i < last; ++i) {
                const int64_t t = i % scored;
                detail::eval_position(z.data_ptr<float>() + i * vocab, final_probs.data_ptr<float>() + t * vocab, vocab,
                                      final_top1.data_ptr<int64_t>()[t], final_qlogq.data_ptr<float>()[t], next[t],
                                      per_position.data_ptr<double>() + (begin * scored + i) * measures);
              }
            });
          }
          window_means[b].copy_(per_position.mean(1).reshape({views, layers, measures}));
        }
        stat.add(window_means);
        result.decode_seconds += seconds_since(started);
      });
  return result;
}

/// The evaluation as JSON: per view, per measure, the mean and the 95% interval's half-width per layer (null
/// where undefined), and what was measured; `label` names the run on the page.
inline nlohmann::ordered_json to_json(const LensEvaluation& evaluation, const std::string& label = {}) {
  nlohmann::ordered_json json = {{"format", "baukit.lens_evaluation/1"}, {"label", label},
                                 {"window", evaluation.window},          {"windows", evaluation.window_count()},
                                 {"tokens", evaluation.tokens()},        {"layers", evaluation.layers}};
  json["measures"] = nlohmann::json::array();
  for (const auto& m : eval_measures())
    json["measures"].push_back({{"key", m.key}, {"label", m.label}, {"log_scale", m.log_scale}});
  const auto means = evaluation.windows.mean(), half = evaluation.half_widths();
  const auto number = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  auto& views = json["views"] = nlohmann::ordered_json::object();
  for (std::size_t v = 0; v < evaluation.views.size(); ++v) {
    auto& view = views[evaluation.views[v]] = {{"label", evaluation.view_labels[v]}};
    for (std::size_t m = 0; m < eval_measures().size(); ++m) {
      nlohmann::json mean = nlohmann::json::array(), ci95 = nlohmann::json::array();
      for (int64_t l = 0; l < evaluation.layers; ++l) {
        mean.push_back(number(means[static_cast<int64_t>(v)][l][static_cast<int64_t>(m)].item<double>()));
        ci95.push_back(number(half[static_cast<int64_t>(v)][l][static_cast<int64_t>(m)].item<double>()));
      }
      view[eval_measures()[m].key] = {{"mean", std::move(mean)}, {"ci95", std::move(ci95)}};
    }
  }
  json["seconds"] = {{"forward", evaluation.forward_seconds}, {"decode", evaluation.decode_seconds}};
  return json;
}

}  // namespace baukit
