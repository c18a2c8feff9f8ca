/// @file normalizers.hpp
/// @brief `tokenizer.json` normalizers with the Hugging Face tokenizers library's semantics: `NFC`, `Prepend`,
/// `Replace` (a string or a regex) and `Sequence`.
#pragma once

#include <baukit/tokenizer/regex.hpp>
#include <baukit/tokenizer/unicode.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

/// Rewrites a section of text before it is split (the text between added tokens).
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  /// The normalised form of `text`.
  [[nodiscard]] virtual std::string normalize(std::string text) const = 0;
};

/// Unicode Normalization Form C (Qwen).
class NfcNormalizer final : public Normalizer {
 public:
  /// @copydoc Normalizer::normalize
  [[nodiscard]] std::string normalize(std::string text) const override { return unicode::nfc(text); }
};

/// Puts `prepend` before text that is not empty (Llama 2 and Mistral's legacy `▁`).
class PrependNormalizer final : public Normalizer {
 public:
  /// Prepends `prepend`.
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  /// @copydoc Normalizer::normalize
  [[nodiscard]] std::string normalize(std::string text) const override { return text.empty() ? text : prepend_ + text; }

 private:
  std::string prepend_;
};

/// Replaces every occurrence of a string, or every match of a regex, by `content` (Gemma: ' ' by `▁`).
class ReplaceNormalizer final : public Normalizer {
 public:
  /// Replaces the literal `pattern`.
  ReplaceNormalizer(std::string pattern, std::string content)
      : literal_(std::move(pattern)), content_(std::move(content)) {}
  /// Replaces the matches of `regex`.
  ReplaceNormalizer(std::shared_ptr<const Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}

  /// `text` with every occurrence replaced; shared with the `Replace` decoder.
  [[nodiscard]] std::string replace(std::string_view text) const {
    std::string out;
    std::size_t done = 0;
    auto on_match = [&](std::size_t start, std::size_t end) {
      out.append(text.substr(done, start - done)).append(content_);
      done = end;
    };
    if (regex_) {
      regex_->for_each_match(text, on_match);
    } else if (!literal_.empty()) {
      for (auto at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, done))
        on_match(at, at + literal_.size());
    }
    out.append(text.substr(done));
    return out;
  }
  /// @copydoc Normalizer::normalize
  [[nodiscard]] std::string normalize(std::string text) const override { return replace(text); }

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
  std::string content_;
};

/// Applies normalizers in order.
class SequenceNormalizer final : public Normalizer {
 public:
  /// Applies `steps` in order.
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  /// @copydoc Normalizer::normalize
  [[nodiscard]] std::string normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace baukit::tokenizer
