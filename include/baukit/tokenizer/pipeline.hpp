/// @file pipeline.hpp
/// @brief A tokenizer's parts as `tokenizer.json` describes them (normalizer, pre-tokenizer, BPE model, added
/// tokens, post-processor template, decoder), built from the file or from GPT-2's `vocab.json` + `merges.txt`.
/// Whatever the reader does not support (`Unigram`, `WordPiece`, an unknown type) is refused naming the JSON path.
#pragma once

#include <fmt/format.h>

#include <baukit/tokenizer/added_tokens.hpp>
#include <baukit/tokenizer/bpe.hpp>
#include <baukit/tokenizer/decoders.hpp>
#include <baukit/tokenizer/error.hpp>
#include <baukit/tokenizer/json_reader.hpp>
#include <baukit/tokenizer/normalizers.hpp>
#include <baukit/tokenizer/post_processor.hpp>
#include <baukit/tokenizer/pre_tokenizers.hpp>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

/// Everything `Tokenizer` runs.
struct Pipeline {
  std::unique_ptr<Normalizer> normalizer;                 ///< may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;            ///< may be null
  std::unique_ptr<BpeModel> model;                        ///< the model
  std::vector<AddedToken> added_tokens;                   ///< in file order
  std::unique_ptr<AddedTokenMatcher> raw_matcher;         ///< added tokens matched before normalising
  std::unique_ptr<AddedTokenMatcher> normalized_matcher;  ///< added tokens matched after normalising
  Template special_tokens;                                ///< what `add_special_tokens` puts around a text
  std::unique_ptr<Decoder> decoder;                       ///< may be null (tokens joined by spaces)
  std::vector<std::string> written;                       ///< each id's token as the files write it ("" if none)
  std::vector<std::uint8_t> known;                        ///< whether an id has a token
  std::vector<std::uint8_t> special;                      ///< whether an id is a special added token
  /// Hashes `std::string` and `std::string_view` alike, so that lookups need no temporary string.
  struct StringHash {
    using is_transparent = void;  ///< lets `find` take a `std::string_view`
    /// The hash of `text`.
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };
  /// Token as written -> id (model and added tokens).
  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> ids;
  std::vector<std::filesystem::path> sources;  ///< the files read
  std::vector<std::uint8_t> source_of;         ///< for messages: the file each id came from
  bool byte_level = false;                     ///< the model reads bytes (GPT-2, Llama 3, Qwen)

  /// Records `token` under `id`, naming `where` if the id is out of range or taken.
  void set_token(const std::string& where, std::string_view token, int64_t id, std::uint8_t source) {
    if (id < 0 || id > 10'000'000)
      throw TokenizerError(fmt::format("{}: token '{}' has the id {}, out of range", where, token, id));
    const auto index = static_cast<std::size_t>(id);
    if (index >= written.size()) {
      written.resize(index + 1);
      known.resize(index + 1, 0);
      special.resize(index + 1, 0);
      source_of.resize(index + 1, 0);
    }
    if (known[index] && written[index] != token)
      throw TokenizerError(
          fmt::format("{}: id {} is given to two tokens ('{}' and '{}')", where, id, written[index], token));
    written[index] = token;
    known[index] = 1;
    source_of[index] = source;
  }

  /// Finishes the added tokens: their matchers, and their ids in the tables.
  void index_added_tokens(const std::string& where, std::uint8_t source) {
    std::vector<AddedToken> raw, normalized;
    for (const auto& token : added_tokens) {
      const auto index = static_cast<std::size_t>(token.id);
      set_token(where, token.content, token.id, index < known.size() && known[index] ? source_of[index] : source);
      ids[token.content] = token.id;
      special[static_cast<std::size_t>(token.id)] = token.special ? 1 : 0;
      (token.normalized && normalizer ? normalized : raw).push_back(token);
    }
    raw_matcher = std::make_unique<AddedTokenMatcher>(raw);
    normalized_matcher = std::make_unique<AddedTokenMatcher>(normalized);
  }
};

