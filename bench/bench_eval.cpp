// The lens over a corpus (baukit-lens eval), in one run:
//   build/bench/bench-eval [--model DIR] [--window W] [--tokens N] [--lens build/tools/baukit-lens]
// Runs `baukit-lens eval` as a fresh process on the first N, 2N and 4N tokens of a corpus (the project's own docs,
// repeated as needed) and prints, per run, the tokens scored per second, the split of time between the forward and
// the decode (with the decode against its FLOP bound: 2 x views x layers x tokens x width x vocab at the matmul
// rate measured here) and the peak memory; then the ratios that show the cost linear in the tokens (time 2N / N and
// 4N / N: 2 and 4) and the memory bounded (peak 4N / N: 1).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.hpp"

namespace {

namespace fs = std::filesystem;

// A corpus of at least `bytes`: README.md and docs/*.md, repeated.
fs::path write_corpus(const fs::path& path, std::size_t bytes) {
  std::string text;
  for (const auto& entry : fs::directory_iterator(fs::path(BAUKIT_SOURCE_DIR) / "docs"))
    if (entry.path().extension() == ".md") {
      std::ifstream in(entry.path());
      text += std::string(std::istreambuf_iterator<char>(in), {}) + "\n\n";
    }
  std::ofstream out(path);
  for (std::size_t written = 0; written < bytes; written += text.size()) out << text;
  return path;
}

// A config.json field by either family's name.
int64_t config_int(const nlohmann::json& config, const char* gpt2_name, const char* hf_name) {
  return config.contains(gpt2_name) ? config[gpt2_name].get<int64_t>() : config.at(hf_name).get<int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"baukit-lens eval benchmark"};
  fs::path dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default",
           lens_exe = fs::path(BAUKIT_BINARY_DIR) / "tools" / "baukit-lens";
  int64_t window = 32, tokens = 1024;
  app.add_option("--model", dir, "Checkpoint directory; default: the embedded model")->check(CLI::ExistingDirectory);
  app.add_option("--lens", lens_exe, "The baukit-lens program")->capture_default_str();
  app.add_option("--window", window, "Tokens per window")->capture_default_str();
  app.add_option("--tokens", tokens, "N: the runs take N, 2N and 4N tokens")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(2);
  std::ifstream config_file(dir / "config.json");
  const auto config = nlohmann::json::parse(config_file);
  const int64_t layers = config_int(config, "n_layer", "num_hidden_layers"),
                width = config_int(config, "n_embd", "hidden_size"), vocab = config.at("vocab_size").get<int64_t>();
  const auto scratch = fs::temp_directory_path() / fmt::format("bench-eval-{}", ::getpid());
  fs::create_directories(scratch);
  const auto corpus = write_corpus(scratch / "corpus.txt", static_cast<std::size_t>(tokens) * 4 * 8);
  const auto rates = bench::matmul_flops();
  fmt::print(
      "model {} ({} layers, {} wide, {} tokens; {:.2f} GB), windows of {} tokens, 2 threads; matmul {:.1f} "
      "GFLOP/s\n",
      dir.string(), layers, width, vocab, bench::checkpoint_bytes(dir) / 1e9, window, rates.best() / 1e9);
  fmt::print(
      "| tokens read | tokens scored | eval s | tokens/s | forward s | decode s | decode / FLOP bound | peak RSS "
      "GB |\n|---|---|---|---|---|---|---|---|\n");
  struct Result {
    double seconds, rss;
  };
  std::vector<Result> results;
  for (const int64_t n : {tokens, 2 * tokens, 4 * tokens}) {
    const auto json_path = scratch / "eval.json";
    const auto run = bench::run_child({lens_exe.string(), "eval", "--model", dir.string(), "--corpus", corpus.string(),
                                       "--window", std::to_string(window), "--tokens", std::to_string(n), "--json",
                                       json_path.string(), "--out", (scratch / "eval.html").string()});
    if (run.status != 0) {
      fmt::print(stderr, "bench-eval: baukit-lens eval failed with status {}\n", run.status);
      return 1;
    }
    std::ifstream json_file(json_path);
    const auto json = nlohmann::json::parse(json_file);
    const double scored = json["tokens"].get<double>(), forward = json["seconds"]["forward"].get<double>(),
                 decode = json["seconds"]["decode"].get<double>(), total = json["seconds"]["total"].get<double>();
    const double bound =
        2.0 * 2 * static_cast<double>(layers) * scored * static_cast<double>(width * vocab) / rates.best();
    fmt::print("| {} | {:.0f} | {:.2f} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.3f} |\n", n, scored, total,
               scored / total, forward, decode, decode / bound, run.peak_rss_bytes / 1e9);
    results.push_back({total, run.peak_rss_bytes});
  }
  fmt::print("time 2N / N = {:.2f} (linear: 2), 4N / N = {:.2f} (linear: 4); peak RSS 4N / N = {:.3f} (bounded: 1)\n",
             results[1].seconds / results[0].seconds, results[2].seconds / results[0].seconds,
             results[2].rss / results[0].rss);
  fs::remove_all(scratch);
  return 0;
}
