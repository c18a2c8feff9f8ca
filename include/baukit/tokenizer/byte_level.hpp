/// @file byte_level.hpp
/// @brief GPT-2's byte-to-unicode map: each byte written as a printable character, so that byte-level BPE
/// vocabularies (GPT-2, Llama 3, Qwen) are JSON strings.
#pragma once

#include <array>
#include <baukit/text/utf8.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace baukit::tokenizer::byte_level {

/// The character each byte is written as: printable Latin-1 bytes as themselves, the others from U+0100 on.
inline const std::array<char32_t, 256>& byte_to_char() {
  static const auto table = [] {
    std::array<char32_t, 256> chars{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      chars[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return chars;
  }();
  return table;
}

/// The byte written as character `c`, or -1 (all such characters are below U+0144).
inline int char_to_byte(char32_t c) {
  static const auto table = [] {
    std::array<int16_t, 0x144> bytes;
    bytes.fill(-1);
    for (int b = 0; b < 256; ++b) bytes[byte_to_char()[static_cast<std::size_t>(b)]] = static_cast<int16_t>(b);
    return bytes;
  }();
  return c < table.size() ? table[c] : -1;
}

/// The written form of `bytes`.
inline std::string to_chars(std::string_view bytes) {
  std::string out;
  for (const char b : bytes) utf8::append(out, byte_to_char()[static_cast<unsigned char>(b)]);
  return out;
}

/// The bytes `written` stands for, or nullopt if a character of it is not one of the 256.
inline std::optional<std::string> to_bytes(std::string_view written) {
  std::string bytes;
  for (std::size_t at = 0; at < written.size();) {
    const int length = utf8::sequence_at(written, at);
    if (length <= 0 || length > 2) return std::nullopt;
    char32_t c = static_cast<unsigned char>(written[at]);
    if (length == 2) c = ((c & 0x1F) << 6) | (static_cast<unsigned char>(written[at + 1]) & 0x3F);
    const int byte = char_to_byte(c);
    if (byte < 0) return std::nullopt;
    bytes += static_cast<char>(byte);
    at += static_cast<std::size_t>(length);
  }
  return bytes;
}

}  // namespace baukit::tokenizer::byte_level
