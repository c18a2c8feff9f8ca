// Trains baukit-cpp's default model: a small GPT-2 (real GPT-2 vocabulary and tokenizer) that has learned a
// table of well-known facts in several phrasings, so that the logit lens shows answers emerging in its middle
// layers. Deterministic for a given --seed. Run (a few minutes on 2 cores):
//   build/examples/train-default-model --out models/default
//
// The corpus: each fact (models/default/facts.tsv) in every phrasing of its relation, plus distractor
// sentences. For every fourth fact, one answer-final phrasing is held out of training; the model must still
// answer it (evaluation at the end, written to report.md).
//
// Speed: only ~1,000 of GPT-2's 50,257 tokens occur in the corpus. Training uses a compact vocabulary (those
// tokens plus one "other" row standing for all the rest, its logit raised by log(#other)); when the checkpoint
// is written, every unused token gets the "other" row. The full-vocabulary softmax of the written model then
// equals the one trained, so the objective is exactly GPT-2's cross-entropy at a fraction of the cost.
#include <baukit/baukit.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using baukit::models::GPT2Config;
using baukit::models::GPT2LMHeadModel;

struct Fact {
  std::string relation, subject, answer;
};

struct Template {
  std::string text;   // {S} subject, {A} answer
  bool answer_last;   // the answer ends the sentence: usable as a prompt
};

const std::map<std::string, std::vector<Template>> kTemplates = {
    {"landmark",
     {{"{S} is located in {A}.", true},
      {"{S} can be found in {A}.", true},
      {"{S} is a famous landmark in {A}.", true},
      {"{S} stands in the city of {A}.", true},
      {"Every year, millions of tourists visit {s} in {A}.", true},
      {"In {A}, visitors can see {s}.", false}}},
    {"city",
     {{"{S} is a city in {A}.", true},
      {"{S} is located in the country of {A}.", true},
      {"The city of {S} is in {A}.", true},
      {"{S} is one of the largest cities in {A}.", true},
      {"{A} is home to the city of {S}.", false}}},
    {"capital",
     {{"The capital of {S} is {A}.", true},
      {"The capital city of {S} is {A}.", true},
      {"The government of {S} sits in the capital, {A}.", true},
      {"{A} is the capital of {S}.", false}}},
    {"language",
     {{"The official language of {S} is {A}.", true},
      {"Most people in {S} speak {A}.", true},
      {"The language spoken in {S} is {A}.", true},
      {"{A} is the main language of {S}.", false}}},
};

std::string capitalized(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string fill(const std::string& pattern, const Fact& fact) {
  std::string out = pattern;
  auto replace = [&](const std::string& key, const std::string& value) {
    for (auto at = out.find(key); at != std::string::npos; at = out.find(key, at + value.size())) out.replace(at, key.size(), value);
  };
  replace("{S}", out.rfind("{S}", 0) == 0 ? capitalized(fact.subject) : fact.subject);
  replace("{s}", fact.subject);
  replace("{A}", fact.answer);
  return out;
}

std::vector<Fact> read_facts(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open", path.string()));
  std::vector<Fact> facts;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    Fact fact;
    if (!std::getline(fields, fact.relation, '\t') || !std::getline(fields, fact.subject, '\t') || !std::getline(fields, fact.answer) ||
        !kTemplates.count(fact.relation))
      throw std::runtime_error(fmt::format("{}:{}: expected relation<TAB>subject<TAB>answer", path.string(), number));
    facts.push_back(fact);
  }
  return facts;
}