namespace detail {

/// A value inside `tokenizer.json` with its JSON path, for messages.
class JsonAt {
 public:
  JsonAt(const nlohmann::json& value, std::string path, const std::string& file)
      : value_(value), path_(std::move(path)), file_(file) {}

  [[nodiscard]] const nlohmann::json& value() const { return value_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] bool is_null() const { return value_.is_null(); }

  [[noreturn]] void fail(const std::string& what) const {
    throw TokenizerError(fmt::format("{}: {} {}", file_, path_, what));
  }
  /// The member `key`; a missing one is null.
  [[nodiscard]] JsonAt operator[](const std::string& key) const {
    static const nlohmann::json null_value;
    if (!value_.is_object()) fail("is not an object");
    const auto found = value_.find(key);
    return {found == value_.end() ? null_value : *found, path_ + "." + key, file_};
  }
  /// Element `i` of an array.
  [[nodiscard]] JsonAt at(std::size_t i) const { return {value_[i], fmt::format("{}[{}]", path_, i), file_}; }
  /// The elements of an array.
  [[nodiscard]] std::vector<JsonAt> elements() const {
    if (!value_.is_array()) fail("is not an array");
    std::vector<JsonAt> out;
    for (std::size_t i = 0; i < value_.size(); ++i) out.push_back(at(i));
    return out;
  }
  [[nodiscard]] std::string string() const {
    if (!value_.is_string()) fail(fmt::format("is {}, not a string", describe()));
    return value_.get<std::string>();
  }
  [[nodiscard]] bool boolean(bool fallback) const {
    if (value_.is_null()) return fallback;
    if (!value_.is_boolean()) fail(fmt::format("is {}, not true or false", describe()));
    return value_.get<bool>();
  }
  [[nodiscard]] int64_t integer(int64_t fallback, int64_t max = 10'000'000) const {
    if (value_.is_null()) return fallback;
    if (!value_.is_number_integer() || value_.get<int64_t>() < 0 || value_.get<int64_t>() > max)
      fail(fmt::format("is {}, not an integer from 0 to {}", describe(), max));
    return value_.get<int64_t>();
  }
  /// The component's `type`.
  [[nodiscard]] std::string type() const { return (*this)["type"].string(); }
  [[noreturn]] void unsupported() const {
    throw TokenizerError(fmt::format("{}: {}.type \"{}\" is not supported", file_, path_, type()));
  }
  [[nodiscard]] std::string describe() const {
    auto text = value_.dump();
    return text.size() > 40 ? text.substr(0, 37) + "..." : text;
  }

