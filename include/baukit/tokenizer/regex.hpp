/// @file regex.hpp
/// @brief The pre-tokenizers' and normalizers' regular expressions through PCRE2. `tokenizer.json` patterns are
/// written for Oniguruma (the Rust library's engine); PCRE2 reads the same syntax (`(?i:...)`, `\p{L}`,
/// `\p{N}{1,3}`, lookahead), and `\s` is rewritten to Unicode's White_Space set, which Oniguruma uses (PCRE2's own
/// `\s` also matches U+180E).
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
/// PCRE2's 8-bit (UTF-8) interface.
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <fmt/format.h>
#include <pcre2.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace baukit::tokenizer {

/// A compiled pattern, shareable between threads (each match uses its own match data).
class Regex {
 public:
  /// Compiles an Oniguruma-dialect `pattern`; throws `std::invalid_argument` with PCRE2's message and the offset.
  explicit Regex(std::string_view pattern) {
    const std::string translated = translate(pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code) {
      std::string message(256, '\0');
      const int length = pcre2_get_error_message(error, reinterpret_cast<PCRE2_UCHAR*>(message.data()), message.size());
      message.resize(length > 0 ? static_cast<std::size_t>(length) : 0);
      throw std::invalid_argument(fmt::format("the regex does not compile ({} at offset {})", message, offset));
    }
    code_.reset(code, &pcre2_code_free);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  }

  /// Calls `on_match(start, end)` for each non-overlapping match in `text` (valid UTF-8), left to right; an empty
  /// match moves on by one character.
  template <typename OnMatch>
  void for_each_match(std::string_view text, OnMatch&& on_match) const {
    const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    PCRE2_SIZE at = 0;
    while (at <= text.size()) {
      const int found = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                    PCRE2_NO_UTF_CHECK, match.get(), nullptr);
      if (found == PCRE2_ERROR_NOMATCH) return;
      if (found < 0) throw std::runtime_error(fmt::format("tokenizer: PCRE2 matching failed with code {}", found));
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
      if (span[1] > span[0]) {
        on_match(static_cast<std::size_t>(span[0]), static_cast<std::size_t>(span[1]));
        at = span[1];
      } else {  // empty match: skip one character
        at = span[0] + 1;
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
      }
    }
  }

 private:
  /// Unicode's White_Space characters, for a character class.
  static constexpr std::string_view kWhiteSpace =
      R"(\t-\r\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

  /// Rewrites `\s` (in and out of classes) and `\S` (outside classes) to Unicode's White_Space.
  static std::string translate(std::string_view pattern) {
    std::string out;
    bool in_class = false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
      const char c = pattern[i];
      if (c == '\\' && i + 1 < pattern.size()) {
        const char next = pattern[++i];
        if (next == 's')
          out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
        else if (next == 'S' && !in_class)
          out += "[^" + std::string(kWhiteSpace) + "]";
        else
          out.append({c, next});
        continue;
      }
      if (c == '[' && !in_class) {
        in_class = true;
        out += c;
        // A ']' right after '[' or '[^' is a literal member.
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
        if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        continue;
      }
      if (c == ']' && in_class) in_class = false;
      out += c;
    }
    return out;
  }

  std::shared_ptr<pcre2_code> code_;
};

}  // namespace baukit::tokenizer
