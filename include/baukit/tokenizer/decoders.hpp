/// @file decoders.hpp
/// @brief `tokenizer.json` decoders with the Hugging Face tokenizers library's semantics: `ByteLevel`, `Replace`,
/// `ByteFallback`, `Fuse`, `Strip`, `Metaspace` and `Sequence`. Each rewrites the list of token strings; `decode`
/// joins what is left.
#pragma once

#include <baukit/text/utf8.hpp>
#include <baukit/tokenizer/byte_level.hpp>
#include <baukit/tokenizer/normalizers.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

/// Turns token strings (as the vocabulary writes them) back into text.
class Decoder {
 public:
  virtual ~Decoder() = default;
  /// Rewrites `tokens` in place.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

/// GPT-2's byte characters back to bytes, all tokens joined, invalid UTF-8 as U+FFFD (a token with a character
/// outside the 256 stays as written).
class ByteLevelDecoder final : public Decoder {
 public:
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      if (auto raw = byte_level::to_bytes(token))
        bytes += *raw;
      else
        bytes += token;
    }
    tokens.assign(1, utf8::replace_invalid(bytes));
  }
};

/// Replaces a string (or regex matches) in each token (`▁` by ' ').
class ReplaceDecoder final : public Decoder {
 public:
  /// Replaces as `replace` does.
  explicit ReplaceDecoder(std::shared_ptr<const ReplaceNormalizer> replace) : replace_(std::move(replace)) {}
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) token = replace_->replace(token);
  }

 private:
  std::shared_ptr<const ReplaceNormalizer> replace_;
};

/// Runs of `<0x..>` tokens become the text of their bytes, or one U+FFFD per byte if those are not valid UTF-8.
class ByteFallbackDecoder final : public Decoder {
 public:
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    std::size_t byte_count = 0;
    auto flush = [&] {
      if (byte_count == 0) return;
      if (!utf8::first_invalid(bytes))
        out.push_back(bytes);
      else
        for (std::size_t i = 0; i < byte_count; ++i) out.emplace_back("\xEF\xBF\xBD");
      bytes.clear();
      byte_count = 0;
    };
    for (auto& token : tokens) {
      if (const auto byte = byte_of(token)) {
        bytes += static_cast<char>(*byte);
        ++byte_count;
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static std::optional<int> byte_of(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
    int value = 0;
    for (const char c : token.substr(3, 2)) {
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return std::nullopt;
      value = value * 16 + digit;
    }
    return value;
  }
};

/// Joins all tokens into one.
class FuseDecoder final : public Decoder {
 public:
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

/// Removes up to `start` leading and `stop` trailing `content` characters from each token.
class StripDecoder final : public Decoder {
 public:
  /// Strips `content` (one character).
  StripDecoder(std::string content, std::size_t start, std::size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) {
      std::size_t begin = 0, end = token.size();
      for (std::size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 && begin < end; ++i)
        begin += content_.size();
      for (std::size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                              token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  std::size_t start_, stop_;
};

/// SentencePiece's `▁` back to spaces, except in the first token, where the Rust library drops every `▁` (the one
/// encoding put there, and any other) unless the prepend scheme is `never`.
class MetaspaceDecoder final : public Decoder {
 public:
  /// Replaces `replacement`; `strip_first`: the prepend scheme is not `never`.
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const auto& token = tokens[i];
      for (std::size_t at = 0; at < token.size();) {
        if (token.compare(at, replacement_.size(), replacement_) == 0) {
          if (i != 0 || !strip_first_) out += ' ';
          at += replacement_.size();
        } else {
          out += token[at++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

/// Applies decoders in order.
class SequenceDecoder final : public Decoder {
 public:
  /// Applies `steps` in order.
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  /// @copydoc Decoder::decode_chain
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace baukit::tokenizer
