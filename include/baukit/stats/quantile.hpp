/// @file stats/quantile.hpp
/// @brief `Quantile`: streaming quantiles of each feature in bounded memory, by a compactor sketch (Manku,
/// Rajagopalan and Lindsay 1998; Karnin, Lang and Liberty 2016). Samples go to level 0; a level that reaches
/// `resolution` values is sorted and every other value, from a random offset, moves up a level with twice the
/// weight. Each compaction moves any rank by at most its level's weight, so the rank of a returned value is within
/// `levels × count / resolution` of the rank asked for (the stated bound; with random offsets the errors cancel and
/// are usually far smaller), and exact while `count <= resolution`. Memory is `features × resolution × levels`
/// values. The minimum and maximum are kept exactly. Merging sketches keeps the bound (a merge is a compaction
/// like any other), but is not bit-equal to one pass.
///
/// @code
/// baukit::stats::Quantile quantile;                       // resolution 1024
/// quantile.add(activations);                              // [samples, features]
/// torch::Tensor q = quantile.quantiles({0.01, 0.5, 0.99});  // [features, 3]
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/stats/stat.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace baukit::stats {

/// Streaming quantiles of each feature; see the file's description for the error bound.
class Quantile : public Stat<Quantile> {
 public:
  static constexpr const char* kName = "Quantile";  ///< The statistic's name in saved files.

  /// A sketch keeping up to `resolution` values per level and feature (at least 8), its random offsets drawn
  /// from `seed`.
  explicit Quantile(int64_t resolution = 1024, uint64_t seed = 1) : resolution_(resolution), seed_(seed) {
    if (resolution < 8) throw std::invalid_argument(fmt::format("Quantile: resolution {} is below 8", resolution));
  }

  /// Adds a batch `[samples, features...]`.
  void add(const torch::Tensor& batch) {
    const auto rows = detail::feature_rows(kName, batch, features_);
    if (!rows.size(0)) return;
    const auto columns = rows.t();
    min_ = min_.defined() ? torch::minimum(min_, std::get<0>(columns.min(1))) : std::get<0>(columns.min(1));
    max_ = max_.defined() ? torch::maximum(max_, std::get<0>(columns.max(1))) : std::get<0>(columns.max(1));
    // In pieces of at most `resolution`, so no level holds more than twice that before it is compacted.
    for (int64_t start = 0; start < columns.size(1); start += resolution_) {
      append(0, columns.slice(1, start, std::min(columns.size(1), start + resolution_)));
      count_ += std::min(columns.size(1), start + resolution_) - start;
    }
  }
  /// Adds what `other` has seen (the same resolution): level by level, compacting what overflows.
  void merge(const Quantile& other) {
    detail::check_merge(kName, features_, other.features_);
    if (other.resolution_ != resolution_)
      throw std::invalid_argument(
          fmt::format("Quantile.merge: resolutions {} and {} differ", resolution_, other.resolution_));
    if (features_.empty()) features_ = other.features_;
    if (!other.count_) return;
    min_ = min_.defined() ? torch::minimum(min_, other.min_) : other.min_;
    max_ = max_.defined() ? torch::maximum(max_, other.max_) : other.max_;
    for (std::size_t level = 0; level < other.levels_.size(); ++level)
      if (other.levels_[level].size(1)) append(static_cast<int64_t>(level), other.levels_[level]);
    count_ += other.count_;
  }
  /// Samples seen.
  [[nodiscard]] int64_t count() const { return count_; }
  /// The sketch's levels (each value at level `l` stands for `2^l` samples).
  [[nodiscard]] int64_t levels() const { return static_cast<int64_t>(levels_.size()); }
  /// The stated bound on the rank error of any quantile: `levels × count / resolution` (0 while exact).
  [[nodiscard]] double rank_error_bound() const {
    return levels_.size() > 1
               ? static_cast<double>(levels_.size()) * static_cast<double>(count_) / static_cast<double>(resolution_)
               : 0.0;
  }

  /// The quantiles `qs` (each in [0, 1]) of each feature, `[D, qs.size()]` (float64), interpolated linearly
  /// between neighbouring values as `torch::quantile` does (which this equals while the sketch is exact).
  [[nodiscard]] torch::Tensor quantiles(const std::vector<double>& qs) const {
    if (!count_) throw std::invalid_argument("Quantile: no samples yet");
    for (const double q : qs)
      if (!(q >= 0 && q <= 1)) throw std::invalid_argument(fmt::format("Quantile: {} is not in [0, 1]", q));
    std::vector<torch::Tensor> values, weights;
    for (std::size_t level = 0; level < levels_.size(); ++level) {
      values.push_back(levels_[level]);
      weights.push_back(
          torch::full({levels_[level].size(1)}, std::ldexp(1.0, static_cast<int>(level)), levels_[level].options()));
    }
    const auto [sorted, order] = torch::cat(values, 1).sort(1);
    const auto cumulative = torch::cat(weights).index({order}).cumsum(1);  // [D, M]
    const double total = cumulative[0][-1].item<double>();
    const auto position = torch::tensor(qs, sorted.options()) * (total - 1);  // in the expanded sequence
    auto value_at = [&](const torch::Tensor& at) {  // the value covering expanded position `at` (an integer)
      const auto index = torch::searchsorted(cumulative, at.unsqueeze(0).expand({sorted.size(0), -1}).contiguous(),
                                             false, /*right=*/true);
      return sorted.gather(1, index.clamp_max(sorted.size(1) - 1));
    };
    const auto low = position.floor(), high = position.ceil();
    const auto at_low = value_at(low);
    auto result = at_low + (value_at(high) - at_low) * (position - low);
    // The ends are known exactly.
    for (std::size_t i = 0; i < qs.size(); ++i) {
      if (qs[i] == 0) result.select(1, static_cast<int64_t>(i)).copy_(min_);
      if (qs[i] == 1) result.select(1, static_cast<int64_t>(i)).copy_(max_);
    }
    return result;
  }
  /// The median of each feature, shaped as the features.
  [[nodiscard]] torch::Tensor median() const { return quantiles({0.5}).reshape(features_); }
  /// The smallest value of each feature (exact).
  [[nodiscard]] torch::Tensor min() const {
    if (!count_) throw std::invalid_argument("Quantile: no samples yet");
    return min_.reshape(features_);
  }
  /// The largest value of each feature (exact).
  [[nodiscard]] torch::Tensor max() const {
    if (!count_) throw std::invalid_argument("Quantile: no samples yet");
    return max_.reshape(features_);
  }

  /// The state (`count`, `features`, `resolution`, `seed`, `compactions`, `min`, `max`, `level.L` per level).
  [[nodiscard]] StatState state() const {
    auto state = detail::count_and_features_state(count_, features_);
    state.emplace_back("resolution", torch::tensor(resolution_, torch::kInt64));
    state.emplace_back("seed", torch::tensor(static_cast<int64_t>(seed_), torch::kInt64));
    state.emplace_back("compactions", torch::tensor(compactions_, torch::kInt64));
    state.emplace_back("min", count_ ? min_ : torch::zeros({0}, torch::kFloat64));
    state.emplace_back("max", count_ ? max_ : torch::zeros({0}, torch::kFloat64));
    for (std::size_t level = 0; level < levels_.size(); ++level)
      state.emplace_back(fmt::format("level.{}", level), levels_[level]);
    return state;
  }
  /// A `Quantile` from a state (`path` names its file in errors).
  static Quantile from_state(const std::map<std::string, torch::Tensor>& state,
                             const std::filesystem::path& path = {}) {
    Quantile stat(detail::state_tensor(state, "resolution", torch::kInt64, 0, path).item<int64_t>(),
                  static_cast<uint64_t>(detail::state_tensor(state, "seed", torch::kInt64, 0, path).item<int64_t>()));
    std::tie(stat.count_, stat.features_) = detail::count_and_features(state, path);
    stat.compactions_ = detail::state_tensor(state, "compactions", torch::kInt64, 0, path).item<int64_t>();
    if (!stat.count_) return stat;
    const auto d = detail::feature_count(stat.features_);
    stat.min_ = detail::state_tensor(state, "min", torch::kFloat64, 1, path);
    stat.max_ = detail::state_tensor(state, "max", torch::kFloat64, 1, path);
    int64_t weight = 0;
    for (int64_t level = 0; state.count(fmt::format("level.{}", level)); ++level) {
      const auto name = fmt::format("level.{}", level);
      const auto values = detail::state_tensor(state, name, torch::kFloat64, 2, path);
      if (values.size(0) != d || values.size(1) > 2 * stat.resolution_)
        throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                                  fmt::format("'{}' is {}; [{}, at most {}] was expected", name,
                                              detail::shape_text(values.sizes()), d, 2 * stat.resolution_));
      if (level >= 62)  // 2^62 samples: no count reaches it, so a file with more levels is corrupt
        throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                                  fmt::format("'{}': more levels than any count of samples needs", name));
      stat.levels_.push_back(values);
      weight += values.size(1) << level;
    }
    if (stat.min_.numel() != d || stat.max_.numel() != d || weight != stat.count_)
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                                fmt::format("the levels stand for {} samples, but count is {}", weight, stat.count_));
    return stat;
  }

 private:
  // Puts `values` [D, m] at `level` and compacts the levels that are full.
  void append(int64_t level, const torch::Tensor& values) {
    while (static_cast<int64_t>(levels_.size()) <= level)
      levels_.push_back(torch::empty({values.size(0), 0}, values.options()));
    auto& at = levels_[static_cast<std::size_t>(level)];
    at = torch::cat({at, values.to(at.device())}, 1);
    if (at.size(1) < resolution_) return;
    // Sort, keep every other value of an even count from a random offset; an odd one out stays here.
    const auto sorted = std::get<0>(at.sort(1));
    const auto even = sorted.size(1) / 2 * 2;
    std::mt19937_64 random(seed_ + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(++compactions_));
    const auto promoted = sorted.slice(1, static_cast<int64_t>(random() & 1), even, 2);
    at = sorted.slice(1, even);
    append(level + 1, promoted);
  }

  int64_t resolution_;
  uint64_t seed_;
  int64_t count_ = 0, compactions_ = 0;
  std::vector<int64_t> features_;
  std::vector<torch::Tensor> levels_;  // level l: [D, m_l], each value weighing 2^l
  torch::Tensor min_, max_;
};

}  // namespace baukit::stats