 private:
  const nlohmann::json& value_;
  std::string path_;
  const std::string& file_;
};

/// A `Sequence` of components, each read by `read`.
template <typename SequenceType, typename Read>
std::unique_ptr<SequenceType> read_sequence(const JsonAt& list, Read read) {
  std::vector<decltype(read(list))> steps;
  for (const auto& step : list.elements()) steps.push_back(read(step));
  return std::make_unique<SequenceType>(std::move(steps));
}

/// A `pattern` object: `{"String": s}` or `{"Regex": r}`.
struct Pattern {
  std::string literal;
  std::shared_ptr<const Regex> regex;
};

inline Pattern read_pattern(const JsonAt& at) {
  if (!at.value().is_object() || at.value().size() != 1) at.fail("is not {\"String\": ...} or {\"Regex\": ...}");
  if (at.value().contains("String")) return {at["String"].string(), nullptr};
  if (!at.value().contains("Regex")) at.fail("is not {\"String\": ...} or {\"Regex\": ...}");
  const auto source = at["Regex"].string();
  try {
    return {"", std::make_shared<const Regex>(source)};
  } catch (const std::invalid_argument& e) {
    at["Regex"].fail(fmt::format("\"{}\": {}", source, e.what()));
  }
}

inline std::unique_ptr<Normalizer> read_normalizer(const JsonAt& at) {
  if (at.is_null()) return nullptr;
  const auto type = at.type();
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(at["prepend"].string());
  if (type == "Replace") {
    auto pattern = read_pattern(at["pattern"]);
    const auto content = at["content"].string();
    if (pattern.regex) return std::make_unique<ReplaceNormalizer>(pattern.regex, content);
    return std::make_unique<ReplaceNormalizer>(pattern.literal, content);
  }
  if (type == "Sequence") return read_sequence<SequenceNormalizer>(at["normalizers"], read_normalizer);
  at.unsupported();
}

inline SplitBehavior read_behavior(const JsonAt& at) {
  const auto name = at.string();
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  at.fail(fmt::format("\"{}\" is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous", name));
}

inline PrependScheme read_prepend_scheme(const JsonAt& at) {
  if (at["prepend_scheme"].is_null())
    return at["add_prefix_space"].boolean(true) ? PrependScheme::always : PrependScheme::never;
  const auto name = at["prepend_scheme"].string();
  if (name == "always") return PrependScheme::always;
  if (name == "first") return PrependScheme::first;
  if (name == "never") return PrependScheme::never;
  at["prepend_scheme"].fail(fmt::format("\"{}\" is not one of always, first, never", name));
}

inline std::string read_replacement(const JsonAt& at) {
  const auto replacement = at["replacement"].is_null() ? std::string("\xE2\x96\x81") : at["replacement"].string();
  if (replacement.empty()) at["replacement"].fail("is empty");
  return replacement;
}

inline std::unique_ptr<PreTokenizer> read_pre_tokenizer(const JsonAt& at) {
  if (at.is_null()) return nullptr;
  const auto type = at.type();
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(at["add_prefix_space"].boolean(true), at["use_regex"].boolean(true));
  if (type == "Split") {
    auto pattern = read_pattern(at["pattern"]);
    const auto behavior = read_behavior(at["behavior"]);
    const bool invert = at["invert"].boolean(false);
    if (pattern.regex) return std::make_unique<SplitPreTokenizer>(pattern.regex, behavior, invert);
    return std::make_unique<SplitPreTokenizer>(pattern.literal, behavior, invert);
  }
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(read_replacement(at), read_prepend_scheme(at),
                                                   at["split"].boolean(true));
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(at["individual_digits"].boolean(false));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const auto elements = at["pretokenizers"].elements();
    for (std::size_t i = 0; i < elements.size(); ++i) {
      steps.push_back(read_pre_tokenizer(elements[i]));
      if (steps.back() && steps.back()->byte_level() && i + 1 < elements.size())
        elements[i].fail("is ByteLevel before other pre-tokenizers: only a last ByteLevel step is supported");
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  at.unsupported();
}

inline std::unique_ptr<Decoder> read_decoder(const JsonAt& at) {
  if (at.is_null()) return nullptr;
  const auto type = at.type();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    auto pattern = read_pattern(at["pattern"]);
    const auto content = at["content"].string();
    return std::make_unique<ReplaceDecoder>(pattern.regex
                                                ? std::make_shared<const ReplaceNormalizer>(pattern.regex, content)
                                                : std::make_shared<const ReplaceNormalizer>(pattern.literal, content));
  }
  if (type == "Strip") {
    const auto content = at["content"].string();
    return std::make_unique<StripDecoder>(content, static_cast<std::size_t>(at["start"].integer(0, 1 << 20)),
                                          static_cast<std::size_t>(at["stop"].integer(0, 1 << 20)));
  }
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(read_replacement(at), read_prepend_scheme(at) != PrependScheme::never);
  if (type == "Sequence") return read_sequence<SequenceDecoder>(at["decoders"], read_decoder);
  at.unsupported();
}

/// The single-sequence template of a post-processor.
inline Template read_post_processor(const JsonAt& at) {
  if (at.is_null()) return {};
  const auto type = at.type();
  if (type == "ByteLevel") return {};
  if (type == "Sequence") {
    Template out;
    for (const auto& step : at["processors"].elements()) out = read_post_processor(step).around(out);
    return out;
  }
  if (type != "TemplateProcessing") at.unsupported();
  Template out;
  bool seen_sequence = false;
  for (const auto& item : at["single"].elements()) {
    if (item.value().contains("Sequence")) {
      if (item["Sequence"]["id"].string() != "A") item["Sequence"]["id"].fail("is not \"A\"");
      seen_sequence = true;
      continue;
    }
    const auto name = item["SpecialToken"]["id"].string();
    const auto special = at["special_tokens"][name];
    if (special.is_null()) at["special_tokens"].fail(fmt::format("has no entry for \"{}\"", name));
    for (const auto& id : special["ids"].elements()) {
      const auto value = id.integer(0);
      (seen_sequence ? out.after : out.before).push_back(value);
    }
  }
  if (!seen_sequence) at["single"].fail("has no {\"Sequence\": {\"id\": \"A\"}}");
  return out;
}

}  // namespace detail

