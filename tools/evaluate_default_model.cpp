// Evaluates the default model (or any checkpoint trained on the same corpus): the Space Needle prompt and every
// held-out phrasing, with the answer's final probability and the first layer where the lens shows it top-1.
// Also writes the held-out phrasings with their answers as a corpus (held-out.txt, one per line), which
// `baukit-lens eval --corpus` reads.
//   build/tools/evaluate-default-model [MODEL_DIR]      (writes MODEL_DIR/report.md and MODEL_DIR/held-out.txt)
#include <iostream>

#include "default_model/corpus.hpp"

int main(int argc, char** argv) {
  torch::set_num_threads(2);
  const std::filesystem::path dir =
      argc > 1 ? argv[1] : std::filesystem::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
  auto model = baukit::models::from_pretrained(dir);
  const auto corpus = default_model::build_corpus(
      default_model::read_facts(std::filesystem::path(BAUKIT_SOURCE_DIR) / "models" / "default" / "facts.tsv"));
  const auto held = default_model::evaluate(*model, tokenizer, corpus.held_out);
  const auto needle = default_model::evaluate(
      *model, tokenizer, {{". The Space Needle is located in", " Seattle", "the Space Needle -> Seattle"}});
  const auto text = default_model::report(needle, held, static_cast<int>(model->num_layers()));
  std::ofstream(dir / "report.md") << text;
  std::ofstream held_out(dir / "held-out.txt");
  for (const auto& h : corpus.held_out) held_out << h.prompt.substr(2) << h.answer << ".\n";
  std::cout << text;
  return 0;
}
