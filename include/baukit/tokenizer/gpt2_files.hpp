/// @file gpt2_files.hpp
/// @brief GPT-2's own tokenizer files (`vocab.json`, `merges.txt`, GPT-J's `added_tokens.json`) read into the
/// same pipeline a `tokenizer.json` with a ByteLevel pre-tokenizer and decoder describes.
#pragma once

#include <fmt/format.h>

#include <baukit/io/regular_file.hpp>
#include <baukit/tokenizer/byte_level.hpp>
#include <baukit/tokenizer/error.hpp>
#include <baukit/tokenizer/pipeline.hpp>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

namespace detail {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::string text;
  if (const auto error = io::RegularFile(path).read_all(text, io::kMaxTextFileBytes); !error.empty())
    throw TokenizerError(fmt::format("{}: {}", path.string(), error));
  return text;
}

/// Reads a JSON object of token -> integer id by nlohmann's SAX interface: the pairs in file order, without a
/// document tree.
class TokenMapReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<std::pair<std::string, int64_t>> entries;  ///< (token, id) in file order
  std::string error;                                     ///< why the file was refused, if it was

  bool null() override { return refuse_value(); }
  bool boolean(bool /*value*/) override { return refuse_value(); }
  bool number_integer(number_integer_t value) override { return add(value); }
  bool number_unsigned(number_unsigned_t value) override {
    return value > static_cast<number_unsigned_t>(std::numeric_limits<int64_t>::max())
               ? refuse_value()
               : add(static_cast<int64_t>(value));
  }
  bool number_float(number_float_t /*value*/, const string_t& /*text*/) override { return refuse_value(); }
  bool string(string_t& /*value*/) override { return refuse_value(); }
  bool binary(binary_t& /*value*/) override { return refuse_value(); }
  bool start_object(std::size_t /*elements*/) override {
    if (depth_ != 0) return refuse_value();
    depth_ = 1;
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t /*elements*/) override { return refuse_value(); }
  bool end_array() override { return true; }
  bool key(string_t& token) override {
    key_ = std::move(token);
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& e) override {
    error = std::string("not valid JSON: ") + e.what();
    return false;
  }

 private:
  bool add(int64_t id) {
    if (depth_ != 1) return refuse_value();
    entries.emplace_back(std::move(key_), id);
    return true;
  }
  bool refuse_value() {
    error = depth_ == 1 ? fmt::format("token '{}' has a non-integer id", key_) : "not a JSON object of token -> id";
    return false;
  }
  int depth_ = 0;
  std::string key_;
};

/// A JSON object of token -> id (vocab.json, added_tokens.json), its pairs in file order.
inline std::vector<std::pair<std::string, int64_t>> read_token_map(const std::filesystem::path& path) {
  const auto text = read_text_file(path);
  TokenMapReader reader;
  if (!nlohmann::json::sax_parse(text, &reader) || !reader.error.empty())
    throw TokenizerError(
        fmt::format("{}: {}", path.string(), reader.error.empty() ? "not a JSON object of token -> id" : reader.error));
  return std::move(reader.entries);
}

/// An added token as GPT-2's files give them: special, matched in the raw text.
inline AddedToken special_token(std::string content, int64_t id) {
  AddedToken token;
  token.content = std::move(content);
  token.id = id;
  token.special = true;
  return token;
}

}  // namespace detail

/// GPT-2's pipeline from its files; `added_tokens` may be empty.
inline Pipeline read_gpt2_pipeline(const std::filesystem::path& vocab_path, const std::filesystem::path& merges_path,
                                   const std::filesystem::path& added_tokens = {}) {
  Pipeline pipeline;
  pipeline.byte_level = true;
  pipeline.pre_tokenizer = std::make_unique<ByteLevelPreTokenizer>(false, true);
  pipeline.decoder = std::make_unique<ByteLevelDecoder>();
  pipeline.sources.push_back(vocab_path);
  const auto vocab_name = vocab_path.string();

  const auto vocab = detail::read_token_map(vocab_path);
  if (vocab.empty()) throw TokenizerError(fmt::format("{}: not a JSON object of token -> id", vocab_name));
  for (const auto& [token, id] : vocab) {
    if (pipeline.ids.count(token)) throw TokenizerError(fmt::format("{}: token '{}' appears twice", vocab_name, token));
    pipeline.set_token(vocab_name, token, id, 0);
    pipeline.ids.emplace(token, id);
    // Tokens outside the byte alphabet can only be matched whole, like <|endoftext|>.
    if (token == "<|endoftext|>" || !byte_level::to_bytes(token))
      pipeline.added_tokens.push_back(detail::special_token(token, id));
  }
  if (!added_tokens.empty()) {
    pipeline.sources.push_back(added_tokens);
    for (const auto& [content, id] : detail::read_token_map(added_tokens)) {
      if (const auto found = pipeline.ids.find(content); found != pipeline.ids.end() && found->second == id) continue;
      pipeline.set_token(added_tokens.string(), content, id, 1);
      pipeline.ids[content] = id;
      pipeline.added_tokens.push_back(detail::special_token(content, id));
    }
  }
  pipeline.index_added_tokens(vocab_name, 0);

  const std::string text = detail::read_text_file(merges_path);
  std::vector<MergeRule> merges;
  merges.reserve(vocab.size());
  std::size_t line_number = 0, at = 0;
  std::string joined;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + at, end - at);
    at = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos)
      throw TokenizerError(fmt::format("{}:{}: expected two tokens separated by one space, got '{}'",
                                       merges_path.string(), line_number, line));
    const std::string left(line.substr(0, space)), right(line.substr(space + 1));
    joined.assign(left).append(right);
    const auto a = pipeline.ids.find(left), b = pipeline.ids.find(right), merged = pipeline.ids.find(joined);
    if (a == pipeline.ids.end() || b == pipeline.ids.end() || merged == pipeline.ids.end())
      throw TokenizerError(fmt::format("{}:{}: merge '{}' names a token that is not in vocab.json",
                                       merges_path.string(), line_number, line));
    merges.push_back(
        {static_cast<int32_t>(a->second), static_cast<int32_t>(b->second), static_cast<int32_t>(merged->second)});
  }
  BpeOptions options;
  options.byte_level = true;
  pipeline.model = std::make_unique<BpeModel>(pipeline.written, merges, options);
  if (const auto byte = pipeline.model->missing_byte())
    throw TokenizerError(fmt::format("{}: the byte token for 0x{:02x} is missing", vocab_name, *byte));
  return pipeline;
}

}  // namespace baukit::tokenizer