/// The pipeline of `tokenizer.json`, with `tokenizer_config.json`'s `add_bos_token`/`add_eos_token`
/// (`bos_token`/`eos_token`) where it sets them; `config` may be empty.
inline Pipeline read_pipeline(const std::filesystem::path& path, const std::filesystem::path& config = {}) {
  auto file = read_tokenizer_json(path);
  const auto name = path.string();
  static const nlohmann::json null_value;
  auto at = [&](const std::string& key) {
    const auto found = file.document.find(key);
    return detail::JsonAt(found == file.document.end() ? null_value : *found, key, name);
  };
  Pipeline pipeline;
  pipeline.sources.push_back(path);

  const auto model = at("model");
  if (!model.value().is_object()) model.fail("is missing or not an object");
  const auto model_type = model["type"].is_null() ? std::string("BPE") : model.type();
  if (model_type != "BPE") model.unsupported();
  if (!file.has_vocab) model["vocab"].fail("is missing or not an object of token -> id");
  if (!file.has_merges) model["merges"].fail("is missing or not an array");
  if (!model["dropout"].is_null() &&
      !(model["dropout"].value().is_number() && model["dropout"].value().get<double>() == 0.0))
    model["dropout"].fail(fmt::format("is {}: only null (no dropout) is supported", model["dropout"].describe()));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!model[key].is_null() && !model[key].string().empty())
      model[key].fail(fmt::format("is \"{}\": only an empty one is supported", model[key].string()));

  pipeline.normalizer = detail::read_normalizer(at("normalizer"));
  pipeline.pre_tokenizer = detail::read_pre_tokenizer(at("pre_tokenizer"));
  pipeline.decoder = detail::read_decoder(at("decoder"));
  pipeline.byte_level = pipeline.pre_tokenizer && pipeline.pre_tokenizer->byte_level();

  pipeline.ids.reserve(file.vocab.size() + 1024);
  const auto vocab_where = name + ": model.vocab";
  for (auto& [token, id] : file.vocab) {
    if (!pipeline.ids.emplace(token, id).second) model["vocab"].fail(fmt::format("has the token '{}' twice", token));
    pipeline.set_token(vocab_where, token, id, 0);
  }
  if (pipeline.ids.empty()) model["vocab"].fail("is empty");

  const auto added = at("added_tokens");
  if (!added.is_null()) {
    for (const auto& entry : added.elements()) {
      AddedToken token;
      token.content = entry["content"].string();
      if (token.content.empty()) entry["content"].fail("is empty");
      if (utf8::first_invalid(token.content)) entry["content"].fail("is not valid UTF-8");
      token.id = entry["id"].integer(-1);
      if (token.id < 0) entry["id"].fail("is missing");
      token.special = entry["special"].boolean(false);
      token.normalized = entry["normalized"].boolean(!token.special);
      token.lstrip = entry["lstrip"].boolean(false);
      token.rstrip = entry["rstrip"].boolean(false);
      token.single_word = entry["single_word"].boolean(false);
      if (const auto found = pipeline.ids.find(token.content); found != pipeline.ids.end() && found->second != token.id)
        entry.fail(
            fmt::format("gives '{}' the id {}, but model.vocab has it as {}", token.content, token.id, found->second));
      pipeline.added_tokens.push_back(std::move(token));
    }
  }
  pipeline.index_added_tokens(name + ": added_tokens", 0);

  std::vector<MergeRule> merges;
  merges.reserve(file.merges.size());
  std::string joined;
  for (std::size_t i = 0; i < file.merges.size(); ++i) {
    const auto& [left, right] = file.merges[i];
    joined.assign(left).append(right);
    const auto a = pipeline.ids.find(left), b = pipeline.ids.find(right), merged = pipeline.ids.find(joined);
    if (a == pipeline.ids.end() || b == pipeline.ids.end() || merged == pipeline.ids.end())
      throw TokenizerError(fmt::format("{}: model.merges[{}] \"{} {}\" names a token that is not in model.vocab ('{}')",
                                       name, i, left, right,
                                       a == pipeline.ids.end()   ? left
                                       : b == pipeline.ids.end() ? right
                                                                 : joined));
    merges.push_back(
        {static_cast<int32_t>(a->second), static_cast<int32_t>(b->second), static_cast<int32_t>(merged->second)});
  }

  BpeOptions options;
  options.byte_level = pipeline.byte_level;
  options.byte_fallback = model["byte_fallback"].boolean(false);
  options.ignore_merges = model["ignore_merges"].boolean(false);
  options.fuse_unk = model["fuse_unk"].boolean(false);
  if (!model["unk_token"].is_null()) {
    const auto unk = model["unk_token"].string();
    const auto found = pipeline.ids.find(unk);
    if (found == pipeline.ids.end()) model["unk_token"].fail(fmt::format("\"{}\" is not in model.vocab", unk));
    options.unk_id = static_cast<int32_t>(found->second);
  }
  pipeline.model = std::make_unique<BpeModel>(pipeline.written, merges, options);
  if (pipeline.byte_level)
    if (const auto byte = pipeline.model->missing_byte())
      model["vocab"].fail(
          fmt::format("lacks the byte-level token of byte 0x{:02x}, which a ByteLevel pre-tokenizer needs", *byte));

  pipeline.special_tokens = detail::read_post_processor(at("post_processor"));
  if (!config.empty()) {
    std::string text;
    if (const auto error = io::RegularFile(config).read_all(text, io::kMaxTextFileBytes); !error.empty())
      throw TokenizerError(fmt::format("{}: {}", config.string(), error));
    const auto settings = nlohmann::json::parse(text, nullptr, false);
    if (settings.is_discarded() || !settings.is_object())
      throw TokenizerError(fmt::format("{}: not a JSON object", config.string()));
    const auto config_name = config.string();
    auto flag = [&](const char* key) -> std::optional<bool> {
      if (!settings.contains(key) || settings[key].is_null()) return std::nullopt;
      return detail::JsonAt(settings[key], key, config_name).boolean(false);
    };
    const auto add_bos = flag("add_bos_token"), add_eos = flag("add_eos_token");
    // transformers rebuilds the template from these flags (LlamaTokenizerFast, GemmaTokenizerFast).
    auto token_id = [&](const char* key) -> std::optional<int64_t> {
      if (!settings.contains(key) || settings[key].is_null()) return std::nullopt;
      const auto& value = settings[key];
      const detail::JsonAt where(value, key, config_name);
      const auto content = value.is_object() ? where["content"].string() : where.string();
      const auto found = pipeline.ids.find(content);
      if (found == pipeline.ids.end()) where.fail(fmt::format("\"{}\" is not a token of {}", content, name));
      return found->second;
    };
    if (add_bos || add_eos) {
      Template rebuilt;
      if (add_bos.value_or(false)) {
        const auto bos = token_id("bos_token");
        if (!bos) throw TokenizerError(fmt::format("{}: add_bos_token is true but bos_token is not set", config_name));
        rebuilt.before.push_back(*bos);
      }
      if (add_eos.value_or(false)) {
        const auto eos = token_id("eos_token");
        if (!eos) throw TokenizerError(fmt::format("{}: add_eos_token is true but eos_token is not set", config_name));
        rebuilt.after.push_back(*eos);
      }
      pipeline.special_tokens = rebuilt;
    }
    pipeline.sources.push_back(config);
  }
  return pipeline;
}

}  // namespace baukit::tokenizer
