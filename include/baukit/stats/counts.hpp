/// @file stats/counts.hpp
/// @brief Running counts: `Bincount` (how often each non-negative integer occurs: token ids, top-1 indices) and
/// `Histogram` (values in equal-width bins over a fixed range, with the values below and above it counted apart).
/// Counts are exact integers, so merging shards gives exactly one pass's counts.
///
/// @code
/// baukit::stats::Bincount tokens;
/// tokens.add(ids);                          // any shape of integers >= 0
/// baukit::stats::Histogram activations(baukit::stats::HistogramOptions(-10, 10, 200));
/// activations.add(hidden);                  // every value of any shape
/// torch::Tensor counts = activations.counts();  // [200], int64
/// @endcode
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <baukit/stats/stat.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

namespace baukit::stats {

/// The running count of each non-negative integer value, as `torch::bincount` of everything added.
class Bincount : public Stat<Bincount> {
 public:
  static constexpr const char* kName = "Bincount";  ///< The statistic's name in saved files.

  /// Adds every value of `values` (an integer tensor of any shape, all >= 0).
  void add(const torch::Tensor& values) {
    if (!values.defined() || torch::isFloatingType(values.scalar_type()) || values.scalar_type() == torch::kBool)
      throw std::invalid_argument("Bincount.add: the values must be an integer tensor");
    const auto flat = values.detach().reshape({-1}).to(torch::kInt64);
    if (!flat.numel()) return;
    if (flat.min().item<int64_t>() < 0)
      throw std::invalid_argument(
          fmt::format("Bincount.add: the values hold {}, but counts are of values >= 0", flat.min().item<int64_t>()));
    add_counts(torch::bincount(flat));
  }
  /// Adds `other`'s counts.
  void merge(const Bincount& other) {
    if (other.counts_.defined()) add_counts(other.counts_);
  }
  /// Values seen.
  [[nodiscard]] int64_t count() const { return counts_.defined() ? counts_.sum().item<int64_t>() : 0; }
  /// The count of each value `0 .. largest seen` (int64).
  [[nodiscard]] torch::Tensor bincount() const {
    return counts_.defined() ? counts_ : torch::zeros({0}, torch::kInt64);
  }

  /// The state (`counts`).
  [[nodiscard]] StatState state() const { return {{"counts", bincount()}}; }
  /// A `Bincount` from a state (`path` names its file in errors).
  static Bincount from_state(const std::map<std::string, torch::Tensor>& state,
                             const std::filesystem::path& path = {}) {
    Bincount stat;
    const auto counts = detail::state_tensor(state, "counts", torch::kInt64, 1, path);
    if (counts.numel() && counts.min().item<int64_t>() < 0)
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path, "'counts' holds a negative count");
    if (counts.numel()) stat.counts_ = counts;
    return stat;
  }

 private:
  void add_counts(const torch::Tensor& counts) {
    if (!counts_.defined()) {
      counts_ = counts.to(torch::kInt64).clone();
      return;
    }
    const auto size = std::max(counts_.size(0), counts.size(0));
    auto sum = torch::zeros({size}, counts_.options());
    sum.slice(0, 0, counts_.size(0)) += counts_;
    sum.slice(0, 0, counts.size(0)) += counts.to(counts_.device());
    counts_ = sum;
  }

  torch::Tensor counts_;
};

/// A histogram's range and bins.
struct HistogramOptions {
  /// `bins` equal-width bins over `[low, high]`.
  HistogramOptions(double low, double high, int64_t bins) : low_(low), high_(high), bins_(bins) {}
  /// The lowest value binned.
  TORCH_ARG(double, low);
  /// The highest value binned (the last bin includes it).
  TORCH_ARG(double, high);
  /// The number of bins.
  TORCH_ARG(int64_t, bins);
};

/// The running histogram of every value added, over a fixed range: bin `i` holds `low + i w <= v < low + (i + 1)
/// w` (`w = (high - low) / bins`; the last bin also holds `high`), as `torch::histc` bins them; values outside the
/// range are counted in `below` and `above`.
class Histogram : public Stat<Histogram> {
 public:
  static constexpr const char* kName = "Histogram";  ///< The statistic's name in saved files.

