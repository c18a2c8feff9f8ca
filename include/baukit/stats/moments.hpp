/// @file stats/moments.hpp
/// @brief Running moments: `Mean`, `Variance`, `Covariance` (centred, numerically stable) and `SecondMoment`
/// (`E[x xᵀ]`, not centred). Each batch's own mean and centred sums are computed first and then combined with what
/// came before by Chan, Golub and LeVeque's pairwise update (1983): `delta = mean_b - mean_a`,
/// `M2 = M2_a + M2_b + delta deltaᵀ n_a n_b / n`. That is also `merge`, so shards merged give one pass's result
/// within rounding, and data far from zero (a mean of 1e8 with unit spread) keeps its variance, which a sum of
/// squares loses.
///
/// @code
/// baukit::stats::Covariance covariance;
/// for (const auto& batch : batches) covariance.add(batch);  // [samples, features]
/// torch::Tensor c = covariance.covariance();                  // [features, features], float64
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/stats/stat.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace baukit::stats {

namespace detail {

/// The count, mean and centred second moment (a vector of per-feature sums of squares, or with `full`
/// the `[D, D]` matrix) of a set of samples, combined pairwise: the state of `Variance` and `Covariance`.
struct CentredMoments {
  int64_t count = 0;
  torch::Tensor mean;  ///< `[D]`.
  torch::Tensor m2;    ///< `[D]` or `[D, D]`.

  static CentredMoments of_rows(const torch::Tensor& rows, bool full) {
    const auto mean = rows.mean(0);
    const auto centred = rows - mean;
    return {rows.size(0), mean, full ? centred.t().mm(centred) : centred.square().sum(0)};
  }

  void combine(const CentredMoments& other) {
    if (other.count == 0) return;
    if (count == 0) {
      *this = {other.count, other.mean.clone(), other.m2.clone()};
      return;
    }
    const auto n = count + other.count;
    const auto delta = other.mean.to(mean.device()) - mean;
    const double weight = static_cast<double>(count) * static_cast<double>(other.count) / static_cast<double>(n);
    m2 = m2 + other.m2.to(m2.device()) + (m2.dim() == 2 ? torch::outer(delta, delta) : delta.square()) * weight;
    mean = mean + delta * (static_cast<double>(other.count) / static_cast<double>(n));
    count = n;
  }
};

}  // namespace detail

/// The running mean of each feature.
class Mean : public Stat<Mean> {
 public:
  static constexpr const char* kName = "Mean";  ///< The statistic's name in saved files.

  /// Adds a batch `[samples, features...]`.
  void add(const torch::Tensor& batch) {
    const auto rows = detail::feature_rows(kName, batch, features_);
    if (rows.size(0)) combine(rows.size(0), rows.mean(0));
  }
  /// Adds what `other` has seen, as if its batches had been added here.
  void merge(const Mean& other) {
    detail::check_merge(kName, features_, other.features_);
    if (features_.empty()) features_ = other.features_;
    if (other.count_) combine(other.count_, other.mean_);
  }
  /// Samples seen.
  [[nodiscard]] int64_t count() const { return count_; }
  /// The mean, shaped as the features (float64).
  [[nodiscard]] torch::Tensor mean() const {
    if (!count_) throw std::invalid_argument("Mean: no samples yet");
    return mean_.reshape(features_);
  }

  /// The state (`count`, `features`, `mean`).
  [[nodiscard]] StatState state() const {
    auto state = detail::count_and_features_state(count_, features_);
    state.emplace_back("mean", mean_.defined() ? mean_ : torch::zeros({0}, torch::kFloat64));
    return state;
  }
  /// A `Mean` from a state (`path` names its file in errors).
  static Mean from_state(const std::map<std::string, torch::Tensor>& state, const std::filesystem::path& path = {}) {
    Mean mean;
    std::tie(mean.count_, mean.features_) = detail::count_and_features(state, path);
    mean.mean_ = detail::state_tensor(state, "mean", torch::kFloat64, 1, path);
    if (mean.count_ == 0)
      mean.mean_ = torch::Tensor();
    else if (mean.mean_.numel() != detail::feature_count(mean.features_))
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path, "'mean' does not match 'features'");
    return mean;
  }

 private:
  void combine(int64_t count, const torch::Tensor& mean) {
    if (count_ == 0) {
      mean_ = mean.clone();
    } else {
      mean_ = mean_ +
              (mean.to(mean_.device()) - mean_) * (static_cast<double>(count) / static_cast<double>(count_ + count));
    }
    count_ += count;
  }

  int64_t count_ = 0;
  std::vector<int64_t> features_;
  torch::Tensor mean_;
};

