/// @file lens/tuned_lens_training.hpp
/// @brief Training a tuned lens in C++ with the reference implementation's objective and defaults
/// (AlignmentResearch/tuned-lens: `scripts/train_loop.py`, `scripts/ingredients.py`): per layer the KL divergence
/// from the model's final distribution to the translated layer's, over the same token (`--loss kl`, shift 0),
/// averaged over tokens, each layer's loss back-propagated in turn; SGD with Nesterov momentum 0.9, learning rate
/// `lr_scale * (1 - momentum)`, weight decay 1e-3, no warm-up, linear decay to zero over `num_steps` (250),
/// `tokens_per_step` 2^18, gradients clipped to norm 1. Checkpoints are written atomically every so many steps, and
/// a run resumes from the last one without using a window twice. Also: the mean KL per layer on held-out windows,
/// to compare lenses.
///
/// @code
/// auto windows = baukit::token_windows(tokenizer.encode(text), 64);  // equal-length windows of the corpus
/// auto lens = baukit::make_tuned_lens(*model, 768);
/// baukit::train_tuned_lens(*model, *lens, windows, baukit::TunedLensTrainOptions().checkpoint_dir("ckpt"));
/// std::vector<double> kl = baukit::mean_kl_per_layer(*model, windows, lens.ptr());  // better: held-out windows
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/io/atomic_file.hpp>
#include <baukit/io/checkpoint.hpp>
#include <baukit/lens/stream.hpp>
#include <baukit/lens/tuned_lens.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// `ids` cut into consecutive windows of `window` tokens (the last, shorter one dropped), as the reference's
/// `chunk_and_tokenize` makes equal-length samples.
inline std::vector<std::vector<int64_t>> token_windows(const std::vector<int64_t>& ids, int64_t window) {
  if (window < 1) throw std::invalid_argument(fmt::format("token_windows: window {} must be positive", window));
  std::vector<std::vector<int64_t>> windows;
  for (std::size_t start = 0; start + static_cast<std::size_t>(window) <= ids.size();
       start += static_cast<std::size_t>(window))
    windows.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(start),
                         ids.begin() + static_cast<std::ptrdiff_t>(start) + window);
  return windows;
}

/// How `train_tuned_lens` trains; the defaults are the reference implementation's.
struct TunedLensTrainOptions {
  /// Optimiser steps.
  TORCH_ARG(int64_t, num_steps) = 250;
  /// Tokens per step: a multiple of the window length (the reference's rule).
  TORCH_ARG(int64_t, tokens_per_step) = int64_t{1} << 18;
  /// Windows per forward; a step accumulates `ceil(windows per step / batch_size)` of them.
  TORCH_ARG(int64_t, batch_size) = 1;
  /// Scales the learning rate `1 - momentum`.
  TORCH_ARG(double, lr_scale) = 1.0;
  /// Nesterov momentum.
  TORCH_ARG(double, momentum) = 0.9;
  /// Weight decay (toward the identity: the translators are residual).
  TORCH_ARG(double, weight_decay) = 1e-3;
  /// Gradient norm clip.
  TORCH_ARG(double, max_grad_norm) = 1.0;
  /// Seed of the window order (each pass over the windows is shuffled anew).
  TORCH_ARG(uint64_t, seed) = 42;
  /// Where checkpoints go (none when empty); an existing one is resumed.
  TORCH_ARG(std::filesystem::path, checkpoint_dir) = {};
  /// Steps between checkpoints (and one at the end).
  TORCH_ARG(int64_t, checkpoint_every) = 10;
};

/// Where training stands, for progress reports.
struct TunedLensTrainProgress {
  int64_t step = 0;              ///< Steps done.
  int64_t num_steps = 0;         ///< Steps in all.
  int64_t tokens = 0;            ///< Tokens trained on so far, this run and resumed ones.
  double loss = 0;               ///< The last step's mean KL over layers, in nats.
  double tokens_per_second = 0;  ///< This run's throughput.
  double eta_seconds = 0;        ///< Estimated seconds left.
  bool resumed = false;          ///< The run resumed from a checkpoint.
};

