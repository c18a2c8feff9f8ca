// train-tuned-lens: trains a tuned lens (baukit::train_tuned_lens, the reference implementation's objective and
// defaults) on a plain-text corpus, saves it in the published format, and prints the mean KL to the final
// distribution per layer on held-out text, logit lens against tuned lens. Without --model: the embedded default
// model, on its own training sentences, evaluated on its held-out phrasings.
//   train-tuned-lens --out lens/ [--model DIR --corpus train.txt --held-out test.txt] [--steps 250]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <sstream>

#include "default_model/corpus.hpp"

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::invalid_argument(fmt::format("{}: cannot open", path.string()));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += (text.empty() ? "" : " ") + line;
  return text;
}

// "models/default/" -> "default".
std::string folder_name(const fs::path& dir) {
  auto path = fs::absolute(dir).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  return path.filename().string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a tuned lens and compares it with the logit lens on held-out text", "train-tuned-lens"};
  fs::path model_dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default", corpus, held_out, out, checkpoints;
  std::string name;
  int64_t window = 32, steps = 250, tokens_per_step = int64_t{1} << 18, batch = 8, every = 10;
  double lr_scale = 1.0;
  int threads = 2;
  app.add_option("--model", model_dir, "Checkpoint directory; default: the embedded model")
      ->check(CLI::ExistingDirectory);
  app.add_option("--corpus", corpus, "Training text (UTF-8); default: the default model's training sentences")
      ->check(CLI::ExistingFile);
  app.add_option("--held-out", held_out, "Evaluation text; default: the default model's held-out phrasings")
      ->check(CLI::ExistingFile);
  app.add_option("--out", out, "Folder for the lens (config.json, params.pt)")->required();
  app.add_option("--name", name, "The model's name in the lens's config.json; default: the model folder's name");
  app.add_option("--checkpoint-dir", checkpoints, "Checkpoints, resumed when present; default: OUT/checkpoints");
  app.add_option("--window", window, "Tokens per window")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--steps", steps, "Optimiser steps")->check(CLI::Range(1, 1 << 30))->capture_default_str();
  app.add_option("--tokens-per-step", tokens_per_step, "Tokens per step (a multiple of --window)")
      ->capture_default_str();
  app.add_option("--batch-size", batch, "Windows per forward")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--checkpoint-every", every, "Steps between checkpoints")->capture_default_str();
  app.add_option("--lr-scale", lr_scale, "Scales the learning rate 1 - momentum")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads")->check(CLI::Range(1, 1024))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(threads);
    const auto tokenizer = baukit::Tokenizer::from_pretrained(model_dir);
    auto model = baukit::models::from_pretrained(model_dir);
    std::string train_text, test_text;
    if (corpus.empty() || held_out.empty()) {
      const auto facts = default_model::build_corpus(
          default_model::read_facts(fs::path(BAUKIT_SOURCE_DIR) / "models" / "default" / "facts.tsv"));
      std::vector<std::string> tests;
      for (const auto& h : facts.held_out) tests.push_back(h.prompt.substr(2) + h.answer + ".");
      if (corpus.empty()) train_text = joined(facts.train);
      if (held_out.empty()) test_text = joined(tests);
    }
    if (!corpus.empty()) train_text = read_text(corpus);
    if (!held_out.empty()) test_text = read_text(held_out);
    const auto train = baukit::token_windows(tokenizer.encode(train_text), window);
    const auto test = baukit::token_windows(tokenizer.encode(test_text), window);
    if (train.empty() || test.empty())
      throw std::invalid_argument(
          fmt::format("the corpus or held-out text is shorter than one window of {} tokens", window));
    std::cout << fmt::format("training on {} windows of {} tokens, evaluating on {}\n", train.size(), window,
                             test.size());
    auto lens =
        baukit::make_tuned_lens(*model, baukit::model_width(*model), name.empty() ? folder_name(model_dir) : name);
    const auto options = baukit::TunedLensTrainOptions()
                             .num_steps(steps)
                             .tokens_per_step(tokens_per_step)
                             .batch_size(batch)
                             .lr_scale(lr_scale)
                             .checkpoint_every(every)
                             .checkpoint_dir(checkpoints.empty() ? out / "checkpoints" : checkpoints);
    const bool tty = ::isatty(2) != 0;
    const auto done = baukit::train_tuned_lens(*model, *lens, train, options, [&](const auto& p) {
      const auto line =
          fmt::format("step {}/{}{}  loss {:.4f} nats  {} tokens  {:.0f} tokens/s  ETA {:.0f} s", p.step, p.num_steps,
                      p.resumed ? " (resumed)" : "", p.loss, p.tokens, p.tokens_per_second, p.eta_seconds);
      std::cerr << (tty ? "\r\033[K" : "") << line << (tty && p.step < p.num_steps ? "" : "\n") << std::flush;
    });
    baukit::save_tuned_lens(*lens, out);
    const auto logit = baukit::mean_kl_per_layer(*model, test);
    const auto tuned = baukit::mean_kl_per_layer(*model, test, lens.ptr());
    std::cout << fmt::format("trained {} steps ({} tokens); wrote {}\n\n", done.step, done.tokens, out.string());
    std::cout << "| layer | logit lens KL | tuned lens KL |\n|---|---|---|\n";
    for (std::size_t l = 0; l < logit.size(); ++l)
      std::cout << fmt::format("| {} | {:.4f} | {:.4f} |\n", l, logit[l], tuned[l]);
  } catch (const std::exception& e) {
    std::cerr << "train-tuned-lens: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