namespace detail {

/// `Variance` and `Covariance`: the centred moments, added and merged pairwise, saved and loaded.
template <typename Derived, bool kFull>
class CentredStat : public Stat<Derived> {
 public:
  /// Adds a batch `[samples, features...]`.
  void add(const torch::Tensor& batch) {
    const auto rows = feature_rows(Derived::kName, batch, features_);
    if (rows.size(0)) moments_.combine(CentredMoments::of_rows(rows, kFull));
  }
  /// Adds what `other` has seen, as if its batches had been added here.
  void merge(const Derived& other) {
    check_merge(Derived::kName, features_, other.features_);
    if (features_.empty()) features_ = other.features_;
    moments_.combine(other.moments_);
  }
  /// Samples seen.
  [[nodiscard]] int64_t count() const { return moments_.count; }
  /// The mean, shaped as the features (float64).
  [[nodiscard]] torch::Tensor mean() const {
    if (!moments_.count) throw std::invalid_argument(fmt::format("{}: no samples yet", Derived::kName));
    return moments_.mean.reshape(features_);
  }

  /// The state (`count`, `features`, `mean`, `m2`: the centred sums of squares, or of products).
  [[nodiscard]] StatState state() const {
    auto state = count_and_features_state(moments_.count, features_);
    const auto empty = torch::zeros(kFull ? std::vector<int64_t>{0, 0} : std::vector<int64_t>{0}, torch::kFloat64);
    state.emplace_back("mean", moments_.count ? moments_.mean : torch::zeros({0}, torch::kFloat64));
    state.emplace_back("m2", moments_.count ? moments_.m2 : empty);
    return state;
  }
  /// The statistic from a state (`path` names its file in errors).
  static Derived from_state(const std::map<std::string, torch::Tensor>& state, const std::filesystem::path& path = {}) {
    Derived stat;
    std::tie(stat.moments_.count, stat.features_) = count_and_features(state, path);
    stat.moments_.mean = state_tensor(state, "mean", torch::kFloat64, 1, path);
    stat.moments_.m2 = state_tensor(state, "m2", torch::kFloat64, kFull ? 2 : 1, path);
    const auto d = feature_count(stat.features_);
    if (stat.moments_.count == 0) {
      stat.moments_ = {};
    } else if (stat.moments_.mean.numel() != d || stat.moments_.m2.size(0) != d ||
               (kFull && stat.moments_.m2.size(1) != d)) {
      throw io::CheckpointError(
          io::CheckpointErrorKind::shape, path,
          fmt::format("'mean' {} and 'm2' {} do not match features {}", shape_text(stat.moments_.mean.sizes()),
                      shape_text(stat.moments_.m2.sizes()), shape_text(stat.features_)));
    }
    return stat;
  }

 protected:
  /// `m2 / (count - 1)` (or `/ count` when not `unbiased`).
  [[nodiscard]] torch::Tensor scaled_m2(bool unbiased) const {
    const auto divisor = moments_.count - (unbiased ? 1 : 0);
    if (divisor < 1)
      throw std::invalid_argument(fmt::format("{}: {} samples are too few for a{} variance", Derived::kName,
                                              moments_.count, unbiased ? "n unbiased" : ""));
    return moments_.m2 / static_cast<double>(divisor);
  }

  std::vector<int64_t> features_;  ///< The feature shape (empty before the first batch).
  CentredMoments moments_;         ///< What has been seen.
};

}  // namespace detail

/// The running mean and variance of each feature.
class Variance : public detail::CentredStat<Variance, false> {
 public:
  static constexpr const char* kName = "Variance";  ///< The statistic's name in saved files.

