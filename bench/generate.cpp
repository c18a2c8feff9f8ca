// Greedy generation as the seed notebook does it, with baukit's KV cache, for any family (side_by_side.py runs it
// on GPT-2; a Llama-3.2-1B-shape checkpoint gives the Llama architecture's rate):
//   build/bench/bench-generate --model DIR --prompt TEXT --new-tokens 100
// Prints one JSON line: the prompt's ids, the new ids, the seconds to load and to generate, tokens per second, and
// the weight-read bound on tokens per second (each new token reads every weight once: the weight files' bytes at
// the memory bandwidth measured here).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <set>

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
  std::shared_ptr<baukit::models::CausalLM> model;
  std::optional<baukit::Tokenizer> tokenizer;
  const double load = bench::time_once([&] {
    tokenizer = baukit::Tokenizer::from_pretrained(dir);
    model = baukit::models::from_pretrained(dir);
  });
  const auto ids = tokenizer->encode(prompt);
  std::vector<std::vector<int64_t>> generated;
  const double seconds = bench::time_once([&] { generated = baukit::generate_ids(*model, {ids}, new_tokens); });
  double weight_bytes = 0;
  std::set<const void*> seen;  // a tied lm_head is the embedding's tensor: counted once
  for (const auto& p : model->module().parameters())
    if (seen.insert(p.data_ptr()).second) weight_bytes += static_cast<double>(p.nbytes());
  const auto data = torch::ones({int64_t{1} << 28}, torch::kFloat32);  // 1 GiB, summed: the read bandwidth
  const double read = bench::median_seconds([&] { (void)data.sum().item<float>(); }, 3);
  const double bound = (static_cast<double>(data.nbytes()) / read) / weight_bytes;
  fmt::print("{}\n", nlohmann::json{{"prompt_ids", ids},
                                    {"new_ids", generated.at(0)},
                                    {"load", load},
                                    {"generate", seconds},
                                    {"tokens_per_second", new_tokens / seconds},
                                    {"weight_read_bound_tokens_per_second", bound}}
                         .dump());
  return 0;
}
