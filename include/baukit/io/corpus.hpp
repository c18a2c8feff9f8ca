/// @file io/corpus.hpp
/// @brief `CorpusReader`: a corpus read as a stream, plain text (documents separated by blank lines) or JSON
/// lines (one object per line, its text in a field), tokenized document by document and cut into equal windows of
/// tokens, documents joined by a separator token as the tuned-lens reference's `chunk_and_tokenize` joins them.
/// Memory stays bounded whatever the corpus's size: one document (or one `max_document_bytes` piece of a longer
/// one) and less than a window of tokens at a time. Window `i` of the corpus goes to rank `i % world_size`, so
/// processes split it deterministically.
///
/// @code
/// baukit::io::CorpusReader corpus("train.jsonl", tokenizer, baukit::io::CorpusOptions().window(128));
/// while (auto window = corpus.next()) model->forward(torch::tensor(*window).unsqueeze(0), {}, nullptr);
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/error.hpp>
#include <baukit/tokenizer.hpp>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace baukit::io {

/// How a corpus file is read.
enum class CorpusFormat {
  automatic,   ///< JSON lines for `.jsonl` and `.json` files, plain text otherwise.
  plain_text,  ///< Documents separated by blank lines.
  json_lines,  ///< One JSON object per line, its text in `CorpusOptions::text_field`.
};

/// How `CorpusReader` reads and cuts a corpus.
struct CorpusOptions {
  /// Tokens per window.
  TORCH_ARG(int64_t, window) = 256;
  /// The file's format.
  TORCH_ARG(CorpusFormat, format) = CorpusFormat::automatic;
  /// The field of a JSON line holding its text.
  TORCH_ARG(std::string, text_field) = "text";
  /// The token put between documents; -1: the tokenizer's `<|endoftext|>` when it has one, else none.
  TORCH_ARG(int64_t, separator) = -1;
  /// A plain-text document longer than this is tokenized in pieces of at most this many bytes, cut at a line end
  /// or, within one long line, at a space (a JSON line longer than this is an error).
  TORCH_ARG(int64_t, max_document_bytes) = int64_t{1} << 22;
  /// This process's rank: it gets windows `rank, rank + world_size, ...`.
  TORCH_ARG(int64_t, rank) = 0;
  /// The number of processes sharing the corpus.
  TORCH_ARG(int64_t, world_size) = 1;
};

/// Reads a corpus file as a stream of token windows; see the file's description.
class CorpusReader {
 public:
  /// Opens `path` (the tokenizer is copied, sharing its tables); errors name it.
  CorpusReader(std::filesystem::path path, const Tokenizer& tokenizer, CorpusOptions options = {})
      : path_(std::move(path)), tokenizer_(tokenizer), options_(std::move(options)) {
    if (options_.window() < 1)
      throw std::invalid_argument(fmt::format("corpus: window {} must be positive", options_.window()));
    if (options_.world_size() < 1 || options_.rank() < 0 || options_.rank() >= options_.world_size())
      throw std::invalid_argument(
          fmt::format("corpus: rank {} of world size {} does not exist", options_.rank(), options_.world_size()));
    if (options_.max_document_bytes() < 64)
      throw std::invalid_argument(
          fmt::format("corpus: max_document_bytes {} is below 64", options_.max_document_bytes()));
    if (options_.format() == CorpusFormat::automatic) {
      const auto extension = path_.extension().string();
      options_.format(extension == ".jsonl" || extension == ".json" ? CorpusFormat::json_lines
                                                                    : CorpusFormat::plain_text);
    }
    if (options_.separator() < 0) options_.separator(tokenizer.special_token("<|endoftext|>").value_or(-1));
    std::error_code error;
    if (!std::filesystem::is_regular_file(path_, error))
      throw CheckpointError(CheckpointErrorKind::io, path_, "not a regular file (a corpus must be one)");
    total_bytes_ = static_cast<int64_t>(std::filesystem::file_size(path_, error));
    file_.open(path_, std::ios::binary);
    if (!file_) throw CheckpointError(CheckpointErrorKind::io, path_, "cannot be opened");
  }

  /// The next window of this rank, or none at the end (a last, shorter window is dropped).
  std::optional<std::vector<int64_t>> next() {
    while (true) {
      while (static_cast<int64_t>(tokens_.size()) < options_.window())
        if (!read_document()) return std::nullopt;
      std::vector<int64_t> window(tokens_.begin(), tokens_.begin() + options_.window());
      tokens_.erase(tokens_.begin(), tokens_.begin() + options_.window());
      if (windows_++ % options_.world_size() == options_.rank()) return window;
    }
  }

  /// Up to `count` windows of this rank (fewer at the end).
  std::vector<std::vector<int64_t>> next_batch(int64_t count) {
    std::vector<std::vector<int64_t>> batch;
    while (static_cast<int64_t>(batch.size()) < count)
      if (auto window = next())
        batch.push_back(std::move(*window));
      else
        break;
    return batch;
  }

  /// Skips this rank's next `count` windows (to resume where a run stopped); returns how many there were.
  int64_t skip(int64_t count) {
    int64_t skipped = 0;
    while (skipped < count && next()) ++skipped;
    return skipped;
  }

