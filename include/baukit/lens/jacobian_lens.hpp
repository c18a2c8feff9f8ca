/// @file lens/jacobian_lens.hpp
/// @brief The Jacobian lens (anthropics/jacobian-lens, as published for neuronpedia): per block `l` the average
/// Jacobian `J_l = E[d h_final / d h_l]` of the final residual stream with respect to block `l`'s output, applied as
/// `lens_l(h) = head(J_l h)`. Reads the published torch.save dict, `{"J": {layer: [d, d]}, "n_prompts": int,
/// "source_layers": [int], "d_model": int}` (matrices usually F16, kept as stored and widened per use), through
/// the restricted unpickler.
///
/// @code
/// auto jacobian = baukit::load_jacobian_lens(dir / "gpt2_jacobian_lens.pt");
/// auto result = baukit::logit_lens(*model, tok.encode(prompt), baukit::LensOptions().learned_lenses({jacobian}));
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/io/error.hpp>
#include <baukit/io/torch_bin.hpp>
#include <baukit/lens/learned.hpp>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// A Jacobian lens: a `[d, d]` matrix per source layer (block output).
class JacobianLens : public LearnedLens {
 public:
  /// A lens of `matrices` (block index to `J` `[d_model, d_model]`), fitted on `n_prompts` prompts; `source`
  /// names its file in messages.
  JacobianLens(std::map<int64_t, torch::Tensor> matrices, int64_t d_model, int64_t n_prompts,
               std::filesystem::path source = {})
      : matrices_(std::move(matrices)), d_model_(d_model), n_prompts_(n_prompts), source_(std::move(source)) {}

  [[nodiscard]] std::string name() const override { return "jacobian_lens"; }
  [[nodiscard]] std::string label() const override { return "Jacobian lens"; }
  void check_fits(int64_t num_layers, int64_t width) const override {
    if (width != d_model_)
      throw std::invalid_argument(
          fmt::format("Jacobian lens {}: d_model {}, but the model is {} wide", where(), d_model_, width));
    for (const auto& [layer, matrix] : matrices_)
      if (layer >= num_layers)
        throw std::invalid_argument(fmt::format("Jacobian lens {}: a matrix for layer {}, but the model has {} layers",
                                                where(), layer, num_layers));
    for (int64_t layer = 0; layer + 1 < num_layers; ++layer)
      if (!matrices_.count(layer))
        throw std::invalid_argument(fmt::format(
            "Jacobian lens {}: no matrix for layer {} (it has {}); the lens grid needs every layer but the last",
            where(), layer, layers_text()));
  }
  /// `J_layer state` (each row `h` of `state` to `J h`), in `state`'s dtype.
  [[nodiscard]] torch::Tensor translate(const torch::Tensor& state, int64_t layer) const override {
    const auto it = matrices_.find(layer);
    if (it == matrices_.end())
      throw std::invalid_argument(
          fmt::format("Jacobian lens {}: no matrix for layer {} (it has {})", where(), layer, layers_text()));
    return torch::matmul(state, widened(it->first, it->second, state.options()).t());
  }
  /// The source layers (block indices) with a matrix.
  [[nodiscard]] std::vector<int64_t> source_layers() const {
    std::vector<int64_t> layers;
    for (const auto& [layer, matrix] : matrices_) layers.push_back(layer);
    return layers;
  }
  /// `J_layer` as stored.
  [[nodiscard]] const torch::Tensor& matrix(int64_t layer) const { return matrices_.at(layer); }
  /// The hidden size.
  [[nodiscard]] int64_t d_model() const { return d_model_; }
  /// The number of prompts it was fitted on.
  [[nodiscard]] int64_t n_prompts() const { return n_prompts_; }

 private:
  [[nodiscard]] std::string where() const { return source_.empty() ? std::string("(in memory)") : source_.string(); }
  [[nodiscard]] std::string layers_text() const {
    std::string text;
    for (const auto& [layer, matrix] : matrices_) text += (text.empty() ? "" : ", ") + std::to_string(layer);
    return text.empty() ? "none" : text;
  }

  // `matrix` (layer `layer`'s) on `like`'s device and dtype, converted once per layer and kept: a corpus's windows
  // would otherwise widen every F16 matrix again for every window.
  [[nodiscard]] torch::Tensor widened(int64_t layer, const torch::Tensor& matrix,
                                      const torch::TensorOptions& like) const {
    if (matrix.device() == like.device() && matrix.scalar_type() == like.dtype()) return matrix;
    const std::lock_guard<std::mutex> lock(widened_mutex_);
    auto& cached = widened_[layer];
    if (!cached.defined() || cached.device() != like.device() || cached.scalar_type() != like.dtype())
      cached = matrix.to(like.device(), like.dtype().toScalarType());
    return cached;
  }

