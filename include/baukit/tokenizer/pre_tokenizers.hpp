/// @file pre_tokenizers.hpp
/// @brief `tokenizer.json` pre-tokenizers with the Hugging Face tokenizers library's semantics: `ByteLevel`,
/// `Split` (five behaviours, `invert`), `Metaspace`, `Digits` and `Sequence`. Each splits the pieces of a section
/// into smaller pieces, which the model encodes one by one.
#pragma once

#include <algorithm>
#include <baukit/tokenizer/regex.hpp>
#include <baukit/tokenizer/unicode.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::tokenizer {

/// A piece of text on its way to the model.
struct Piece {
  std::string text;  ///< its bytes
  bool at_start;     ///< whether it begins where the caller's text begins (Metaspace's `prepend_scheme: first`)
};

/// What `Split` does with the parts a pattern matches.
enum class SplitBehavior {
  removed,               ///< drops them
  isolated,              ///< makes each its own piece
  merged_with_previous,  ///< appends each to the piece before
  merged_with_next,      ///< prepends each to the piece after
  contiguous,            ///< makes each run of adjacent matches one piece
};

/// A span of a piece and whether the pattern matched it.
struct Span {
  std::size_t start;  ///< first byte
  std::size_t end;    ///< one past the last byte
  bool is_match;      ///< matched by the pattern
};

/// Splits `piece` at `spans` (which cover it, in order) as the Rust library's `NormalizedString::split` does,
/// appending the non-empty parts to `out`.
inline void split_piece(const Piece& piece, std::vector<Span> spans, SplitBehavior behavior, bool invert,
                        std::vector<Piece>& out) {
  if (invert)
    for (auto& span : spans) span.is_match = !span.is_match;
  std::vector<Span> parts;  // is_match here: removed
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::removed:
      parts = std::move(spans);
      break;
    case SplitBehavior::isolated:
      for (const auto& span : spans) parts.push_back({span.start, span.end, false});
      break;
    case SplitBehavior::contiguous:
    case SplitBehavior::merged_with_previous:
      // Contiguous joins a span to the part before when both are alike; MergedWithPrevious joins a match to the
      // non-match before it.
      for (const auto& span : spans) {
        const bool join = behavior == SplitBehavior::contiguous ? span.is_match == previous_match
                                                                : span.is_match && !previous_match;
        if (join && !parts.empty())
          parts.back().end = span.end;
        else
          parts.push_back({span.start, span.end, false});
        previous_match = span.is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty())
          parts.back().start = it->start;
        else
          parts.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
  }
  for (const auto& part : parts)
    if (!part.is_match && part.end > part.start)
      out.push_back({piece.text.substr(part.start, part.end - part.start), piece.at_start && part.start == 0});
}

/// The spans of `text` given its matches (start, end), in order.
class SpanBuilder {
 public:
  /// Starts on a text of `size` bytes.
  explicit SpanBuilder(std::size_t size) : size_(size) {}
  /// Records a match.
  void add(std::size_t start, std::size_t end) {
    if (start > done_) spans_.push_back({done_, start, false});
    spans_.push_back({start, end, true});
    done_ = end;
  }
  /// All spans, the text after the last match included.
  std::vector<Span> finish() {
    if (done_ < size_) spans_.push_back({done_, size_, false});
    return std::move(spans_);
  }

 private:
  std::size_t size_, done_ = 0;
  std::vector<Span> spans_;
};

/// Splits pieces of text before the model sees them.
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces `pieces` by their parts.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
  /// Whether this step hands the model bytes as GPT-2's byte-to-unicode characters (`ByteLevel`).
  [[nodiscard]] virtual bool byte_level() const { return false; }
};

/// Splits at a regex's or a literal string's matches.
class SplitPreTokenizer final : public PreTokenizer {
 public:
  /// Splits at the matches of `regex`.
  SplitPreTokenizer(std::shared_ptr<const Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  /// Splits at the occurrences of `literal`.
  SplitPreTokenizer(std::string literal, SplitBehavior behavior, bool invert)
      : literal_(std::move(literal)), behavior_(behavior), invert_(invert) {}

  /// @copydoc PreTokenizer::pre_tokenize
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (const auto& piece : pieces) {
      SpanBuilder spans(piece.text.size());
      if (regex_) {
        regex_->for_each_match(piece.text, [&](std::size_t start, std::size_t end) { spans.add(start, end); });
      } else if (!literal_.empty()) {
        for (auto at = piece.text.find(literal_); at != std::string::npos;
             at = piece.text.find(literal_, at + literal_.size()))
          spans.add(at, at + literal_.size());
      }
      split_piece(piece, spans.finish(), behavior_, invert_, out);
    }
    pieces = std::move(out);
  }

