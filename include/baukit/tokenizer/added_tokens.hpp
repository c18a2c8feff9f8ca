/// @file added_tokens.hpp
/// @brief Added tokens (`<|begin_of_text|>`, `<start_of_turn>`, Qwen's `<tool_call>`): found in one left-to-right
/// pass over the text with a trie (leftmost, then longest, as the Rust library's Aho-Corasick search), with
/// `single_word`, `lstrip` and `rstrip`. Special tokens are found only when the caller allows them.
#pragma once

#include <array>
#include <baukit/tokenizer/unicode.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace baukit::tokenizer {

/// One entry of `tokenizer.json`'s `added_tokens`.
struct AddedToken {
  std::string content;       ///< its text
  int64_t id = 0;            ///< its id
  bool special = false;      ///< a control token (BOS, EOS, chat markers): matched only when allowed
  bool normalized = false;   ///< matched in the normalised text instead of the raw text
  bool lstrip = false;       ///< takes the whitespace on its left
  bool rstrip = false;       ///< takes the whitespace on its right
  bool single_word = false;  ///< matched only where no word character touches it
};

/// A part of a text: an added token's match (`id >= 0`) or text to encode.
struct Segment {
  std::size_t begin;  ///< first byte
  std::size_t end;    ///< one past the last byte
  int64_t id;         ///< the added token's id, or -1
};

/// Finds a set of added tokens in text.
class AddedTokenMatcher {
 public:
  /// Matches `tokens` (all of them; `special` ones only when the caller allows).
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
    nodes_.emplace_back();
    root_.fill(-1);
    for (std::size_t index = 0; index < tokens_.size(); ++index) {
      const auto& content = tokens_[index].content;
      if (content.empty()) continue;
      int32_t node = root_[static_cast<unsigned char>(content[0])];
      if (node < 0) {
        node = new_node();
        root_[static_cast<unsigned char>(content[0])] = node;
      }
      for (std::size_t i = 1; i < content.size(); ++i) {
        auto& children = nodes_[static_cast<std::size_t>(node)].children;
        const auto found = children.find(content[i]);
        if (found != children.end()) {
          node = found->second;
        } else {
          const int32_t child = new_node();
          nodes_[static_cast<std::size_t>(node)].children.emplace(content[i], child);
          node = child;
        }
      }
      // The first of equal contents wins.
      auto& slot = nodes_[static_cast<std::size_t>(node)];
      if (slot.token < 0) slot.token = static_cast<int32_t>(index);
    }
  }

  /// Whether any token is matched at all.
  [[nodiscard]] bool empty() const { return tokens_.empty(); }

  /// `text` cut into added tokens and the text between them (valid UTF-8); special tokens only if
  /// `allow_special`.
  [[nodiscard]] std::vector<Segment> split(std::string_view text, bool allow_special) const {
    std::vector<Segment> segments;
    std::size_t done = 0;  // end of the last match: lstrip may not take what it matched
    for (std::size_t at = 0; at < text.size();) {
      const auto match = longest_at(text, at, allow_special);
      if (match.token < 0) {
        ++at;
        continue;
      }
      const auto& token = tokens_[static_cast<std::size_t>(match.token)];
      std::size_t start = at, stop = match.end;
      if (token.single_word &&
          ((start > 0 && unicode::is_word_character(unicode::last_code_point(text.substr(0, start)))) ||
           (stop < text.size() && unicode::is_word_character(unicode::code_point_at(text, stop).value)))) {
        at = stop;  // a refused match still consumes its text, as the Rust library's search does
        continue;
      }
      if (token.lstrip)
        while (start > done && start > 0) {
          const auto c = unicode::last_code_point(text.substr(0, start));
          if (!unicode::is_whitespace(c)) break;
          start -= utf8_length(c);
        }
      if (token.rstrip)
        while (stop < text.size()) {
          const auto c = unicode::code_point_at(text, stop);
          if (!unicode::is_whitespace(c.value)) break;
          stop += c.length;
        }
      if (start > done) segments.push_back({done, start, -1});
      segments.push_back({start, stop, token.id});
      done = at = stop;
    }
    if (done < text.size()) segments.push_back({done, text.size(), -1});
    return segments;
  }

 private:
  struct Node {
    std::unordered_map<char, int32_t> children;
    int32_t token = -1;
  };
  struct Match {
    int32_t token;
    std::size_t end;
  };

  int32_t new_node() {
    nodes_.emplace_back();
    return static_cast<int32_t>(nodes_.size() - 1);
  }

  static std::size_t utf8_length(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

  /// The longest token starting at `text[at]`, if any.
  [[nodiscard]] Match longest_at(std::string_view text, std::size_t at, bool allow_special) const {
    Match best{-1, at};
    int32_t node = root_[static_cast<unsigned char>(text[at])];
    for (std::size_t i = at + 1; node >= 0; ++i) {
      const auto& current = nodes_[static_cast<std::size_t>(node)];
      if (current.token >= 0 && (allow_special || !tokens_[static_cast<std::size_t>(current.token)].special))
        best = {current.token, i};
      if (i >= text.size()) break;
      const auto found = current.children.find(text[i]);
      node = found == current.children.end() ? -1 : found->second;
    }
    return best;
  }

  std::vector<AddedToken> tokens_;
  std::array<int32_t, 256> root_{};
  std::vector<Node> nodes_;
};

}  // namespace baukit::tokenizer