  std::map<int64_t, torch::Tensor> matrices_;
  mutable std::map<int64_t, torch::Tensor> widened_;
  mutable std::mutex widened_mutex_;
  int64_t d_model_, n_prompts_;
  std::filesystem::path source_;
};

/// Loads a Jacobian lens from the published torch.save file; errors name the file and the key.
/// `source_layers`, when present, must list exactly the layers of `J`; every matrix must be `[d_model, d_model]`.
inline std::shared_ptr<JacobianLens> load_jacobian_lens(const std::filesystem::path& path) {
  const auto root = io::load_torch_pickle(path);
  using Kind = io::PickleObject::Kind;
  auto fail = [&](io::CheckpointErrorKind kind, const std::string& why) { throw io::CheckpointError(kind, path, why); };
  if (root.kind != Kind::dict) fail(io::CheckpointErrorKind::pickle, "a Jacobian lens file holds a dict");
  const io::PickleObject* matrices = nullptr;
  int64_t d_model = -1, n_prompts = 0;
  std::vector<int64_t> source_layers;
  bool has_source_layers = false;
  for (const auto& [key, value] : root.items->pairs) {
    if (key.kind != Kind::string) continue;  // other metadata is not ours to judge
    auto integer = [&] {
      if (value.kind != Kind::integer)
        fail(io::CheckpointErrorKind::pickle, fmt::format("'{}' is not an integer", key.text));
      return value.integer;
    };
    if (key.text == "J") {
      if (value.kind != Kind::dict) fail(io::CheckpointErrorKind::pickle, "'J' is not a dict of layer to matrix");
      matrices = &value;
    } else if (key.text == "d_model") {
      d_model = integer();
    } else if (key.text == "n_prompts") {
      n_prompts = integer();
    } else if (key.text == "source_layers") {
      if (value.kind != Kind::list && value.kind != Kind::tuple)
        fail(io::CheckpointErrorKind::pickle, "'source_layers' is not a list of layers");
      has_source_layers = true;
      for (const auto& item : value.items->items) {
        if (item.kind != Kind::integer) fail(io::CheckpointErrorKind::pickle, "'source_layers' holds a non-integer");
        source_layers.push_back(item.integer);
      }
    }
  }
  if (!matrices) fail(io::CheckpointErrorKind::missing, "no 'J' (the dict of layer to matrix)");
  std::map<int64_t, torch::Tensor> by_layer;
  for (const auto& [key, value] : matrices->items->pairs) {
    if (key.kind != Kind::integer || key.integer < 0)
      fail(io::CheckpointErrorKind::pickle, "a key of 'J' is not a layer number");
    const auto name = fmt::format("J[{}]", key.integer);
    if (value.kind != Kind::tensor || !value.tensor.is_floating_point())
      fail(io::CheckpointErrorKind::dtype, fmt::format("'{}' is not a floating-point tensor", name));
    const auto& m = value.tensor;
    if (d_model < 0) d_model = m.dim() == 2 ? m.size(0) : -1;
    if (m.dim() != 2 || m.size(0) != d_model || m.size(1) != d_model)
      fail(io::CheckpointErrorKind::shape, fmt::format("'{}' has shape {}, but d_model {} needs [{}, {}]", name,
                                                       io::detail::shape(m.sizes()), d_model, d_model, d_model));
    if (!by_layer.emplace(key.integer, m).second)
      fail(io::CheckpointErrorKind::pickle, fmt::format("'{}' appears twice", name));
  }
  if (by_layer.empty()) fail(io::CheckpointErrorKind::missing, "'J' holds no matrix");
  if (has_source_layers) {
    std::vector<int64_t> present;
    for (const auto& [layer, matrix] : by_layer) present.push_back(layer);
    auto listed = source_layers;
    std::sort(listed.begin(), listed.end());
    if (listed != present)
      fail(io::CheckpointErrorKind::config,
           fmt::format("'source_layers' lists {} layers but 'J' holds {}", source_layers.size(), present.size()));
  }
  return std::make_shared<JacobianLens>(std::move(by_layer), d_model, n_prompts, path);
}

}  // namespace baukit
