/// @file lens/command_support.hpp
/// @brief What `baukit-lens`'s commands (`lens/command.hpp`, `lens/evaluation_command.hpp`) share: the progress
/// line, the prompt file, the tokenizer of a model folder and the CPU's BLAS note.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <baukit/io/atomic_file.hpp>
#include <baukit/kernels/blas.hpp>
#include <baukit/lens/jacobian_lens.hpp>
#include <baukit/lens/tuned_lens.hpp>
#include <baukit/tokenizer.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// What `lens_command` is run as.
struct LensCommandOptions {
  /// The model used without `--model` (`baukit-lens`: its embedded default model).
  TORCH_ARG(std::filesystem::path, default_model) = "models/default";
  /// The program's name, for `--help` and error messages.
  TORCH_ARG(std::string, program) = "baukit-lens";
};

namespace detail {

/// Progress on stderr: one line rewritten in place on a terminal, plain lines otherwise.
class CommandProgress {
 public:
  /// Shows `text`; `done` ends its line.
  void step(const std::string& text, bool done = false) {
    if (tty_)
      std::cerr << "\r\033[K" << text << (done ? "\n" : "") << std::flush;
    else if (done)
      std::cerr << text << "\n";
  }

 private:
  bool tty_ = ::isatty(2) != 0;
};

/// The prompt from `--prompt-file`: a file (or a pipe, as `<(...)` gives) or standard input for "-"; at most 64 MiB.
inline std::string read_prompt_file(const std::filesystem::path& path) {
  constexpr std::size_t limit = std::size_t{64} << 20;
  std::ifstream file;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) throw std::invalid_argument(fmt::format("--prompt-file: {}: cannot open", path.string()));
  }
  std::istream& in = path == "-" ? std::cin : file;
  std::string text, chunk(1 << 16, '\0');
  while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
    text.append(chunk.data(), static_cast<std::size_t>(in.gcount()));
    if (text.size() > limit)
      throw std::invalid_argument(fmt::format("--prompt-file: {} holds more than 64 MiB", path.string()));
  }
  if (in.bad()) throw std::invalid_argument(fmt::format("--prompt-file: {}: read failed", path.string()));
  return text;
}

/// Seconds from `start` to now.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The tokenizer of a checkpoint: tokenizer.json, or vocab.json and merges.txt, from `tokenizer_dir` (or the model's
/// folder when empty); added tokens (GPT-J's) from the model's folder first.
inline Tokenizer load_command_tokenizer(const std::filesystem::path& model_dir,
                                        const std::filesystem::path& tokenizer_dir) {
  namespace fs = std::filesystem;
  const auto vocab_dir = tokenizer_dir.empty() ? model_dir : tokenizer_dir;
  if (fs::exists(vocab_dir / "tokenizer.json")) return Tokenizer::from_pretrained(vocab_dir);
  fs::path added;
  for (const auto& dir : {model_dir, vocab_dir})
    if (added.empty() && fs::exists(dir / "added_tokens.json")) added = dir / "added_tokens.json";
  for (const char* file : {"vocab.json", "merges.txt"})
    if (!fs::exists(vocab_dir / file))
      throw std::invalid_argument(
          fmt::format("{}: no tokenizer.json and no {}; give --tokenizer DIR, a folder with "
                      "tokenizer.json or with vocab.json and merges.txt",
                      vocab_dir.string(), file));
  return Tokenizer(vocab_dir / "vocab.json", vocab_dir / "merges.txt", added);
}

/// Throws when `--device cuda` is asked of a build or machine without CUDA.
inline void check_command_device(const std::string& device_name) {
  if (device_name == "cuda" && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: this libtorch build has no CUDA, or no GPU is visible");
}

/// The learned lenses of `--tuned-lens DIR` and `--jacobian-lens FILE` (either may be empty), in that order.
inline std::vector<std::shared_ptr<const LearnedLens>> load_command_lenses(const std::filesystem::path& tuned_lens_dir,
                                                                           const std::filesystem::path& jacobian_file) {
  std::vector<std::shared_ptr<const LearnedLens>> learned;
  if (!tuned_lens_dir.empty()) learned.push_back(load_tuned_lens(tuned_lens_dir).ptr());
  if (!jacobian_file.empty()) learned.push_back(load_jacobian_lens(jacobian_file));
  return learned;
}

/// A command's page (`--out`) and optional JSON (`--json`): opened before any work, so that an unwritable path fails
/// at once (and the two may not name one file), then put in place together and reported.
class CommandOutputs {
 public:
  /// Opens `page`, and `json` unless it is empty.
  CommandOutputs(std::filesystem::path page, std::filesystem::path json)
      : page_path_(std::move(page)), json_path_(std::move(json)), page_(page_path_) {
    if (json_path_.empty()) return;
    json_.emplace(json_path_);
    // Two files replaced at the end may not be one. Outputs written through (devices, FIFOs, `/dev/stdout` into a
    // pipe, whose path has no canonical form) are never replaced: any two of those may share a stream.
    if (page_.written_through() || json_->written_through()) return;
    std::error_code page_error, json_error;
    const auto page_at = std::filesystem::weakly_canonical(page_path_, page_error);
    const auto json_at = std::filesystem::weakly_canonical(json_path_, json_error);
    if (!page_error && !json_error && page_at == json_at)
      throw std::invalid_argument(fmt::format("--out and --json both name {}", page_path_.string()));
  }
  /// The page's stream.
  std::ostream& page() { return page_.stream(); }
  /// The JSON's stream, or null without `--json`.
  std::ostream* json() { return json_ ? &json_->stream() : nullptr; }
  /// Where notes go: standard error when an output is written through (`--json /dev/stdout | jq`), out of its way;
  /// standard output otherwise.
  std::ostream& notes() {
    return page_.written_through() || (json_ && json_->written_through()) ? std::cerr : std::cout;
  }
  /// Puts both in place together and notes what was written.
  void commit() {
    if (json_)
      io::commit_all({&page_, &*json_});
    else
      page_.commit();
    notes() << "wrote " << std::filesystem::absolute(page_path_).string() << "\n";
    if (json_) notes() << "wrote " << std::filesystem::absolute(json_path_).string() << "\n";
  }

 private:
  std::filesystem::path page_path_, json_path_;
  io::OutputFile page_;
  std::optional<io::OutputFile> json_;
};

/// Tells on stderr when libtorch's OpenBLAS runs generic kernels on this CPU (and switches them where it can).
inline void note_blas_kernels() {
  if (const auto kernels = kernels::use_openblas_kernels_for_this_cpu(); !kernels.empty())
    std::cerr << "note: libtorch's OpenBLAS ran generic kernels on this CPU; switched to its " << kernels
              << " kernels\n";
  else if (kernels::blas_runs_generic_kernels())
    std::cerr << "note: libtorch's OpenBLAS runs generic kernels on this CPU (OPENBLAS_VERBOSE=2 names them); the "
                 "lens decode uses oneDNN instead\n";
}

}  // namespace detail

}  // namespace baukit