  /// Windows of the whole corpus cut so far (every rank's).
  [[nodiscard]] int64_t windows_cut() const { return windows_; }
  /// Documents read so far.
  [[nodiscard]] int64_t documents() const { return documents_; }
  /// Bytes of the file read so far, against `total_bytes()`: for progress.
  [[nodiscard]] int64_t bytes_read() const { return bytes_read_; }
  /// The file's size.
  [[nodiscard]] int64_t total_bytes() const { return total_bytes_; }
  /// The options in effect (the format and separator resolved).
  [[nodiscard]] const CorpusOptions& options() const { return options_; }
  /// The file.
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  // A piece of a line: the whole line, or (within a line longer than max_document_bytes) a part cut at a space.
  struct Chunk {
    std::string text;
    bool starts_line = true;  // the piece begins a line
    bool ends_line = true;    // the piece ends its line
  };

  // The next chunk, or none at the end of the file.
  std::optional<Chunk> next_chunk() {
    if (unread_) return std::exchange(unread_, std::nullopt);
    const auto limit = static_cast<std::size_t>(options_.max_document_bytes());
    Chunk chunk{std::exchange(carry_, {}), !in_line_, false};
    while (chunk.text.size() < limit) {
      const int c = file_.get();
      if (c == std::char_traits<char>::eof()) {
        if (chunk.text.empty() && !in_line_) return std::nullopt;
        chunk.ends_line = true;
        in_line_ = false;
        return chunk;
      }
      ++bytes_read_;
      if (c == '\n') {
        ++line_number_;
        chunk.ends_line = true;
        in_line_ = false;
        return chunk;
      }
      chunk.text.push_back(static_cast<char>(c));
    }
    // A line longer than the limit: cut at its last space, or else before a UTF-8 sequence, and go on from there.
    in_line_ = true;
    auto cut = chunk.text.find_last_of(' ');
    if (cut == std::string::npos || cut == 0) {
      cut = chunk.text.size();
      while (cut > 1 && (static_cast<unsigned char>(chunk.text[cut - 1]) & 0xC0) == 0x80) --cut;
      if (cut > 1 && static_cast<unsigned char>(chunk.text[cut - 1]) >= 0xC0) --cut;
    }
    carry_ = chunk.text.substr(cut);
    chunk.text.resize(cut);
    return chunk;
  }

  // The next JSON line's text, or none at the end.
  std::optional<std::string> next_json_text() {
    while (auto chunk = next_chunk()) {
      if (!chunk->ends_line || !chunk->starts_line)
        throw CheckpointError(CheckpointErrorKind::size, path_,
                              fmt::format("line {} is longer than max_document_bytes ({})", line_number_ + 1,
                                          options_.max_document_bytes()));
      if (chunk->text.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(chunk->text);
      } catch (const nlohmann::json::parse_error& e) {
        throw CheckpointError(CheckpointErrorKind::header, path_,
                              fmt::format("line {} is not JSON: {}", line_number_, e.what()));
      }
      const auto& field = options_.text_field();
      if (!object.is_object() || !object.contains(field) || !object[field].is_string())
        throw CheckpointError(CheckpointErrorKind::header, path_,
                              fmt::format("line {} has no string field '{}'", line_number_, field));
      return object[field].get<std::string>();
    }
    return std::nullopt;
  }

  // The next plain-text document (lines up to a blank one), at most max_document_bytes; none at the end.
  std::optional<std::string> next_plain_text() {
    std::string text;
    while (auto chunk = next_chunk()) {
      const bool blank =
          chunk->starts_line && chunk->ends_line && chunk->text.find_first_not_of(" \t\r") == std::string::npos;
      if (blank) {
        if (text.empty()) continue;
        return text;
      }
      if (!text.empty() &&
          text.size() + chunk->text.size() >= static_cast<std::size_t>(options_.max_document_bytes())) {
        unread_ = std::move(chunk);
        continues_ = true;  // the document goes on in the next piece: no separator before it
        return text;
      }
      text += chunk->text;
      if (chunk->ends_line) text += '\n';
      if (!chunk->ends_line) {  // a long line cut at a space: its rest is the next piece of this document
        continues_ = true;
        return text;
      }
    }
    if (text.empty()) return std::nullopt;
    return text;
  }

  // Appends the next document's tokens (after the separator); false at the end of the file.
  bool read_document() {
    const bool first_piece = !continues_;  // of its document: BOS (where the tokenizer adds one) and separator
    const bool separate = documents_ > 0 && first_piece;
    continues_ = false;
    auto text = options_.format() == CorpusFormat::json_lines ? next_json_text() : next_plain_text();
    if (!text) return false;
    std::vector<int64_t> ids;
    try {
      ids = tokenizer_.encode(*text, EncodeOptions{false, first_piece});
    } catch (const std::invalid_argument& e) {
      throw CheckpointError(CheckpointErrorKind::header, path_,
                            fmt::format("the document ending at line {}: {}", line_number_, e.what()));
    }
    if (separate && options_.separator() >= 0) tokens_.push_back(options_.separator());
    if (!continues_) ++documents_;
    tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    return true;
  }

  std::filesystem::path path_;
  Tokenizer tokenizer_;  // a copy (it shares the vocabulary): the reader may outlive the caller's
  CorpusOptions options_;
  std::ifstream file_;
  std::deque<int64_t> tokens_;
  std::optional<Chunk> unread_;  // a chunk read but left for the next document
  std::string carry_;            // the rest of a long line after a cut
  bool in_line_ = false;         // the last chunk ended inside a line
  bool continues_ = false;       // the last piece was cut from a longer document
  int64_t total_bytes_ = 0, bytes_read_ = 0, line_number_ = 0, documents_ = 0, windows_ = 0;
};

}  // namespace baukit::io
