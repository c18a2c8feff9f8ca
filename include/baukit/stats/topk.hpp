/// @file stats/topk.hpp
/// @brief `TopK`: for each feature, the `k` largest values seen and the samples they came from (a sample's index
/// counts every sample added before it), as Python baukit's `runningstats.TopK`: which inputs excite a neuron most.
/// Ties go to the earlier sample, so merging shards in order gives exactly one pass's values and indices.
///
/// @code
/// baukit::stats::TopK top(10);
/// top.add(activations);                      // [samples, features]
/// auto [values, indices] = top.topk();       // [features, 10] each: values (float64) and sample indices
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/stats/stat.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace baukit::stats {

/// The running top `k` values of each feature and their sample indices.
class TopK : public Stat<TopK> {
 public:
  static constexpr const char* kName = "TopK";  ///< The statistic's name in saved files.

  /// Keeps the `k` largest values per feature.
  explicit TopK(int64_t k) : k_(k) {
    if (k < 1) throw std::invalid_argument(fmt::format("TopK: k is {}; it must be positive", k));
  }

  /// Adds a batch `[samples, features...]`; its samples are numbered after those seen so far.
  void add(const torch::Tensor& batch) {
    const auto rows = detail::feature_rows(kName, batch, features_);
    if (!rows.size(0)) return;
    const auto indices = torch::arange(count_, count_ + rows.size(0), rows.options().dtype(torch::kInt64));
    keep(rows.t(), indices.unsqueeze(0).expand({rows.size(1), rows.size(0)}));
    count_ += rows.size(0);
  }
  /// Adds what `other` has seen, its samples numbered after this one's (merge shards in their order).
  void merge(const TopK& other) {
    detail::check_merge(kName, features_, other.features_);
    if (other.k_ != k_) throw std::invalid_argument(fmt::format("TopK.merge: k {} and {} differ", k_, other.k_));
    if (features_.empty()) features_ = other.features_;
    if (!other.count_) return;
    keep(other.values_, other.indices_ + count_);
    count_ += other.count_;
  }
  /// Samples seen.
  [[nodiscard]] int64_t count() const { return count_; }
  /// The `k` this keeps.
  [[nodiscard]] int64_t k() const { return k_; }
  /// Per feature (flattened), the largest values, largest first, and their samples' indices: `[D, min(k, count)]`
  /// each (float64, int64).
  [[nodiscard]] std::pair<torch::Tensor, torch::Tensor> topk() const {
    if (!count_) throw std::invalid_argument("TopK: no samples yet");
    return {values_, indices_};
  }

  /// The state (`count`, `features`, `k`, `values`, `indices`).
  [[nodiscard]] StatState state() const {
    auto state = detail::count_and_features_state(count_, features_);
    state.emplace_back("k", torch::tensor(k_, torch::kInt64));
    state.emplace_back("values", count_ ? values_ : torch::zeros({0, 0}, torch::kFloat64));
    state.emplace_back("indices", count_ ? indices_ : torch::zeros({0, 0}, torch::kInt64));
    return state;
  }
  /// A `TopK` from a state (`path` names its file in errors).
  static TopK from_state(const std::map<std::string, torch::Tensor>& state, const std::filesystem::path& path = {}) {
    const auto k = detail::state_tensor(state, "k", torch::kInt64, 0, path).item<int64_t>();
    if (k < 1) throw io::CheckpointError(io::CheckpointErrorKind::shape, path, fmt::format("'k' is {}", k));
    TopK stat(k);
    std::tie(stat.count_, stat.features_) = detail::count_and_features(state, path);
    const auto values = detail::state_tensor(state, "values", torch::kFloat64, 2, path);
    const auto indices = detail::state_tensor(state, "indices", torch::kInt64, 2, path);
    if (stat.count_) {
      const std::vector<int64_t> expected = {detail::feature_count(stat.features_), std::min(k, stat.count_)};
      if (values.sizes().vec() != expected || indices.sizes().vec() != expected)
        throw io::CheckpointError(
            io::CheckpointErrorKind::shape, path,
            fmt::format("'values' {} and 'indices' {}, but {} were expected", detail::shape_text(values.sizes()),
                        detail::shape_text(indices.sizes()), detail::shape_text(expected)));
      stat.values_ = values;
      stat.indices_ = indices;
    }
    return stat;
  }

 private:
  // Candidates `[D, n]` after those kept, which are earlier samples: a stable sort keeps the earlier of equals.
  void keep(const torch::Tensor& values, const torch::Tensor& indices) {
    const auto all_values = values_.defined() ? torch::cat({values_, values.to(values_.device())}, 1) : values;
    const auto all_indices = indices_.defined() ? torch::cat({indices_, indices.to(indices_.device())}, 1) : indices;
    const auto [sorted, order] = torch::sort(all_values, /*stable=*/true, /*dim=*/1, /*descending=*/true);
    const auto kept = std::min(k_, all_values.size(1));
    values_ = sorted.slice(1, 0, kept).contiguous();
    indices_ = all_indices.gather(1, order.slice(1, 0, kept)).contiguous();
  }

  int64_t k_;
  int64_t count_ = 0;
  std::vector<int64_t> features_;
  torch::Tensor values_, indices_;
};

}  // namespace baukit::stats
