/// @file json_reader.hpp
/// @brief Reads `tokenizer.json` with simdjson: the vocabulary and merges (hundreds of thousands of entries for
/// Gemma 3) straight into vectors, everything else into a small nlohmann JSON document.
#pragma once

#include <fmt/format.h>
#include <simdjson.h>

#include <baukit/io/regular_file.hpp>
#include <baukit/tokenizer/error.hpp>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

/// A `tokenizer.json` as read; the vocabulary's and merges' strings point into the parser's buffer.
struct TokenizerJson {
  std::unique_ptr<simdjson::dom::parser> parser;            ///< owns the strings of `vocab` and `merges`
  nlohmann::json document;                                  ///< all of it but `model.vocab` and `model.merges`
  std::vector<std::pair<std::string_view, int64_t>> vocab;  ///< `model.vocab` in file order
  std::vector<std::pair<std::string_view, std::string_view>> merges;  ///< `model.merges`, either form
  bool has_vocab = false;                                             ///< whether `model.vocab` was an object
  bool has_merges = false;                                            ///< whether `model.merges` was an array
};

namespace detail {

/// Deepest nesting accepted (real files nest five levels).
inline constexpr std::size_t kMaxTokenizerJsonDepth = 64;

inline void read_vocab(simdjson::dom::object vocab, TokenizerJson& out, const std::string& file) {
  out.vocab.reserve(vocab.size());
  for (const auto field : vocab) {
    int64_t id = -1;
    if (field.value.is_int64()) id = int64_t(field.value);
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      throw TokenizerError(fmt::format("{}: model.vocab: token '{}' has the id {}, not an integer from 0 to 2^31", file,
                                       field.key, simdjson::minify(field.value)));
    out.vocab.emplace_back(field.key, id);
  }
}

inline void read_merges(simdjson::dom::array merges, TokenizerJson& out, const std::string& file) {
  out.merges.reserve(merges.size());
  for (const auto merge : merges) {
    const auto index = out.merges.size();
    if (merge.is_string()) {
      const std::string_view text(merge);
      const auto space = text.find(' ');
      if (space == std::string_view::npos || space == 0 || space + 1 == text.size() ||
          text.find(' ', space + 1) != std::string_view::npos)
        throw TokenizerError(
            fmt::format("{}: model.merges[{}] \"{}\" is not two tokens separated by one space", file, index, text));
      out.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      continue;
    }
    if (merge.is_array()) {
      const simdjson::dom::array pair(merge);
      if (pair.size() == 2 && pair.at(0).is_string() && pair.at(1).is_string()) {
        out.merges.emplace_back(std::string_view(pair.at(0)), std::string_view(pair.at(1)));
        continue;
      }
    }
    throw TokenizerError(fmt::format("{}: model.merges[{}] is {}, not a string \"a b\" or a pair [a, b]", file, index,
                                     simdjson::minify(merge).substr(0, 40)));
  }
}

/// A small part of the file (not the vocabulary or merges) as an nlohmann document.
inline nlohmann::json to_document(simdjson::dom::element element) {
  return nlohmann::json::parse(simdjson::minify(element));
}

}  // namespace detail

/// Reads `path` (a regular file of at most 1 GiB); throws `TokenizerError` naming it and what is wrong.
inline TokenizerJson read_tokenizer_json(const std::filesystem::path& path) {
  const auto file = path.string();
  std::string text;
  if (const auto error = io::RegularFile(path).read_all(text, io::kMaxTextFileBytes); !error.empty())
    throw TokenizerError(fmt::format("{}: {}", file, error));
  const auto size = text.size();
  text.reserve(size + simdjson::SIMDJSON_PADDING);  // simdjson reads up to the padding past the end
  TokenizerJson out;
  out.parser = std::make_unique<simdjson::dom::parser>();
  auto& parser = *out.parser;
  if (parser.allocate(size, detail::kMaxTokenizerJsonDepth) != simdjson::SUCCESS)
    throw TokenizerError(fmt::format("{}: cannot allocate the parser for {} bytes", file, size));
  simdjson::dom::element root;
  if (const auto error = parser.parse(text.data(), size, false).get(root); error != simdjson::SUCCESS)
    throw TokenizerError(fmt::format("{}: not valid JSON ({})", file, simdjson::error_message(error)));
  if (!root.is_object()) throw TokenizerError(fmt::format("{}: not a JSON object", file));

  out.document = nlohmann::json::object();
  for (const auto field : simdjson::dom::object(root)) {
    const std::string key(field.key);
    if (key != "model" || !field.value.is_object()) {
      out.document[key] = detail::to_document(field.value);
      continue;
    }
    auto& model = out.document[key] = nlohmann::json::object();
    for (const auto member : simdjson::dom::object(field.value)) {
      const std::string name(member.key);
      if (name == "vocab" && member.value.is_object()) {
        detail::read_vocab(member.value, out, file);
        out.has_vocab = true;
        model[name] = nullptr;  // recorded as present
      } else if (name == "merges" && member.value.is_array()) {
        detail::read_merges(member.value, out, file);
        out.has_merges = true;
        model[name] = nullptr;
      } else {
        model[name] = detail::to_document(member.value);
      }
    }
  }
  return out;
}

}  // namespace baukit::tokenizer