/// Called after each step.
using TunedLensTrainCallback = std::function<void(const TunedLensTrainProgress&)>;

namespace detail {

/// The window order of pass `epoch`: a permutation of `count` from `seed`.
inline std::vector<std::size_t> window_order(std::size_t count, uint64_t seed, int64_t epoch) {
  std::vector<std::size_t> order(count);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 rng(seed + static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ull);
  for (std::size_t i = count; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher-Yates, portable
  return order;
}

/// Sets every parameter of `module` not to require gradients for its lifetime, restoring them after.
class FrozenParameters {
 public:
  explicit FrozenParameters(torch::nn::Module& module) {
    for (auto& p : module.parameters()) {
      saved_.emplace_back(p, p.requires_grad());
      p.set_requires_grad(false);
    }
  }
  ~FrozenParameters() {  // in reverse, so a tied weight (listed twice) gets its first state back
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) it->first.set_requires_grad(it->second);
  }
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<std::pair<torch::Tensor, bool>> saved_;
};

/// The checkpoint `dir/latest` points to ("step-000100"), or "" when there is none.
inline std::string latest_checkpoint(const std::filesystem::path& dir) {
  if (dir.empty() || !std::filesystem::exists(dir / "latest")) return {};
  std::string name;
  if (const auto error = io::RegularFile(dir / "latest").read_all(name, 4096); !error.empty())
    throw io::CheckpointError(io::CheckpointErrorKind::io, dir / "latest", error);
  name.erase(name.find_last_not_of(" \n") + 1);
  return name;
}

/// KL(final ‖ layer) per token from the final log-probabilities and the layer's logits: `[tokens]`.
inline torch::Tensor kl_from_final(const torch::Tensor& final_log_probs, const torch::Tensor& layer_logits) {
  return (final_log_probs.exp() * (final_log_probs - torch::log_softmax(layer_logits.to(torch::kFloat32), -1))).sum(-1);
}

}  // namespace detail

