/// @file stats/stat.hpp
/// @brief What every running statistic shares (`baukit::stats`, after Python baukit's `runningstats`): batches
/// whose dimension 0 is the sample and whose other dimensions are the features, sums kept in float64 on the
/// batches' device, and the state saved and loaded as a safetensors file whose `__metadata__` names the statistic.
/// Statistics are values: a copy is independent of the original (no state is changed in place).
///
/// @code
/// baukit::stats::Variance variance;
/// variance.add(torch::randn({64, 768}));  // 64 samples of 768 features
/// variance.save("variance.safetensors");
/// auto again = baukit::stats::Variance::load("variance.safetensors");
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/error.hpp>
#include <baukit/io/safetensors.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace baukit::stats {

/// A statistic's state: named tensors, as `state()` returns them and `from_state` takes them.
using StatState = std::vector<std::pair<std::string, torch::Tensor>>;

namespace detail {

/// "[2, 3]".
inline std::string shape_text(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// `x` as `[samples, features]` float64 rows, checking it against the feature shape seen so far (`shape`, set by
/// the first batch) and refusing NaN and infinity: one bad value would silently spoil every sum after it.
inline torch::Tensor feature_rows(const char* stat, const torch::Tensor& x, std::vector<int64_t>& shape) {
  if (!x.defined() || x.dim() < 1)
    throw std::invalid_argument(fmt::format("{}.add: a batch needs a sample dimension (dimension 0)", stat));
  auto features = x.sizes().slice(1).vec();
  if (features.empty()) features.push_back(1);  // a batch of scalars: one feature
  if (!shape.empty() && features != shape)
    throw std::invalid_argument(fmt::format("{}.add: a batch of features {} after batches of features {}", stat,
                                            shape_text(features), shape_text(shape)));
  const auto rows = x.detach().reshape({x.size(0), -1}).to(torch::kFloat64);
  if (rows.numel() && !torch::isfinite(rows).all().item<bool>())
    throw std::invalid_argument(
        fmt::format("{}.add: the batch holds NaN or infinity (sample {})", stat,
                    torch::isfinite(rows).all(1).logical_not().nonzero()[0][0].item<int64_t>()));
  shape = features;
  return rows;
}

/// The checks of `merge`: the same feature shape, unless one side has seen nothing yet.
inline void check_merge(const char* stat, const std::vector<int64_t>& ours, const std::vector<int64_t>& theirs) {
  if (!ours.empty() && !theirs.empty() && ours != theirs)
    throw std::invalid_argument(
        fmt::format("{}.merge: features {} and {} differ", stat, shape_text(ours), shape_text(theirs)));
}

/// Writes `state` to `path` (atomically), `__metadata__` naming the statistic (and holding `metadata`).
inline void save_state(const std::filesystem::path& path, const char* stat, const StatState& state,
                       std::map<std::string, std::string> metadata = {}) {
  metadata["baukit.stat"] = stat;
  metadata["baukit.stat_format"] = "1";
  io::save_safetensors(path, state, metadata);
}

/// Reads a state saved by `save_state` for the statistic `stat`; an error names the file and what is wrong.
inline std::map<std::string, torch::Tensor> load_state(const std::filesystem::path& path, const char* stat) {
  io::SafetensorsFile file(path);
  const auto& metadata = file.metadata();
  const auto found = metadata.find("baukit.stat");
  if (found == metadata.end())
    throw io::CheckpointError(io::CheckpointErrorKind::header, path,
                              fmt::format("not a saved statistic (no 'baukit.stat' in __metadata__); a {} was "
                                          "expected",
                                          stat));
  if (found->second != stat)
    throw io::CheckpointError(io::CheckpointErrorKind::header, path,
                              fmt::format("holds a {}, not a {}", found->second, stat));
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : file.entries()) tensors.emplace(entry.name, file.tensor(entry).clone());
  return tensors;
}

/// The tensor `name` of a loaded state, of `dtype` and `dims` dimensions; `path` names the file in errors.
inline torch::Tensor state_tensor(const std::map<std::string, torch::Tensor>& state, const std::string& name,
                                  torch::ScalarType dtype, int64_t dims, const std::filesystem::path& path) {
  const auto found = state.find(name);
  if (found == state.end())
    throw io::CheckpointError(io::CheckpointErrorKind::missing, path, fmt::format("no '{}'", name));
  if (found->second.scalar_type() != dtype || found->second.dim() != dims)
    throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                              fmt::format("'{}' is {} {}, but a {}-dimensional {} was expected", name,
                                          c10::toString(found->second.scalar_type()), shape_text(found->second.sizes()),
                                          dims, c10::toString(dtype)));
  return found->second;
}

/// A state's sample count and feature shape (`count`, `features`), checked.
inline std::pair<int64_t, std::vector<int64_t>> count_and_features(const std::map<std::string, torch::Tensor>& state,
                                                                   const std::filesystem::path& path) {
  const auto count = state_tensor(state, "count", torch::kInt64, 0, path).item<int64_t>();
  const auto features = state_tensor(state, "features", torch::kInt64, 1, path);
  std::vector<int64_t> shape(features.data_ptr<int64_t>(), features.data_ptr<int64_t>() + features.numel());
  if (count < 0 || (count > 0) == shape.empty())
    throw io::CheckpointError(io::CheckpointErrorKind::shape, path,
                              fmt::format("count {} and features {} do not fit together", count, shape_text(shape)));
  return {count, shape};
}

/// The tensors every state starts with.
inline StatState count_and_features_state(int64_t count, const std::vector<int64_t>& shape) {
  return {{"count", torch::tensor(count, torch::kInt64)},
          {"features", torch::tensor(shape, torch::kInt64).reshape({static_cast<int64_t>(shape.size())})}};
}

/// Product of a feature shape.
inline int64_t feature_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

}  // namespace detail

/// The base of the statistics: `save` and `load` through the derived class's `state()` and `from_state()`.
template <typename Derived>
class Stat {
 public:
  /// Writes the state to a safetensors file, atomically.
  void save(const std::filesystem::path& path) const {
    detail::save_state(path, Derived::kName, static_cast<const Derived&>(*this).state());
  }

  /// Reads a statistic saved by `save`; errors name the file and the tensor.
  static Derived load(const std::filesystem::path& path) {
    return Derived::from_state(detail::load_state(path, Derived::kName), path);
  }
};

}  // namespace baukit::stats
