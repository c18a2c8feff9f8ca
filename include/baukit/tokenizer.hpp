/// @file tokenizer.hpp
/// @brief The tokenizers of today's models: Hugging Face's `tokenizer.json` (Llama 3, Qwen 2.5/3, Gemma 2/3,
/// Mistral, Pythia) and GPT-2's `vocab.json` + `merges.txt`, through one pipeline with the Hugging Face tokenizers
/// library's semantics, token for token equal to its reference implementation.
///
/// @code
/// auto tok = baukit::Tokenizer::from_pretrained("gpt2-xl");
/// std::vector<int64_t> ids = tok.encode("Hello world");   // {15496, 995}
/// std::string text = tok.decode(ids);                     // "Hello world"
/// @endcode
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <baukit/text/utf8.hpp>
#include <baukit/tokenizer/error.hpp>
#include <baukit/tokenizer/gpt2_files.hpp>
#include <baukit/tokenizer/pipeline.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace baukit {

/// Texts encoded together, left-padded to the longest (`Tokenizer::encode_batch`).
struct PaddedBatch {
  std::vector<std::vector<int64_t>> input_ids;       ///< [batch][longest]: padding first, then the tokens.
  std::vector<std::vector<int64_t>> attention_mask;  ///< [batch][longest]: 0 for padding, 1 for a token.
  std::vector<std::vector<int64_t>> ids;             ///< Each text's ids, unpadded.
};

/// How `Tokenizer::encode` treats special tokens.
struct EncodeOptions {
  /// Recognise special added tokens (`<|begin_of_text|>`, `<start_of_turn>`) written in the text; otherwise they
  /// are text. Non-special added tokens are always recognised, as in Hugging Face.
  bool allow_special = false;
  /// Put the post-processor's tokens around the text (Gemma's and Mistral's BOS), as Hugging Face's `encode` does
  /// by default.
  bool add_special_tokens = true;
};

/// A tokenizer: normalizer, pre-tokenizer, BPE model, added tokens, post-processor and decoder. Copies share one
/// pipeline and its word cache; `encode` and `decode` may run concurrently.
class Tokenizer {
 public:
  /// Reads `tokenizer.json` (and `tokenizer_config.json` if present) from `directory` when it has one, else GPT-2's
  /// `vocab.json`, `merges.txt` and (if present) `added_tokens.json`.
  static Tokenizer from_pretrained(const std::filesystem::path& directory) {
    if (std::filesystem::exists(directory / "tokenizer.json")) {
      const auto config = directory / "tokenizer_config.json";
      return from_tokenizer_json(directory / "tokenizer.json",
                                 std::filesystem::exists(config) ? config : std::filesystem::path());
    }
    const auto added = directory / "added_tokens.json";
    return Tokenizer(directory / "vocab.json", directory / "merges.txt",
                     std::filesystem::exists(added) ? added : std::filesystem::path());
  }

  /// Reads a `tokenizer.json`; `config` (a `tokenizer_config.json`) may be empty.
  static Tokenizer from_tokenizer_json(const std::filesystem::path& tokenizer_json,
                                       const std::filesystem::path& config = {}) {
    return Tokenizer(tokenizer::read_pipeline(tokenizer_json, config));
  }

  /// Reads GPT-2's files; `added_tokens` may be empty.
  Tokenizer(const std::filesystem::path& vocab, const std::filesystem::path& merges,
            const std::filesystem::path& added_tokens = {})
      : Tokenizer(tokenizer::read_gpt2_pipeline(vocab, merges, added_tokens)) {}

  /// Token ids of `text` (valid UTF-8; throws `std::invalid_argument` naming the byte offset otherwise).
  [[nodiscard]] std::vector<int64_t> encode(std::string_view text, const EncodeOptions& options) const {
    if (auto bad = utf8::first_invalid(text))
      throw std::invalid_argument(fmt::format("tokenizer: the text is not valid UTF-8 (byte {} is 0x{:02x})", *bad,
                                              static_cast<unsigned char>(text[*bad])));
    const auto& p = *pipeline_;
    std::vector<int64_t> ids;
    if (options.add_special_tokens) ids = p.special_tokens.before;
    for (const auto& segment : p.raw_matcher->split(text, options.allow_special)) {
      if (segment.id >= 0) {
        ids.push_back(segment.id);
        continue;
      }
      auto section = std::string(text.substr(segment.begin, segment.end - segment.begin));
      const bool at_start = segment.begin == 0;
      if (p.normalizer) section = p.normalizer->normalize(std::move(section));
      for (const auto& part : p.normalized_matcher->split(section, options.allow_special)) {
        if (part.id >= 0) {
          ids.push_back(part.id);
          continue;
        }
        std::vector<tokenizer::Piece> pieces{
            {section.substr(part.begin, part.end - part.begin), at_start && part.begin == 0}};
        if (p.pre_tokenizer) p.pre_tokenizer->pre_tokenize(pieces);
        for (const auto& piece : pieces) p.model->encode(piece.text, ids);
      }
    }
    if (options.add_special_tokens) ids.insert(ids.end(), p.special_tokens.after.begin(), p.special_tokens.after.end());
    return ids;
  }

  /// Token ids of `text`, special tokens recognised only when `allow_special`, the post-processor's tokens (BOS)
  /// added as Hugging Face's `encode` does.
  [[nodiscard]] std::vector<int64_t> encode(std::string_view text, bool allow_special = false) const {
    return encode(text, EncodeOptions{allow_special, true});
  }