/// Trains `lens` on `windows` (equal-length token windows of a corpus) against `model`, whose parameters are
/// frozen meanwhile. With `checkpoint_dir`, a checkpoint (the lens in the published format, the optimiser's state,
/// the step and the windows used) is put in place atomically every `checkpoint_every` steps and at the end, and a
/// run finding one there resumes from it: stopping and resuming gives the same lens as one run. Returns the
/// final progress.
inline TunedLensTrainProgress train_tuned_lens(models::CausalLM& model, TunedLensImpl& lens,
                                               const std::vector<std::vector<int64_t>>& windows,
                                               const TunedLensTrainOptions& options = {},
                                               const TunedLensTrainCallback& callback = {}) {
  namespace fs = std::filesystem;
  if (windows.empty()) throw std::invalid_argument("train_tuned_lens: no windows to train on");
  const auto window = static_cast<int64_t>(windows.front().size());
  for (std::size_t i = 0; i < windows.size(); ++i)
    if (static_cast<int64_t>(windows[i].size()) != window || window < 1)
      throw std::invalid_argument(
          fmt::format("train_tuned_lens: window {} has {} tokens, window 0 has {}", i, windows[i].size(), window));
  if (options.tokens_per_step() % window)
    throw std::invalid_argument(
        fmt::format("train_tuned_lens: tokens_per_step {} is not a multiple of the window "
                    "length {}",
                    options.tokens_per_step(), window));
  if (options.num_steps() < 1 || options.batch_size() < 1 || options.checkpoint_every() < 1)
    throw std::invalid_argument("train_tuned_lens: num_steps, batch_size and checkpoint_every must be positive");
  lens.check_fits(model.num_layers(), model_width(model));
  const int64_t windows_per_step = options.tokens_per_step() / window;
  const int64_t batches_per_step = (windows_per_step + options.batch_size() - 1) / options.batch_size();
  const int64_t layers = model.num_layers();

  detail::FrozenParameters frozen(model.module());
  auto parameters = lens.parameters();
  const double momentum = options.momentum();
  const double base_lr = options.lr_scale() * (1 - momentum);  // the reference undoes PyTorch's 1/(1 - β) scaling
  torch::optim::SGD optimizer(
      parameters,
      torch::optim::SGDOptions(base_lr).momentum(momentum).nesterov(true).weight_decay(options.weight_decay()));
  auto set_lr = [&](double lr) {
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  };

  // Resume: the lens, the optimiser, the step and the windows used so far.
  TunedLensTrainProgress progress;
  progress.num_steps = options.num_steps();
  int64_t used = 0;  // windows consumed, over all passes
  const fs::path dir = options.checkpoint_dir();
  if (const auto name = detail::latest_checkpoint(dir); !name.empty()) {
    const auto at = dir / name;
    const auto state = io::read_json_file(at / "state.json");
    if (state.value("window", int64_t{-1}) != window ||
        state.value("tokens_per_step", int64_t{-1}) != options.tokens_per_step())
      throw io::CheckpointError(io::CheckpointErrorKind::config, at / "state.json",
                                "the checkpoint was made with another window length or tokens_per_step");
    const auto saved = load_tuned_lens(at);
    torch::NoGradGuard no_grad;
    const auto saved_parameters = saved->parameters();
    for (std::size_t i = 0; i < parameters.size(); ++i) parameters[i].copy_(saved_parameters[i]);
    torch::serialize::InputArchive archive;
    archive.load_from((at / "optimizer.pt").string());
    optimizer.load(archive);
    progress.step = state.at("step").get<int64_t>();
    used = state.at("windows_used").get<int64_t>();
    progress.tokens = used * window;
    progress.resumed = true;
  }
  auto checkpoint = [&] {
    if (dir.empty()) return;
    const auto name = fmt::format("step-{:06d}", progress.step);
    const auto at = dir / name;
    fs::create_directories(at);
    save_tuned_lens(lens, at);
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    io::write_file_atomically(at / "optimizer.pt", [&](std::ostream& out) { archive.save_to(out); });
    const nlohmann::ordered_json state = {{"step", progress.step},
                                          {"windows_used", used},
                                          {"window", window},
                                          {"tokens_per_step", options.tokens_per_step()},
                                          {"loss", progress.loss}};
    io::write_file_atomically(at / "state.json", [&](std::ostream& out) { out << state.dump(2) << '\n'; });
    // The pointer moves last: a run killed before this line resumes from the previous checkpoint.
    const auto previous = detail::latest_checkpoint(dir);
    io::write_file_atomically(dir / "latest", [&](std::ostream& out) { out << name << '\n'; });
    if (!previous.empty() && previous != name) fs::remove_all(dir / previous);
  };

  auto decoder = make_decoder(model, /*softmax=*/false);
  const auto device = model.device();
  const auto started = std::chrono::steady_clock::now();
  const int64_t first_step = progress.step;
  std::vector<std::size_t> order;
  int64_t order_epoch = -1;
  auto next_window = [&]() -> const std::vector<int64_t>& {
    const auto count = static_cast<int64_t>(windows.size());
    const int64_t epoch = used / count;
    if (epoch != order_epoch) {
      order = detail::window_order(windows.size(), options.seed(), epoch);
      order_epoch = epoch;
    }
    return windows[order[static_cast<std::size_t>(used++ % count)]];
  };
  while (progress.step < options.num_steps()) {
    set_lr(base_lr * static_cast<double>(options.num_steps() - progress.step) /
           static_cast<double>(options.num_steps()));
    double step_loss = 0;
    int64_t remaining = windows_per_step;
    for (int64_t b = 0; b < batches_per_step; ++b) {
      std::vector<std::vector<int64_t>> batch;
      for (int64_t i = 0; i < std::min(options.batch_size(), remaining); ++i) batch.push_back(next_window());
      remaining -= static_cast<int64_t>(batch.size());
      torch::Tensor logits;
      const auto stream = residual_stream_batch(model, batch, false, nullptr, &logits);  // [layers + 1, b, t, w]
      const auto final_log_probs = torch::log_softmax(logits.to(torch::kFloat32), -1).detach();
      // The reference's ResidualStream: the embedding and every block's output but the last (translators 0..L-1).
      for (int64_t i = 0; i < layers; ++i) {
        const auto translated = lens.forward(stream[i].to(device), i - 1);
        const auto loss = detail::kl_from_final(final_log_probs, decoder->forward(translated)).mean();
        (loss / static_cast<double>(batches_per_step)).backward();
        step_loss += loss.item<double>() / static_cast<double>(batches_per_step * layers);
      }
    }
    torch::nn::utils::clip_grad_norm_(parameters, options.max_grad_norm());
    optimizer.step();
    optimizer.zero_grad();
    ++progress.step;
    progress.tokens = used * window;
    progress.loss = step_loss;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto steps_this_run = progress.step - first_step;
    progress.tokens_per_second = static_cast<double>(steps_this_run * windows_per_step * window) / seconds;
    progress.eta_seconds =
        seconds / static_cast<double>(steps_this_run) * static_cast<double>(options.num_steps() - progress.step);
    if (progress.step % options.checkpoint_every() == 0 || progress.step == options.num_steps()) checkpoint();
    if (callback) callback(progress);
  }
  return progress;
}

