// GPT-2 loading, forward and generation against the machine's bounds, measured in one run:
//   build/bench/bench-gpt2 --model DIR      (DIR from: make-random-checkpoint --preset gpt2-xl --out DIR)
// Prints: load time with a warm page cache, peak RSS as a multiple of the weight file, the forward of an 8-token
// prompt as a multiple of its FLOP bound (2 x parameters x tokens at the matmul rate measured here), and greedy
// tokens/s with the cache against the weight-bytes / memory-bandwidth bound.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>

#include "common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"GPT-2 model benchmark"};
  std::filesystem::path dir;
  int threads = 2, new_tokens = 32;
  bool check_finite = false;
  app.add_option("--model", dir, "Checkpoint directory")->required()->check(CLI::ExistingDirectory);
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Greedy tokens to generate")->capture_default_str();
  app.add_flag("--check-finite", check_finite, "Also scan every weight for NaN/inf while loading");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  baukit::kernels::use_openblas_kernels_for_this_cpu();  // a no-op unless OpenBLAS runs generic kernels here
  const double file_bytes = static_cast<double>(std::filesystem::file_size(dir / "model.safetensors"));

  // Warm the page cache: a load with the NaN scan reads every byte (a lazy load reads none).
  (void)baukit::models::GPT2LMHeadModel::from_pretrained(dir, torch::kCPU, true);
  baukit::models::GPT2LMHeadModel model{nullptr};
  std::vector<double> loads;
  for (int i = 0; i < 3; ++i) {
    model = baukit::models::GPT2LMHeadModel{nullptr};
    loads.push_back(bench::time_once(
        [&] { model = baukit::models::GPT2LMHeadModel::from_pretrained(dir, torch::kCPU, check_finite); }));
  }
  fmt::print("load times: {:.3f} {:.3f} {:.3f} s\n", loads[0], loads[1], loads[2]);
  std::sort(loads.begin(), loads.end());
  torch::NoGradGuard no_grad;
  double parameters = 0;
  for (const auto& p : model->parameters()) parameters += static_cast<double>(p.numel());
  parameters -= static_cast<double>(model->lm_head->weight.numel());  // tied: counted once

  const auto ids = torch::randint(0, model->config.vocab_size, {1, 8});
  const double forward = bench::median_seconds([&] { (void)model->forward(ids, {}, nullptr); });
  std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 8);
  const double generation = bench::time_once([&] { (void)baukit::generate_ids(*model, {prompt}, new_tokens); });
  const double rss = bench::peak_rss_bytes();

  // The machine's bounds, measured after the model work so their buffers do not count in its peak memory.
  const auto rates = bench::matmul_flops();
  const double flops = rates.best(), bandwidth = bench::read_bandwidth();
  const double forward_bound = 2.0 * parameters * 8 / flops;
  const double token_bound = file_bytes / bandwidth;                   // every weight byte read once per token
  const double per_token = (generation - forward) / (new_tokens - 1);  // first token: the prompt's forward
  fmt::print("model {}: {:.2f} G parameters, {:.2f} GB file; {} threads\n", dir.string(), parameters / 1e9,
             file_bytes / 1e9, threads);
  fmt::print("machine: matmul {:.1f} GFLOP/s (best of BLAS {:.1f}, oneDNN {:.1f}), memory read {:.1f} GB/s\n",
             flops / 1e9, rates.blas / 1e9, rates.onednn / 1e9, bandwidth / 1e9);
  fmt::print("load (warm page cache{}): {:.3f} s median of 3 (target < 1 s)\n", check_finite ? ", NaN scan" : "",
             loads[1]);
  fmt::print("peak RSS: {:.2f} GB = {:.3f} x the file (target < 1.1)\n", rss / 1e9, rss / file_bytes);
  fmt::print("forward, 8 tokens: {:.3f} s = {:.2f} x the FLOP bound {:.3f} s (target <= 1.3)\n", forward,
             forward / forward_bound, forward_bound);
  // Eight tokens use each weight only 8 times, so reading the weights once can take longer than the FLOPs.
  fmt::print(
      "  reading every weight once takes {:.3f} s = {:.2f} x the FLOP bound; the forward is {:.2f} x "
      "max(FLOP bound, weight-read bound)\n",
      token_bound, token_bound / forward_bound, forward / std::max(forward_bound, token_bound));
  fmt::print("greedy with cache: {:.2f} tokens/s, {:.3f} s/token = {:.2f} x the weight-bandwidth bound {:.3f} s\n",
             1.0 / per_token, per_token, per_token / token_bound, token_bound);
  return 0;
}
