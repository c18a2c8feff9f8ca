/// @file stats/tally.hpp
/// @brief `tally`: a statistic of one layer's output over a corpus, as Python baukit's `tally` — the model run
/// window batch by window batch with a `Trace` on the layer (stopping the forward there), each batch's output fed
/// to the statistic, a progress line (windows, tokens, tokens/s, share of the corpus, ETA), and the result cached
/// under a key made of every argument, so a second call with the same arguments reads it back without a forward.
///
/// @code
/// baukit::io::CorpusReader corpus("wiki.txt", tokenizer, baukit::io::CorpusOptions().window(128));
/// auto variance = baukit::stats::tally(baukit::stats::Variance(), *model, "transformer.h.6", corpus,
///                                      baukit::stats::TallyOptions().cache_dir("stats-cache"));
/// torch::Tensor v = variance.variance();  // [n_embd]
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <baukit/io/corpus.hpp>
#include <baukit/io/safetensors.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/stats/stat.hpp>
#include <baukit/trace.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace baukit::stats {

/// Where `tally` stands, for progress reports.
struct TallyProgress {
  int64_t windows = 0;           ///< Windows fed so far.
  int64_t tokens = 0;            ///< Tokens fed so far.
  double fraction = 0;           ///< Share of the work done, 0 to 1 (by windows with `max_windows`, else bytes).
  double tokens_per_second = 0;  ///< Throughput so far.
  double eta_seconds = 0;        ///< Estimated seconds left.
  int64_t resumed_windows = 0;   ///< Windows a checkpoint had seen when this run resumed from it (0: a new run).
};

/// How `tally` runs.
struct TallyOptions {
  /// Windows per forward.
  TORCH_ARG(int64_t, batch_size) = 8;
  /// The most windows to feed (this rank's); 0: the whole corpus.
  TORCH_ARG(int64_t, max_windows) = 0;
  /// Where results are cached (none when empty).
  TORCH_ARG(std::filesystem::path, cache_dir) = {};
  /// A progress line on standard error (redrawn in place on a terminal).
  TORCH_ARG(bool, progress) = true;
  /// Called after each batch (besides the progress line), and once before the first when resuming.
  TORCH_ARG(std::function<void(const TallyProgress&)>, on_progress) = {};
  /// Where partial results are checkpointed, so that a killed run resumes (none when empty).
  TORCH_ARG(std::filesystem::path, checkpoint_dir) = {};
  /// Windows between checkpoints.
  TORCH_ARG(int64_t, checkpoint_every) = 256;
};

/// What `tally` feeds a statistic: the layer's output `[batch, tokens, ...]` as rows `[batch * tokens, ...]`.
inline torch::Tensor token_rows(const torch::Tensor& output) {
  return output.reshape({output.size(0) * output.size(1), -1});
}

namespace detail {

/// FNV-1a, 64 bits.
inline uint64_t fnv1a(const void* data, std::size_t size, uint64_t hash = 0xcbf29ce484222325ull) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

/// A fingerprint of a model's weights: every parameter's and buffer's name, shape, dtype and its first and last
/// 256 values. Enough to tell checkpoints apart without reading gigabytes.
inline std::string model_fingerprint(models::CausalLM& model) {
  uint64_t hash = fnv1a(model.model_type().data(), model.model_type().size());
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    hash = fnv1a(name.data(), name.size(), hash);
    const auto shape = t.sizes().vec();
    hash = fnv1a(shape.data(), shape.size() * sizeof(int64_t), hash);
    const auto dtype = static_cast<int>(t.scalar_type());
    hash = fnv1a(&dtype, sizeof dtype, hash);
    const auto flat = t.detach().reshape({-1});
    for (const auto& part : {flat.slice(0, 0, 256), flat.slice(0, std::max<int64_t>(0, flat.numel() - 256))}) {
      const auto bytes = part.to(torch::kCPU).contiguous();
      hash = fnv1a(bytes.data_ptr(), bytes.nbytes(), hash);
    }
  };
  for (const auto& item : model.module().named_parameters()) add(item.key(), item.value());
  for (const auto& item : model.module().named_buffers()) add(item.key(), item.value());
  return fmt::format("{:016x}", hash);
}

}  // namespace detail

namespace detail {

/// Reads the partial result `path` (a checkpoint of `tally_windows`) when it was made under `key_text`: the
/// statistic and the windows it has seen; none when there is no such file or it belongs to other arguments.
template <typename S>
std::optional<std::pair<S, int64_t>> read_partial(const std::filesystem::path& path, const std::string& key_text) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  const io::SafetensorsFile file(path);
  const auto key = file.metadata().find("baukit.tally_key");
  const auto windows = file.metadata().find("baukit.windows");
  if (key == file.metadata().end() || key->second != key_text || windows == file.metadata().end()) return std::nullopt;
  return std::make_pair(S::load(path), std::stoll(windows->second));
}

}  // namespace detail