 private:
  std::shared_ptr<const Regex> regex_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

/// GPT-2's pre-tokenizer: an optional leading space, GPT-2's regex, then bytes as GPT-2's byte-to-unicode
/// characters (the model's vocabulary is read in that form, so the bytes themselves go on).
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  /// GPT-2's pre-tokenizer pattern.
  static constexpr std::string_view kPattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  /// `add_prefix_space` puts a space before each piece that lacks one; `use_regex` splits by GPT-2's pattern.
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), regex_(use_regex ? gpt2_regex() : nullptr) {}

  /// @copydoc PreTokenizer::pre_tokenize
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (auto& piece : pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text.front() != ' ')) piece.text.insert(0, 1, ' ');
      if (!regex_) {
        out.push_back(std::move(piece));
        continue;
      }
      SpanBuilder spans(piece.text.size());
      regex_->for_each_match(piece.text, [&](std::size_t start, std::size_t end) { spans.add(start, end); });
      split_piece(piece, spans.finish(), SplitBehavior::isolated, false, out);
    }
    pieces = std::move(out);
  }
  [[nodiscard]] bool byte_level() const override { return true; }

 private:
  static std::shared_ptr<const Regex> gpt2_regex() {
    static const auto regex = std::make_shared<const Regex>(kPattern);
    return regex;
  }
  bool add_prefix_space_;
  std::shared_ptr<const Regex> regex_;
};

/// When Metaspace puts its replacement before a piece.
enum class PrependScheme {
  always,  ///< before every piece that lacks it
  first,   ///< only before the piece where the text begins
  never,   ///< never
};

/// SentencePiece's spaces: ' ' becomes `replacement` (`▁`), which is put before pieces as `prepend_scheme` says;
/// `split` cuts before each replacement.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  /// Replaces ' ' by `replacement`.
  MetaspacePreTokenizer(std::string replacement, PrependScheme prepend_scheme, bool split)
      : replacement_(std::move(replacement)), prepend_scheme_(prepend_scheme), split_(split) {}

  /// @copydoc PreTokenizer::pre_tokenize
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (auto& piece : pieces) {
      std::string text;
      for (const char c : piece.text) {
        if (c == ' ')
          text.append(replacement_);
        else
          text.push_back(c);
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (prepend_scheme_ == PrependScheme::always || (prepend_scheme_ == PrependScheme::first && piece.at_start)))
        text.insert(0, replacement_);
      Piece replaced{std::move(text), piece.at_start};
      if (!split_) {
        out.push_back(std::move(replaced));
        continue;
      }
      SpanBuilder spans(replaced.text.size());
      for (auto at = replaced.text.find(replacement_); at != std::string::npos;
           at = replaced.text.find(replacement_, at + replacement_.size()))
        spans.add(at, at + replacement_.size());
      split_piece(replaced, spans.finish(), SplitBehavior::merged_with_next, false, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme prepend_scheme_;
  bool split_;
};

/// Splits digits (Unicode's numeric characters) from the rest: each its own piece, or runs of them.
class DigitsPreTokenizer final : public PreTokenizer {
 public:
  /// `individual_digits`: one piece per digit; otherwise one per run.
  explicit DigitsPreTokenizer(bool individual_digits) : individual_(individual_digits) {}

  /// @copydoc PreTokenizer::pre_tokenize
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const auto& piece : pieces) {
      SpanBuilder spans(piece.text.size());
      for (std::size_t at = 0; at < piece.text.size();) {
        const auto c = unicode::code_point_at(piece.text, at);
        if (unicode::is_numeric(c.value)) spans.add(at, at + c.length);
        at += c.length;
      }
      split_piece(piece, spans.finish(), individual_ ? SplitBehavior::isolated : SplitBehavior::contiguous, false, out);
    }
    pieces = std::move(out);
  }

 private:
  bool individual_;
};

/// Applies pre-tokenizers in order.
class SequencePreTokenizer final : public PreTokenizer {
 public:
  /// Applies `steps` in order.
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  /// @copydoc PreTokenizer::pre_tokenize
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }
  [[nodiscard]] bool byte_level() const override { return !steps_.empty() && steps_.back()->byte_level(); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace baukit::tokenizer
