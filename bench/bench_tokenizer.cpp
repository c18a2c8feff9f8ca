// Tokenizer throughput in MB/s on a text file (bench/tokenizer.sh runs it beside the npm encoder gpt-tokenizer).
//   build/bench/bench-tokenizer TOKENIZER_DIR TEXT_FILE
#include <fmt/format.h>

#include <baukit/tokenizer.hpp>
#include <fstream>
#include <sstream>

#include "common.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    fmt::print(stderr, "usage: bench-tokenizer TOKENIZER_DIR TEXT_FILE\n");
    return 2;
  }
  const auto tokenizer = baukit::Tokenizer::from_pretrained(argv[1]);
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::size_t tokens = 0;
  const double seconds = bench::median_seconds([&] { tokens = tokenizer.encode(text).size(); }, 5);
  fmt::print(
      "{{\"encoder\": \"baukit-cpp\", \"bytes\": {}, \"tokens\": {}, \"seconds\": {:.4f}, \"mb_per_s\": {:.2f}}}\n",
      text.size(), tokens, seconds, static_cast<double>(text.size()) / seconds / 1e6);
  return 0;
}
