/// @file unicode.hpp
/// @brief The Unicode facts the tokenizer pipeline needs, from utf8proc: NFC normalisation and the character
/// classes Rust's `char` methods use (`is_numeric`, `is_whitespace`, `is_alphanumeric`).
#pragma once

#include <utf8proc.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace baukit::tokenizer::unicode {

/// The code point starting at `text[at]` (valid UTF-8) and its length in bytes.
struct CodePoint {
  char32_t value;      ///< the code point
  std::size_t length;  ///< its UTF-8 length, 1 to 4
};

/// Decodes the code point at `text[at]`; `text` must be valid UTF-8 there.
inline CodePoint code_point_at(std::string_view text, std::size_t at) {
  utf8proc_int32_t value = 0;
  const auto length = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + at),
                                       static_cast<utf8proc_ssize_t>(text.size() - at), &value);
  if (length <= 0) throw std::logic_error("tokenizer: invalid UTF-8 reached the pipeline");
  return {static_cast<char32_t>(value), static_cast<std::size_t>(length)};
}

/// Whether `text` is all ASCII (NFC and most rules leave such text unchanged).
inline bool is_ascii(std::string_view text) {
  for (const char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

/// `text` in Unicode Normalization Form C (embedded NUL bytes allowed).
inline std::string nfc(std::string_view text) {
  if (is_ascii(text)) return std::string(text);
  utf8proc_uint8_t* mapped = nullptr;
  const auto length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &mapped, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (length < 0) throw std::logic_error(std::string("tokenizer: NFC failed: ") + utf8proc_errmsg(length));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(mapped, &std::free);
  return {reinterpret_cast<const char*>(mapped), static_cast<std::size_t>(length)};
}

/// Rust's `char::is_numeric`: general categories Nd, Nl, No.
inline bool is_numeric(char32_t c) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL || category == UTF8PROC_CATEGORY_NO;
}

/// Rust's `char::is_whitespace`, Unicode's White_Space property: the separators (Zs, Zl, Zp), the ASCII controls
/// tab to carriage return, and U+0085.
inline bool is_whitespace(char32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || c == 0x85) return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP;
}

/// A word character for added tokens' `single_word`: Rust's `char::is_alphanumeric` (letters and numbers) or `_`.
inline bool is_word_character(char32_t c) {
  if (c == U'_') return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}

/// The code point that ends `text` (valid UTF-8, not empty).
inline char32_t last_code_point(std::string_view text) {
  std::size_t at = text.size() - 1;
  while (at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
  return code_point_at(text, at).value;
}

}  // namespace baukit::tokenizer::unicode