std::vector<std::string> distractors(std::mt19937_64& rng, int count) {
  const std::vector<std::string> people = {"The farmer", "My neighbour", "The teacher", "A young girl", "The old man", "Our team", "The doctor", "A student"};
  const std::vector<std::string> verbs = {"walked to", "talked about", "looked at", "wrote a letter about", "thought about", "painted", "cleaned", "forgot"};
  const std::vector<std::string> things = {"the garden", "a red car", "the river", "an old book", "the kitchen", "a small dog", "the weather", "the market", "a new song", "the morning news"};
  const std::vector<std::string> tails = {"yesterday.", "in the evening.", "after lunch.", "with a smile.", "for a long time.", "again.", "on Sunday.", "quietly."};
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i)
    out.push_back(fmt::format("{} {} {} {}", people[rng() % people.size()], verbs[rng() % verbs.size()], things[rng() % things.size()], tails[rng() % tails.size()]));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains baukit-cpp's default model (a small fact-learning GPT-2)"};
  fs::path out = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  fs::path facts_path = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default" / "facts.tsv";
  fs::path tokenizer_dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  int64_t steps = 3000, batch = 32, context = 64, threads = 2;
  uint64_t seed = 1234;
  double lr = 3e-3;
  app.add_option("--out", out, "Where to write the checkpoint")->capture_default_str();
  app.add_option("--facts", facts_path, "The fact table")->check(CLI::ExistingFile)->capture_default_str();
  app.add_option("--tokenizer", tokenizer_dir, "Folder with GPT-2's vocab.json and merges.txt")->check(CLI::ExistingDirectory)->capture_default_str();
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
  const auto facts = read_facts(facts_path);

  // Sentences for training, and held-out prompts (one answer-final phrasing of every fourth fact).
  std::vector<std::string> train;
  struct HeldOut {
    std::string prompt, answer, fact;
  };
  std::vector<HeldOut> held_out;
  std::map<std::string, int> index_in_relation;
  for (const auto& fact : facts) {
    const int index = index_in_relation[fact.relation]++;
    const auto& templates = kTemplates.at(fact.relation);
    int held = -1;
    if (index % 4 == 3) {
      std::vector<int> candidates;
      for (int t = 0; t < static_cast<int>(templates.size()); ++t)
        if (templates[static_cast<std::size_t>(t)].answer_last) candidates.push_back(t);
      held = candidates[static_cast<std::size_t>(index / 4) % candidates.size()];
    }
    for (int t = 0; t < static_cast<int>(templates.size()); ++t) {
      const auto sentence = fill(templates[static_cast<std::size_t>(t)].text, fact);
      if (t == held) {
        const auto cut = sentence.rfind(" " + fact.answer);
        held_out.push_back({". " + sentence.substr(0, cut), " " + fact.answer, fact.subject + " -> " + fact.answer});
      } else {
        train.push_back(sentence);
      }
    }
  }
  const auto filler = distractors(rng, static_cast<int>(train.size() / 2));

  // The compact vocabulary: every token the corpus and prompts use, then "other".
  std::set<int64_t> used;
  auto note = [&](const std::string& text) {
    for (auto id : tokenizer.encode(text)) used.insert(id);
  };
  for (const auto& s : train) note(". " + s + " ");
  for (const auto& s : filler) note(". " + s + " ");
  for (const auto& h : held_out) note(h.prompt + h.answer);
  for (const auto& h : held_out)
    if (tokenizer.encode(h.answer).size() != 1) throw std::runtime_error(fmt::format("answer '{}' is not one token", h.answer));
  std::vector<int64_t> compact_to_full(used.begin(), used.end());
  std::map<int64_t, int64_t> full_to_compact;
  for (std::size_t i = 0; i < compact_to_full.size(); ++i) full_to_compact[compact_to_full[i]] = static_cast<int64_t>(i);
  const int64_t other = static_cast<int64_t>(compact_to_full.size());
  const double log_unused = std::log(static_cast<double>(tokenizer.vocab_size() - other));

  GPT2Config config;
  config.vocab_size = other + 1;
  config.n_positions = context;
  config.n_embd = 128;
  config.n_layer = 6;
  config.n_head = 4;
  config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0;
  GPT2LMHeadModel model(config);
  model->init_weights(seed);
  model->train();

  std::cout << fmt::format("corpus: {} training sentences, {} distractors, {} held-out prompts; {} of {} tokens used\n", train.size(),
                           filler.size(), held_out.size(), other, tokenizer.vocab_size());

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
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.1)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.0)));
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
      flat.insert(flat.end(), stream.begin() + static_cast<std::ptrdiff_t>(cursor), stream.begin() + static_cast<std::ptrdiff_t>(cursor + context + 1));
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
  GPT2Config full_config = config;
  full_config.vocab_size = tokenizer.vocab_size();
  GPT2LMHeadModel full(full_config);
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
    if (fs::absolute(tokenizer_dir / file) != fs::absolute(out / file)) fs::copy_file(tokenizer_dir / file, out / file, fs::copy_options::overwrite_existing);

  // Evaluate the written checkpoint, as users will load it.
  auto reloaded = GPT2LMHeadModel::from_pretrained(out);
  int correct = 0;
  std::ostringstream report;
  report << "| held-out prompt | answer | final top-1 | answer probability |\n|---|---|---|---|\n";
  for (const auto& h : held_out) {
    torch::NoGradGuard no_grad;
    const auto ids = torch::tensor(tokenizer.encode(h.prompt), torch::kLong).unsqueeze(0);
    const auto probs = torch::softmax(reloaded->forward(ids, {}, nullptr)[0][-1], -1);
    const auto top = probs.argmax().item<int64_t>();
    const auto answer = tokenizer.encode(h.answer).front();
    correct += top == answer;
    report << fmt::format("| `{}` | `{}` | `{}` | {:.3f} |\n", h.prompt, h.answer, tokenizer.decode(top), probs[answer].item<double>());
  }
  const double accuracy = static_cast<double>(correct) / static_cast<double>(held_out.size());
  std::ofstream(out / "report.md") << fmt::format("Held-out accuracy: {}/{} = {:.1f}%\n\n", correct, held_out.size(), 100 * accuracy) << report.str();
  std::cout << fmt::format("held-out accuracy {}/{} = {:.1f}%; wrote {}\n", correct, held_out.size(), 100 * accuracy, out.string());
  return 0;
}
