// The default model's corpus: the fact table, its phrasings, the held-out prompts and the distractor text;
// and the evaluation that report.md and the tests use. Shared by train-default-model, evaluate-default-model
// and the tests, so all three see the same held-out set.
#pragma once

#include <fmt/format.h>

#include <baukit/baukit.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace default_model {

namespace fs = std::filesystem;

struct Fact {
  std::string relation, subject, answer;
};

struct Template {
  std::string text;  // {S} subject, {A} answer
  bool answer_last;  // the answer ends the sentence: usable as a prompt
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
    for (auto at = out.find(key); at != std::string::npos; at = out.find(key, at + value.size()))
      out.replace(at, key.size(), value);
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
    if (!std::getline(fields, fact.relation, '\t') || !std::getline(fields, fact.subject, '\t') ||
        !std::getline(fields, fact.answer) || !kTemplates.count(fact.relation))
      throw std::runtime_error(fmt::format("{}:{}: expected relation<TAB>subject<TAB>answer", path.string(), number));
    facts.push_back(fact);
  }
  return facts;
}

std::vector<std::string> distractors(std::mt19937_64& rng, int count) {
  const std::vector<std::string> people = {"The farmer",  "My neighbour", "The teacher", "A young girl",
                                           "The old man", "Our team",     "The doctor",  "A student"};
  const std::vector<std::string> verbs = {"walked to",     "talked about", "looked at", "wrote a letter about",
                                          "thought about", "painted",      "cleaned",   "forgot"};
  const std::vector<std::string> things = {"the garden",  "a red car",       "the river",   "an old book",
                                           "the kitchen", "a small dog",     "the weather", "the market",
                                           "a new song",  "the morning news"};
  const std::vector<std::string> tails = {"yesterday.",       "in the evening.", "after lunch.", "with a smile.",
                                          "for a long time.", "again.",          "on Sunday.",   "quietly."};
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i)
    out.push_back(fmt::format("{} {} {} {}", people[rng() % people.size()], verbs[rng() % verbs.size()],
                              things[rng() % things.size()], tails[rng() % tails.size()]));
  return out;
}

/// A prompt whose phrasing of its fact was kept out of training.
struct HeldOut {
  std::string prompt, answer, fact;
};

/// The corpus: training sentences and held-out prompts. For every fourth fact of each relation, one
/// answer-final phrasing (rotating) is held out.
struct Corpus {
  std::vector<std::string> train;
  std::vector<HeldOut> held_out;
};

inline Corpus build_corpus(const std::vector<Fact>& facts) {
  Corpus corpus;
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
        corpus.held_out.push_back(
            {". " + sentence.substr(0, cut), " " + fact.answer, fact.subject + " -> " + fact.answer});
      } else {
        corpus.train.push_back(sentence);
      }
    }
  }
  return corpus;
}

/// One prompt's result: the answer's final probability and the first layer where it is the lens's top-1.
struct Evaluation {
  HeldOut item;
  std::string final_top1;
  double answer_probability = 0;
  int first_top1_layer = -1;  // -1: never top-1
};

/// Runs the lens on each prompt; the answer must be one token.
inline std::vector<Evaluation> evaluate(baukit::models::CausalLM& model, const baukit::Tokenizer& tokenizer,
                                        const std::vector<HeldOut>& prompts) {
  std::vector<Evaluation> out;
  for (const auto& item : prompts) {
    const auto ids = tokenizer.encode(item.prompt);
    const auto answer = tokenizer.encode(item.answer).at(0);
    const auto lens = baukit::logit_lens(model, ids, baukit::LensOptions().target(answer).topk(1));
    Evaluation e{item, {}, 0, -1};
    const auto& last = lens.lens.cells.back().back();
    e.final_top1 = tokenizer.decode(last.tokens[0]);
    for (std::size_t layer = 0; layer < lens.lens.cells.size(); ++layer)
      if (lens.lens.cells[layer].back().rank_of_target == 1) {
        e.first_top1_layer = static_cast<int>(layer);
        break;
      }
    torch::NoGradGuard no_grad;
    const auto logits = model.forward(torch::tensor(ids, torch::kLong).unsqueeze(0), {}, nullptr);
    e.answer_probability = torch::softmax(logits[0][-1], -1)[answer].item<double>();
    out.push_back(e);
  }
  return out;
}

/// The report: the Space Needle prompt, then the held-out table with accuracy.
inline std::string report(const std::vector<Evaluation>& space_needle, const std::vector<Evaluation>& held_out,
                          int layers) {
  int correct = 0;
  for (const auto& e : held_out) correct += e.final_top1 == e.item.answer;
  std::ostringstream out;
  out << fmt::format("# Default model evaluation\n\n{} layers. Generated by evaluate-default-model.\n\n", layers);
  out << "| prompt | answer | final top-1 | answer probability | first layer with the answer top-1 "
         "|\n|---|---|---|---|---|\n";
  auto row = [&](const Evaluation& e) {
    out << fmt::format("| `{}` | `{}` | `{}` | {:.3f} | {} |\n", e.item.prompt, e.item.answer, e.final_top1,
                       e.answer_probability,
                       e.first_top1_layer < 0 ? std::string("never") : std::to_string(e.first_top1_layer));
  };
  for (const auto& e : space_needle) row(e);
  out << fmt::format("\n## Held-out phrasings: {}/{} = {:.1f}% answered (final top-1)\n\n", correct, held_out.size(),
                     100.0 * correct / static_cast<double>(held_out.size()));
  out << "| prompt | answer | final top-1 | answer probability | first layer with the answer top-1 "
         "|\n|---|---|---|---|---|\n";
  for (const auto& e : held_out) row(e);
  return out.str();
}

}  // namespace default_model
