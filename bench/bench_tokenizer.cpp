// Tokenizer speed on a text file: loading, encoding it as one text, and encoding it line by line (a corpus read
// string by string); bench/tokenizer.sh runs it beside Hugging Face's JavaScript tokenizers and gpt-tokenizer.
//   build/bench/bench-tokenizer TOKENIZER_DIR TEXT_FILE
#include <fmt/format.h>

#include <baukit/tokenizer.hpp>
#include <fstream>
#include <optional>
#include <sstream>

#include "common.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    fmt::print(stderr, "usage: bench-tokenizer TOKENIZER_DIR TEXT_FILE\n");
    return 2;
  }
  std::optional<baukit::Tokenizer> tokenizer;
  const double load = bench::median_seconds([&] { tokenizer.emplace(baukit::Tokenizer::from_pretrained(argv[1])); }, 3);
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < text.size();) {
    auto end = text.find('\n', at);
    end = end == std::string::npos ? text.size() : end + 1;
    lines.push_back(text.substr(at, end - at));
    at = end;
  }
  // Special tokens as text and none added: what the JavaScript side does with this text (it holds none).
  const baukit::EncodeOptions options{false, false};
  std::size_t tokens = 0, line_tokens = 0;
  const double whole = bench::median_seconds([&] { tokens = tokenizer->encode(text, options).size(); }, 3);
  const double by_line = bench::median_seconds(
      [&] {
        line_tokens = 0;
        for (const auto& line : lines) line_tokens += tokenizer->encode(line, options).size();
      },
      3);
  const double mb = static_cast<double>(text.size()) / 1e6;
  fmt::print(
      "{{\"encoder\": \"baukit-cpp\", \"load_s\": {:.4f}, \"bytes\": {}, \"lines\": {}, \"tokens\": {}, "
      "\"line_tokens\": {}, \"mb_per_s\": {:.3f}, \"lines_mb_per_s\": {:.3f}}}\n",
      load, text.size(), lines.size(), tokens, line_tokens, mb / whole, mb / by_line);
  return 0;
}
