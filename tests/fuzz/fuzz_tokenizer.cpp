// Fuzzes the tokenizer: encoding (any valid UTF-8 round-trips exactly; invalid UTF-8 is refused naming the byte),
// decoding arbitrary ids (in-range ids decode to valid UTF-8; others are refused), and reading vocab.json and
// merges.txt, and reading a tokenizer.json (accepted and then usable, or refused with a TokenizerError naming the
// file). The first byte picks the target.
#include <baukit/tokenizer.hpp>
#include <optional>

#include "fuzz_common.hpp"

namespace {

const baukit::Tokenizer& gpt2() {
  static const auto tokenizer = baukit::Tokenizer::from_pretrained(BAUKIT_DEFAULT_MODEL_DIR);
  return tokenizer;
}

void encode(std::string_view text) {
  const bool valid = !baukit::utf8::first_invalid(text).has_value();
  for (const bool allow_special : {false, true}) {
    try {
      const auto ids = gpt2().encode(text, allow_special);
      if (!valid || gpt2().decode(ids) != text) __builtin_trap();
    } catch (const std::invalid_argument& e) {
      if (valid || std::string_view(e.what()).find("not valid UTF-8") == std::string_view::npos) __builtin_trap();
    }
  }
}

void decode(std::string_view bytes) {
  std::vector<int64_t> ids;
  for (std::size_t i = 0; i + 1 < bytes.size(); i += 2)
    ids.push_back(static_cast<unsigned char>(bytes[i]) | (static_cast<unsigned char>(bytes[i + 1]) << 8));
  try {
    const auto text = gpt2().decode(ids);
    if (baukit::utf8::first_invalid(text)) __builtin_trap();  // partial characters become U+FFFD
  } catch (const std::out_of_range&) {
    bool any_out_of_range = false;
    for (const auto id : ids) any_out_of_range |= id >= gpt2().vocab_size();
    if (!any_out_of_range) __builtin_trap();
  }
}

void read_files(std::string_view bytes) {
  const auto split = std::min(bytes.find('\0'), bytes.size());
  std::filesystem::create_directories(fuzz::scratch() / "tokenizer");
  fuzz::write("tokenizer/vocab.json", bytes.substr(0, split));
  fuzz::write("tokenizer/merges.txt", bytes.substr(std::min(split + 1, bytes.size())));
  try {
    const auto tokenizer = baukit::Tokenizer::from_pretrained(fuzz::scratch() / "tokenizer");
    (void)tokenizer.decode(tokenizer.encode("Hello world"));
  } catch (const baukit::TokenizerError& e) {
    if (std::string_view(e.what()).find(fuzz::scratch().string()) == std::string_view::npos) __builtin_trap();
  }
}

void read_tokenizer_json(std::string_view bytes) {
  std::filesystem::create_directories(fuzz::scratch() / "tokenizer-json");
  fuzz::write("tokenizer-json/tokenizer.json", bytes);
  std::optional<baukit::Tokenizer> tokenizer;
  try {
    tokenizer.emplace(baukit::Tokenizer::from_tokenizer_json(fuzz::scratch() / "tokenizer-json" / "tokenizer.json"));
  } catch (const baukit::TokenizerError& e) {
    if (std::string_view(e.what()).find(fuzz::scratch().string()) == std::string_view::npos) __builtin_trap();
    return;
  }
  for (const bool allow_special : {false, true}) {
    try {
      const auto ids = tokenizer->encode("Hello world <s> 123 \xC3\xA9\xE2\x96\x81x", allow_special);
      if (baukit::utf8::first_invalid(tokenizer->decode(ids))) __builtin_trap();
    } catch (const std::runtime_error& e) {
      // A file's regex may hit PCRE2's match limit: an error that says so, never a crash or a hang.
      if (std::string_view(e.what()).rfind("tokenizer: PCRE2", 0) != 0) __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto rest = fuzz::text(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      encode(rest);
      break;
    case 1:
      decode(rest);
      break;
    case 2:
      read_files(rest);
      break;
    default:
      read_tokenizer_json(rest);
      break;
  }
  return 0;
}
