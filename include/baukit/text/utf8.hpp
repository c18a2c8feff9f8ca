/// @file utf8.hpp
/// @brief UTF-8 by Unicode's rules: validation, the length of a sequence or of its maximal invalid subpart, and
/// replacing invalid bytes with U+FFFD as Python's `errors="replace"` does; shared by the tokenizers and the page.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace baukit {

namespace utf8 {

/// The byte offset of the first invalid UTF-8 sequence in `text`, or nullopt if it is valid.
inline std::optional<std::size_t> first_invalid(std::string_view text);

/// Appends the UTF-8 encoding of `code_point` to `out`.
inline void append(std::string& out, char32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

/// The length of the valid UTF-8 sequence at `text[at]`, or the length of its maximal invalid subpart as a
/// negative number (Unicode's "maximal subpart" rule, which Python's `errors="replace"` follows).
inline int sequence_at(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  if (lead < 0x80) return 1;
  int length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range allowed for the second byte
  if (lead >= 0xC2 && lead <= 0xDF)
    length = 2;
  else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (at + static_cast<std::size_t>(i) >= text.size()) return -i;
    const unsigned char next = byte(at + static_cast<std::size_t>(i));
    if (next < (i == 1 ? low : 0x80) || next > (i == 1 ? high : 0xBF)) return -i;
  }
  return length;
}

inline std::optional<std::size_t> first_invalid(std::string_view text) {
  for (std::size_t at = 0; at < text.size();) {
    const int length = sequence_at(text, at);
    if (length < 0) return at;
    at += static_cast<std::size_t>(length);
  }
  return std::nullopt;
}

/// `bytes` as valid UTF-8: each maximal invalid subpart becomes one U+FFFD, as Python's
/// `bytes.decode("utf-8", errors="replace")` does.
inline std::string replace_invalid(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t at = 0; at < bytes.size();) {
    const int length = sequence_at(bytes, at);
    if (length > 0) {
      out.append(bytes.substr(at, static_cast<std::size_t>(length)));
      at += static_cast<std::size_t>(length);
    } else {
      out += "\xEF\xBF\xBD";
      at += static_cast<std::size_t>(-length);
    }
  }
  return out;
}

}  // namespace utf8

}  // namespace baukit
