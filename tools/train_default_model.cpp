// Trains baukit-cpp's default model: a small GPT-2 (real GPT-2 vocabulary and tokenizer) that has learned a
// table of well-known facts in several phrasings, so that the logit lens shows answers emerging in its middle
// layers. Deterministic for a given --seed. Run (a few minutes on 2 cores):
//   build/tools/train-default-model --out models/default
//
// The corpus: each fact (models/default/facts.tsv) in every phrasing of its relation, plus distractor
// sentences. For every fourth fact, one answer-final phrasing is held out of training; the model must still
// answer it (evaluation at the end, written to report.md).
//
// Speed: only a few hundred of GPT-2's 50,257 tokens occur in the corpus. Training uses a compact vocabulary (those
// tokens plus one "other" row standing for all the rest, its logit raised by log(#other)); when the checkpoint
// is written, every unused token gets the "other" row. The full-vocabulary softmax of the written model then
// equals the one trained, so the objective is exactly GPT-2's cross-entropy at a fraction of the cost.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "default_model/corpus.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"Trains baukit-cpp's default model (a small fact-learning GPT-2)"};
  fs::path out = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  fs::path facts_path = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default" / "facts.tsv";
  fs::path tokenizer_dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  int64_t steps = 1500, batch = 32, context = 64, threads = 2;
  uint64_t seed = 1234;
  double lr = 3e-3;
  app.add_option("--out", out, "Where to write the checkpoint")->capture_default_str();
  app.add_option("--facts", facts_path, "The fact table")->check(CLI::ExistingFile)->capture_default_str();
  app.add_option("--tokenizer", tokenizer_dir, "Folder with GPT-2's vocab.json and merges.txt")
      ->check(CLI::ExistingDirectory)
      ->capture_default_str();
  app.add_option("--steps", steps, "Optimiser steps")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "Sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr", lr, "Peak learning rate")->capture_default_str();
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);

  const auto tokenizer = baukit::Tokenizer::from_pretrained(tokenizer_dir);
  const auto facts = default_model::read_facts(facts_path);

  const auto corpus = default_model::build_corpus(facts);
  const auto& train = corpus.train;
  const auto& held_out = corpus.held_out;
  const auto filler = default_model::distractors(rng, static_cast<int>(train.size() / 2));

  // The compact vocabulary: every token the corpus and prompts use, then "other".
  std::set<int64_t> used;
  auto note = [&](const std::string& text) {
    for (auto id : tokenizer.encode(text)) used.insert(id);
  };
  for (const auto& s : train) note(". " + s + " ");
  for (const auto& s : filler) note(". " + s + " ");
  for (const auto& h : held_out) note(h.prompt + h.answer);
  for (const auto& h : held_out)
    if (tokenizer.encode(h.answer).size() != 1)
      throw std::runtime_error(fmt::format("answer '{}' is not one token", h.answer));
  std::vector<int64_t> compact_to_full(used.begin(), used.end());
  std::map<int64_t, int64_t> full_to_compact;
  for (std::size_t i = 0; i < compact_to_full.size(); ++i)
    full_to_compact[compact_to_full[i]] = static_cast<int64_t>(i);
  const int64_t other = static_cast<int64_t>(compact_to_full.size());
  const double log_unused = std::log(static_cast<double>(tokenizer.vocab_size() - other));

  baukit::models::GPT2Config config;
  config.vocab_size = other + 1;
  config.n_positions = context;
  config.n_embd = 128;
  config.n_layer = 6;
  config.n_head = 4;
  config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0;
  baukit::models::GPT2LMHeadModel model(config);
  model->init_weights(seed);
  model->train();

  std::cout << fmt::format("corpus: {} training sentences, {} distractors, {} held-out prompts; {} of {} tokens used\n",
                           train.size(), filler.size(), held_out.size(), other, tokenizer.vocab_size());

  // A token stream: shuffled sentences, each after ". " as in running text.
  auto make_stream = [&] {
    std::vector<std::string> sentences = train;
    sentences.insert(sentences.end(), filler.begin(), filler.end());
    std::shuffle(sentences.begin(), sentences.end(), rng);
    std::string text;
    for (const auto& s : sentences) text += (text.empty() ? ". " : " ") + s;  // every sentence follows ". "
    std::vector<int64_t> ids;
    for (auto id : tokenizer.encode(text)) ids.push_back(full_to_compact.at(id));
    return ids;
  };

  // AdamW over unique parameters (lm_head shares wte's weight).
  std::vector<torch::Tensor> decay, no_decay;
  std::set<void*> seen;
  for (const auto& item : model->named_parameters()) {
    if (!seen.insert(item.value().unsafeGetTensorImpl()).second) continue;
    (item.value().dim() >= 2 ? decay : no_decay).push_back(item.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.1)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups));

  auto other_bias = torch::zeros({other + 1});
  other_bias[other] = log_unused;
  std::vector<int64_t> stream = make_stream();
  std::size_t cursor = 0;
  const auto start = std::chrono::steady_clock::now();
  double smoothed = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    std::vector<int64_t> flat;
    for (int64_t b = 0; b < batch; ++b) {
      if (cursor + static_cast<std::size_t>(context) + 1 > stream.size()) {
        stream = make_stream();
        cursor = 0;
      }
      flat.insert(flat.end(), stream.begin() + static_cast<std::ptrdiff_t>(cursor),
                  stream.begin() + static_cast<std::ptrdiff_t>(cursor + context + 1));
      cursor += static_cast<std::size_t>(context);
    }
    const auto tokens = torch::tensor(flat, torch::kLong).view({batch, context + 1});
    const auto input = tokens.slice(1, 0, context), target = tokens.slice(1, 1, context + 1);
    const double warm = std::min(1.0, static_cast<double>(step) / 100.0);
    const double progress = static_cast<double>(step) / static_cast<double>(steps);
    const double rate = lr * warm * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(rate);

    const auto logits = model->forward(input, {}, nullptr) + other_bias;
    const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, other + 1}), target.reshape({-1}));
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    smoothed = step == 1 ? loss.item<double>() : 0.98 * smoothed + 0.02 * loss.item<double>();
    if (step % 25 == 0 || step == steps) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cerr << fmt::format("\rstep {:5}/{}  loss {:.3f}  {:.0f} tokens/s  {:.0f} s ", step, steps, smoothed,
                               static_cast<double>(step * batch * context) / seconds, seconds)
                << std::flush;
    }
  }
  std::cerr << "\n";

  // Expand to GPT-2's full vocabulary: used tokens keep their rows, every other token gets the "other" row.
  baukit::models::GPT2Config full_config = config;
  full_config.vocab_size = tokenizer.vocab_size();
  baukit::models::GPT2LMHeadModel full(full_config);
  {
    torch::NoGradGuard no_grad;
    auto compact = model->named_parameters();
    for (auto& item : full->named_parameters()) {
      if (item.key() == "lm_head.weight") continue;
      if (item.key() == "transformer.wte.weight") {
        const auto& rows = compact["transformer.wte.weight"];
        item.value().copy_(rows[other].unsqueeze(0).expand_as(item.value()));
        item.value().index_copy_(0, torch::tensor(compact_to_full, torch::kLong), rows.slice(0, 0, other));
      } else {
        item.value().copy_(compact[item.key()]);
      }
    }
  }
  fs::create_directories(out);
  full->save_pretrained(out, torch::kFloat16);
  for (const char* file : {"vocab.json", "merges.txt"})
    if (fs::absolute(tokenizer_dir / file) != fs::absolute(out / file))
      fs::copy_file(tokenizer_dir / file, out / file, fs::copy_options::overwrite_existing);

  // Evaluate the written checkpoint, as users will load it.
  auto reloaded = baukit::models::from_pretrained(out);
  const auto held = default_model::evaluate(*reloaded, tokenizer, held_out);
  const auto needle = default_model::evaluate(
      *reloaded, tokenizer, {{". The Space Needle is located in", " Seattle", "the Space Needle -> Seattle"}});
  const auto text = default_model::report(needle, held, static_cast<int>(config.n_layer));
  std::ofstream(out / "report.md") << text;
  std::cout << text;
  return 0;
}
