// Greedy generation as the seed notebook does it, with baukit's KV cache, for the side-by-side benchmark:
//   build/bench/bench-generate --model DIR --prompt TEXT --new-tokens 100
// Prints one JSON line: the prompt's ids, the new ids, and the seconds to load and to generate.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>

#include "common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Greedy generation with the KV cache"};
  std::filesystem::path dir;
  std::string prompt = "In his NBA career, KC Jones played";
  int threads = 2, new_tokens = 100;
  app.add_option("--model", dir, "Checkpoint directory")->required()->check(CLI::ExistingDirectory);
  app.add_option("--prompt", prompt)->capture_default_str();
  app.add_option("--new-tokens", new_tokens)->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  baukit::kernels::use_openblas_kernels_for_this_cpu();  // a no-op unless OpenBLAS runs generic kernels here
  baukit::models::GPT2LMHeadModel model{nullptr};
  std::optional<baukit::Tokenizer> tokenizer;
  const double load = bench::time_once([&] {
    tokenizer = baukit::Tokenizer::from_pretrained(dir);
    model = baukit::models::GPT2LMHeadModel::from_pretrained(dir);
  });
  const auto ids = tokenizer->encode(prompt);
  std::vector<std::vector<int64_t>> generated;
  const double seconds = bench::time_once([&] { generated = baukit::generate_ids(*model, {ids}, new_tokens); });
  fmt::print(
      "{}\n",
      nlohmann::json{{"prompt_ids", ids}, {"new_ids", generated.at(0)}, {"load", load}, {"generate", seconds}}.dump());
  return 0;
}