  /// Encodes each of `texts` and left-pads them to the longest with `pad_id` (masked out, so any id the model has),
  /// as Hugging Face's `tokenizer(texts, padding=True)` with `padding_side="left"` does: what a batched forward
  /// (`generate_ids`, `logit_lens_batch`) takes.
  [[nodiscard]] PaddedBatch encode_batch(const std::vector<std::string>& texts, const EncodeOptions& options = {},
                                         int64_t pad_id = 0) const {
    PaddedBatch batch;
    std::size_t longest = 0;
    for (const auto& text : texts) {
      batch.ids.push_back(encode(text, options));
      longest = std::max(longest, batch.ids.back().size());
    }
    for (const auto& ids : batch.ids) {
      const auto padding = longest - ids.size();
      auto& row = batch.input_ids.emplace_back(padding, pad_id);
      row.insert(row.end(), ids.begin(), ids.end());
      auto& mask = batch.attention_mask.emplace_back(padding, 0);
      mask.resize(longest, 1);
    }
    return batch;
  }

  /// The text of `ids` through the decoder, as Hugging Face's `decode` gives it (bytes that do not form valid
  /// UTF-8 become U+FFFD); `skip_special` leaves out special tokens. Throws `std::out_of_range` naming an id
  /// outside the vocabulary.
  [[nodiscard]] std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const {
    const auto& p = *pipeline_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const auto id : ids) {
      check_known(id);
      if (skip_special && p.special[static_cast<std::size_t>(id)]) continue;
      tokens.push_back(p.written[static_cast<std::size_t>(id)]);
    }
    if (!p.decoder) {
      std::string joined;
      for (std::size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
      return joined;
    }
    p.decoder->decode_chain(tokens);
    std::string joined;
    for (const auto& token : tokens) joined += token;
    return utf8::replace_invalid(joined);
  }

  /// The text of one token, as Hugging Face's `decode([id])` gives it (U+FFFD for part of a character).
  [[nodiscard]] std::string decode(int64_t id) const { return decode(std::vector<int64_t>{id}); }

  /// The text of one token as the lens shows it: like `decode(id)`, but an id the vocabulary lacks (a model's
  /// padded embedding rows: Qwen has 151,936 for 151,665 tokens) is the visible placeholder `<id N>`.
  [[nodiscard]] std::string token_text(int64_t id) const {
    if (!is_known(id)) return fmt::format("<id {}>", id);
    return decode(id);
  }

  /// The token of `id` as the tokenizer's files write it (`Ġworld`, `▁world`, `<0x0A>`).
  [[nodiscard]] const std::string& token_as_written(int64_t id) const {
    check_known(id);
    return pipeline_->written[static_cast<std::size_t>(id)];
  }

  /// The id of a token as the files write it (model or added token), if there is one.
  [[nodiscard]] std::optional<int64_t> token_to_id(const std::string& token) const {
    const auto found = pipeline_->ids.find(token);
    if (found == pipeline_->ids.end()) return std::nullopt;
    return found->second;
  }

  /// One more than the largest token id.
  [[nodiscard]] int64_t vocab_size() const { return static_cast<int64_t>(pipeline_->written.size()); }

  /// Throws `TokenizerError` if an id of `ids` (an encoded prompt) is beyond a model's `model_vocab_size`
  /// embedding rows, naming the file, the token as written there, its id and the size: a tokenizer of another
  /// model would otherwise fail deep in the forward.
  void check_ids_fit(const std::vector<int64_t>& ids, int64_t model_vocab_size) const {
    for (const auto id : ids) {
      if (id < model_vocab_size) continue;
      const bool known = is_known(id);
      throw TokenizerError(
          fmt::format("{}: token '{}' has the id {}, beyond the model's vocab_size of {} "
                      "(config.json): the tokenizer belongs to another model",
                      known ? pipeline_->sources[pipeline_->source_of[static_cast<std::size_t>(id)]].string()
                            : std::string("tokenizer"),
                      known ? token_as_written(id) : std::string("?"), id, model_vocab_size));
    }
  }

  /// The id of a special (or other added) token such as `<|endoftext|>`, if the tokenizer has it.
  [[nodiscard]] std::optional<int64_t> special_token(const std::string& content) const {
    for (const auto& token : pipeline_->added_tokens)
      if (token.content == content) return token.id;
    return std::nullopt;
  }

  /// The ids `encode` puts before a text when it adds special tokens (BOS), possibly none.
  [[nodiscard]] const std::vector<int64_t>& prefix_ids() const { return pipeline_->special_tokens.before; }

  /// The files this tokenizer was read from.
  [[nodiscard]] const std::vector<std::filesystem::path>& sources() const { return pipeline_->sources; }

  /// Words held by the shared word cache (bounded).
  [[nodiscard]] std::size_t cached_words() const { return pipeline_->model->cached_words(); }

 private:
  explicit Tokenizer(tokenizer::Pipeline pipeline)
      : pipeline_(std::make_shared<const tokenizer::Pipeline>(std::move(pipeline))) {}

  [[nodiscard]] bool is_known(int64_t id) const {
    return id >= 0 && id < vocab_size() && pipeline_->known[static_cast<std::size_t>(id)];
  }
  void check_known(int64_t id) const {
    if (!is_known(id))
      throw std::out_of_range(
          fmt::format("tokenizer: token id {} is not in the vocabulary (0..{})", id, vocab_size() - 1));
  }

  std::shared_ptr<const tokenizer::Pipeline> pipeline_;
};

}  // namespace baukit