/// The mean over `windows`' tokens of KL(final ‖ layer) for each block's output `[layers]` (the last is 0),
/// decoded by the model's head after `lens` (the logit lens when null), in nats.
inline std::vector<double> mean_kl_per_layer(models::CausalLM& model, const std::vector<std::vector<int64_t>>& windows,
                                             const std::shared_ptr<const LearnedLens>& lens = nullptr,
                                             int64_t batch_size = 8) {
  torch::NoGradGuard no_grad;
  if (windows.empty()) throw std::invalid_argument("mean_kl_per_layer: no windows");
  if (lens) lens->check_fits(model.num_layers(), model_width(model));
  auto decoder = make_decoder(model, /*softmax=*/false);
  const int64_t layers = model.num_layers();
  std::vector<double> sums(static_cast<std::size_t>(layers), 0.0);
  int64_t tokens = 0;
  for (std::size_t start = 0; start < windows.size(); start += static_cast<std::size_t>(batch_size)) {
    const std::vector<std::vector<int64_t>> batch(
        windows.begin() + static_cast<std::ptrdiff_t>(start),
        windows.begin() +
            static_cast<std::ptrdiff_t>(std::min(windows.size(), start + static_cast<std::size_t>(batch_size))));
    torch::Tensor logits;
    const auto stream = residual_stream_batch(model, batch, false, nullptr, &logits);
    const auto final_log_probs = torch::log_softmax(logits.to(torch::kFloat32), -1);
    // Windows of unequal length are left-padded: the padding's positions are masked out of the sums.
    const auto longest = stream.size(2);
    auto mask = torch::zeros({static_cast<int64_t>(batch.size()), longest}, torch::kBool);
    for (std::size_t b = 0; b < batch.size(); ++b)
      mask[static_cast<int64_t>(b)].slice(0, longest - static_cast<int64_t>(batch[b].size())) = true;
    mask = mask.to(final_log_probs.device());
    for (int64_t l = 0; l + 1 < layers; ++l) {
      const auto state = stream[l + 1];
      const auto kl =
          detail::kl_from_final(final_log_probs, decoder->forward(lens ? lens->translate(state, l) : state));
      sums[static_cast<std::size_t>(l)] += kl.masked_select(mask).sum().item<double>();
    }
    tokens += mask.sum().item<int64_t>();
  }
  for (auto& s : sums) s /= static_cast<double>(tokens);
  return sums;
}

}  // namespace baukit