  /// An empty histogram.
  explicit Histogram(const HistogramOptions& options) : options_(options) {
    if (!(options.low() < options.high()) || !std::isfinite(options.low()) || !std::isfinite(options.high()))
      throw std::invalid_argument(
          fmt::format("Histogram: the range [{}, {}] must be finite and not empty", options.low(), options.high()));
    if (options.bins() < 1)
      throw std::invalid_argument(fmt::format("Histogram: {} bins; at least one is needed", options.bins()));
    counts_ = torch::zeros({options.bins()}, torch::kInt64);
  }

  /// Adds every value of `values` (any shape; NaN and infinity are refused).
  void add(const torch::Tensor& values) {
    std::vector<int64_t> ignored;
    const auto flat =
        detail::feature_rows(kName, values.defined() ? values.reshape({-1, 1}) : values, ignored).reshape({-1});
    if (!flat.numel()) return;
    const auto inside = (flat >= options_.low()) & (flat <= options_.high());
    below_ += (flat < options_.low()).sum().item<int64_t>();
    above_ += (flat > options_.high()).sum().item<int64_t>();
    const auto bins = static_cast<double>(options_.bins());
    auto bin = ((flat.masked_select(inside) - options_.low()) * bins / (options_.high() - options_.low()))
                   .floor()
                   .to(torch::kInt64)
                   .clamp_max(options_.bins() - 1);
    counts_ = counts_ + torch::bincount(bin.cpu(), {}, options_.bins());  // not in place: copies stay apart
  }
  /// Adds `other`'s counts; both must have the same range and bins.
  void merge(const Histogram& other) {
    if (other.options_.low() != options_.low() || other.options_.high() != options_.high() ||
        other.options_.bins() != options_.bins())
      throw std::invalid_argument(fmt::format("Histogram.merge: [{}, {}] in {} bins and [{}, {}] in {} bins differ",
                                              options_.low(), options_.high(), options_.bins(), other.options_.low(),
                                              other.options_.high(), other.options_.bins()));
    counts_ = counts_ + other.counts_;
    below_ += other.below_;
    above_ += other.above_;
  }
  /// Values seen, inside the range or not.
  [[nodiscard]] int64_t count() const { return counts_.sum().item<int64_t>() + below_ + above_; }
  /// The count in each bin `[bins]` (int64).
  [[nodiscard]] const torch::Tensor& counts() const { return counts_; }
  /// The bins' edges `[bins + 1]` (float64).
  [[nodiscard]] torch::Tensor edges() const {
    return torch::linspace(options_.low(), options_.high(), options_.bins() + 1, torch::kFloat64);
  }
  /// Values below `low`.
  [[nodiscard]] int64_t below() const { return below_; }
  /// Values above `high`.
  [[nodiscard]] int64_t above() const { return above_; }
  /// The range and bins.
  [[nodiscard]] const HistogramOptions& options() const { return options_; }

  /// The state (`counts`, `range`: low and high, `outside`: below and above).
  [[nodiscard]] StatState state() const {
    return {{"counts", counts_},
            {"range", torch::tensor({options_.low(), options_.high()}, torch::kFloat64)},
            {"outside", torch::tensor({below_, above_}, torch::kInt64)}};
  }
  /// A `Histogram` from a state (`path` names its file in errors).
  static Histogram from_state(const std::map<std::string, torch::Tensor>& state,
                              const std::filesystem::path& path = {}) {
    const auto counts = detail::state_tensor(state, "counts", torch::kInt64, 1, path);
    const auto range = detail::state_tensor(state, "range", torch::kFloat64, 1, path);
    const auto outside = detail::state_tensor(state, "outside", torch::kInt64, 1, path);
    if (range.numel() != 2 || outside.numel() != 2 || counts.numel() < 1)
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                                "'range' and 'outside' need two values each, 'counts' one or more");
    Histogram stat(HistogramOptions(range[0].item<double>(), range[1].item<double>(), counts.numel()));
    stat.counts_ = counts;
    stat.below_ = outside[0].item<int64_t>();
    stat.above_ = outside[1].item<int64_t>();
    if (counts.min().item<int64_t>() < 0 || stat.below_ < 0 || stat.above_ < 0)
      throw io::CheckpointError(io::CheckpointErrorKind::shape, path, "a negative count");
    return stat;
  }

 private:
  HistogramOptions options_;
  torch::Tensor counts_;
  int64_t below_ = 0, above_ = 0;
};

}  // namespace baukit::stats