/// The loop under `tally` and the lens evaluation: `step(stat, ids)` for each batch `ids` `[batch, window]`
/// (int64, on the CPU) of this rank's windows of `corpus` (all of them, or `max_windows`), with the cache, the
/// checkpoints and the progress line of `TallyOptions`. `key` must hold everything the result depends on besides
/// the corpus and the options (the statistic's settings, the model, the layer); `what` names the work in the
/// progress line. With `checkpoint_dir`, the statistic and the count of windows it has seen are put there
/// atomically every `checkpoint_every` windows, and a call with the same arguments that finds them resumes after
/// those windows: a run killed and started again gives the result of one run. The last checkpoint, of all the
/// windows, is kept, so the same call again returns at once. Windows go one batch at a time.
template <typename S, typename Step>
S tally_windows(S stat, io::CorpusReader& corpus, nlohmann::ordered_json key, const TallyOptions& options,
                const std::string& what, Step&& step) {
  namespace fs = std::filesystem;
  if (options.batch_size() < 1 || options.max_windows() < 0 || options.checkpoint_every() < 1)
    throw std::invalid_argument("tally: batch_size and checkpoint_every must be positive and max_windows not negative");
  if (corpus.windows_cut() > 0)
    throw std::invalid_argument("tally: the corpus has been read from already; give a fresh CorpusReader");
  const auto& corpus_options = corpus.options();
  std::error_code error;
  const auto modified = fs::last_write_time(corpus.path(), error).time_since_epoch().count();
  key["stat"] = S::kName;
  key["corpus"] = fs::absolute(corpus.path()).lexically_normal().string();
  key["corpus_bytes"] = corpus.total_bytes();
  key["corpus_modified"] = modified;
  key["window"] = corpus_options.window();
  key["format"] = static_cast<int>(corpus_options.format());
  key["text_field"] = corpus_options.text_field();
  key["separator"] = corpus_options.separator();
  key["max_document_bytes"] = corpus_options.max_document_bytes();
  key["rank"] = corpus_options.rank();
  key["world_size"] = corpus_options.world_size();
  key["max_windows"] = options.max_windows();
  const auto key_text = key.dump();
  const auto key_hash = detail::fnv1a(key_text.data(), key_text.size());
  fs::path cached;
  if (!options.cache_dir().empty()) {
    cached = options.cache_dir() / fmt::format("tally-{}-{:016x}.safetensors", S::kName, key_hash);
    if (fs::exists(cached)) {
      const io::SafetensorsFile file(cached);
      const auto found = file.metadata().find("baukit.tally_key");
      if (found != file.metadata().end() && found->second == key_text) return S::load(cached);
    }
  }
  fs::path partial;
  TallyProgress progress;
  if (!options.checkpoint_dir().empty()) {
    partial = options.checkpoint_dir() / fmt::format("tally-{}-{:016x}.partial.safetensors", S::kName, key_hash);
    if (auto resumed = detail::read_partial<S>(partial, key_text)) {
      stat = std::move(resumed->first);
      progress.resumed_windows = progress.windows = resumed->second;
      if (corpus.skip(progress.windows) != progress.windows)
        throw io::CheckpointError(io::CheckpointErrorKind::size, partial,
                                  fmt::format("the checkpoint has seen {} windows, but {} holds fewer for rank {}",
                                              progress.windows, corpus.path().string(), corpus_options.rank()));
      progress.tokens = progress.windows * corpus_options.window();
      progress.fraction = static_cast<double>(corpus.bytes_read()) / std::max<double>(1, corpus.total_bytes());
      if (options.on_progress()) options.on_progress()(progress);  // where it resumes, before any batch
    }
  }
  auto save_partial = [&] {
    fs::create_directories(options.checkpoint_dir());
    detail::save_state(partial, S::kName, stat.state(),
                       {{"baukit.tally_key", key_text}, {"baukit.windows", std::to_string(progress.windows)}});
  };

  const auto started = std::chrono::steady_clock::now();
  const bool terminal = options.progress() && ::isatty(2);
  int64_t since_checkpoint = 0;
  while (options.max_windows() == 0 || progress.windows < options.max_windows()) {
    const auto wanted = options.max_windows() ? std::min(options.batch_size(), options.max_windows() - progress.windows)
                                              : options.batch_size();
    const auto batch = corpus.next_batch(wanted);
    if (batch.empty()) break;
    auto ids = torch::empty({static_cast<int64_t>(batch.size()), corpus_options.window()}, torch::kInt64);
    for (std::size_t b = 0; b < batch.size(); ++b)
      std::memcpy(ids[static_cast<int64_t>(b)].data_ptr<int64_t>(), batch[b].data(), batch[b].size() * sizeof(int64_t));
    step(stat, ids);
    progress.windows += static_cast<int64_t>(batch.size());
    progress.tokens += ids.numel();
    since_checkpoint += static_cast<int64_t>(batch.size());
    if (!partial.empty() && since_checkpoint >= options.checkpoint_every()) {
      save_partial();
      since_checkpoint = 0;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto new_windows = progress.windows - progress.resumed_windows;
    progress.fraction = options.max_windows()
                            ? static_cast<double>(progress.windows) / static_cast<double>(options.max_windows())
                            : static_cast<double>(corpus.bytes_read()) / std::max<double>(1, corpus.total_bytes());
    progress.tokens_per_second = static_cast<double>(new_windows * corpus_options.window()) / std::max(seconds, 1e-9);
    progress.eta_seconds = progress.fraction > 0 ? seconds * (1 - progress.fraction) / progress.fraction : 0;
    if (options.on_progress()) options.on_progress()(progress);
    if (options.progress())
      std::cerr << (terminal ? "\r\033[K" : "")
                << fmt::format(
                       "{}: {} windows, {} tokens, {:.0f} tokens/s, {:.0f}%, ETA {:.0f} s{}", what, progress.windows,
                       progress.tokens, progress.tokens_per_second, 100 * progress.fraction, progress.eta_seconds,
                       progress.resumed_windows ? fmt::format(" (resumed after {} windows)", progress.resumed_windows)
                                                : std::string())
                << (terminal ? "" : "\n") << std::flush;
  }
  if (terminal) std::cerr << "\n";
  if (progress.windows == 0)
    throw std::invalid_argument(fmt::format("tally: {} holds no window of {} tokens for rank {}",
                                            corpus.path().string(), corpus_options.window(), corpus_options.rank()));
  if (!cached.empty()) {
    fs::create_directories(options.cache_dir());
    detail::save_state(cached, S::kName, stat.state(), {{"baukit.tally_key", key_text}});
  }
  // The last checkpoint holds every window and stays: a job whose reduction failed (another rank died) resumes
  // with this rank's share done.
  if (!partial.empty() && since_checkpoint > 0) save_partial();
  return stat;
}

/// Feeds `stat` with `feed(output)` of module `layer` over this rank's windows of `corpus` (the whole of it, or
/// `max_windows`), returning the statistic. With `cache_dir`, the result is saved there under a key of the
/// statistic's kind and settings, the model's fingerprint, the layer, the corpus file (path, size, modification
/// time) and its options, and `max_windows`; a call with the same key loads it instead and reads nothing of the
/// corpus. With `checkpoint_dir`, a killed run resumes (see `tally_windows`). The forward stops after `layer`.
/// Each rank of a job tallies its own windows; `distributed::tally` merges them.
template <typename S>
S tally(S stat, models::CausalLM& model, const std::string& layer, io::CorpusReader& corpus,
        const TallyOptions& options = {}, const std::function<torch::Tensor(const torch::Tensor&)>& feed = token_rows) {
  if (corpus.options().window() > model.max_positions())
    throw std::invalid_argument(fmt::format("tally: windows of {} tokens are longer than the model's {} positions",
                                            corpus.options().window(), model.max_positions()));
  nlohmann::ordered_json key = {
      {"settings", nlohmann::json::array()}, {"model", detail::model_fingerprint(model)}, {"layer", layer}};
  for (const auto& [name, tensor] : stat.state()) {  // the empty statistic's settings (TopK's k, a range, ...)
    const auto bytes = tensor.to(torch::kCPU).contiguous();
    key["settings"].push_back({name, fmt::format("{:016x}", detail::fnv1a(bytes.data_ptr(), bytes.nbytes()))});
  }
  // One trace for the whole run (it refuses an unknown layer, naming it, before any work), stopping each forward
  // after the layer.
  Trace trace(model, layer, TraceOptions().stop(true));
  torch::NoGradGuard no_grad;
  const auto device = model.device();
  return tally_windows(std::move(stat), corpus, std::move(key), options, fmt::format("tally {} of {}", S::kName, layer),
                       [&](S& s, const torch::Tensor& ids) {
                         run_until_stop([&] { model.forward(ids.to(device), {}, nullptr); });
                         s.add(feed(trace.output()));
                       });
}

}  // namespace baukit::stats