  /// The variance of each feature, unbiased (`/ (n - 1)`) unless asked otherwise; shaped as the features.
  [[nodiscard]] torch::Tensor variance(bool unbiased = true) const { return scaled_m2(unbiased).reshape(features_); }
  /// The standard deviation of each feature.
  [[nodiscard]] torch::Tensor stdev(bool unbiased = true) const { return variance(unbiased).sqrt(); }
};

/// The running mean and the full covariance matrix of the features (flattened: `[D, D]` for `D` features).
class Covariance : public detail::CentredStat<Covariance, true> {
 public:
  static constexpr const char* kName = "Covariance";  ///< The statistic's name in saved files.

  /// The covariance matrix `[D, D]`, unbiased unless asked otherwise.
  [[nodiscard]] torch::Tensor covariance(bool unbiased = true) const { return scaled_m2(unbiased); }
  /// The correlation matrix `[D, D]`.
  [[nodiscard]] torch::Tensor correlation() const {
    const auto c = scaled_m2(true);
    const auto inverse_stdev = c.diagonal().sqrt().reciprocal();
    return inverse_stdev.unsqueeze(1) * c * inverse_stdev.unsqueeze(0);
  }
  /// The variance of each feature (the diagonal), shaped as the features.
  [[nodiscard]] torch::Tensor variance(bool unbiased = true) const {
    return scaled_m2(unbiased).diagonal().reshape(features_);
  }
  /// The standard deviation of each feature.
  [[nodiscard]] torch::Tensor stdev(bool unbiased = true) const { return variance(unbiased).sqrt(); }
};

/// The running second moment `E[x xᵀ]` (not centred) of the features, `[D, D]`.
class SecondMoment : public Stat<SecondMoment> {
 public:
  static constexpr const char* kName = "SecondMoment";  ///< The statistic's name in saved files.

  /// Adds a batch `[samples, features...]`.
  void add(const torch::Tensor& batch) {
    const auto rows = detail::feature_rows(kName, batch, features_);
    if (!rows.size(0)) return;
    sum_ = sum_.defined() ? sum_ + rows.t().mm(rows) : rows.t().mm(rows);
    count_ += rows.size(0);
  }
  /// Adds what `other` has seen.
  void merge(const SecondMoment& other) {
    detail::check_merge(kName, features_, other.features_);
    if (features_.empty()) features_ = other.features_;
    if (!other.count_) return;
    sum_ = sum_.defined() ? sum_ + other.sum_.to(sum_.device()) : other.sum_.clone();
    count_ += other.count_;
  }
  /// Samples seen.
  [[nodiscard]] int64_t count() const { return count_; }
  /// `E[x xᵀ]`, `[D, D]` (float64).
  [[nodiscard]] torch::Tensor moment() const {
    if (!count_) throw std::invalid_argument("SecondMoment: no samples yet");
    return sum_ / static_cast<double>(count_);
  }

  /// The state (`count`, `features`, `sum`: the sum of `x xᵀ`).
  [[nodiscard]] StatState state() const {
    auto state = detail::count_and_features_state(count_, features_);
    state.emplace_back("sum", count_ ? sum_ : torch::zeros({0, 0}, torch::kFloat64));
    return state;
  }
  /// A `SecondMoment` from a state (`path` names its file in errors).
  static SecondMoment from_state(const std::map<std::string, torch::Tensor>& state,
                                 const std::filesystem::path& path = {}) {
    SecondMoment stat;
    std::tie(stat.count_, stat.features_) = detail::count_and_features(state, path);
    stat.sum_ = detail::state_tensor(state, "sum", torch::kFloat64, 2, path);
    const auto d = detail::feature_count(stat.features_);
    if (stat.count_ == 0)
      stat.sum_ = torch::Tensor();
    else if (stat.sum_.size(0) != d || stat.sum_.size(1) != d)
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path, "'sum' does not match 'features'");
    return stat;
  }

 private:
  int64_t count_ = 0;
  std::vector<int64_t> features_;
  torch::Tensor sum_;
};

}  // namespace baukit::stats
