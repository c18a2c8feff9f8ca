// The seed notebook ("Logit lens visualization for GPT-2-XL") in C++, cell by cell.
//   build/examples/seed-notebook [MODEL_DIR]      (default: the embedded model; gpt2-xl if you have it)
// Writes seed-lens.html and seed-delta-lens.html.
#include <baukit/baukit.hpp>
#include <iostream>

using baukit::models::CausalLM;
namespace show = baukit::show;

// In [ ]: def generate(model, tok, prefix, n=10)  --  baukit::generate, with a key/value cache.

// In [ ]: def show_logit_lens(model, tok, prefix, topk=5, color=None, hs=None)
show::Node show_logit_lens(CausalLM& model, const baukit::Tokenizer& tok, const std::string& prefix,
                           const torch::Tensor& hs, int64_t topk = 5, std::vector<int> color = {0, 0, 255}) {
  torch::NoGradGuard no_grad;
  // The full decoder head normalizes hidden state and applies softmax at the end.
  auto decoder = baukit::make_decoder(model);
  const auto probs = decoder->forward(hs);  // Apply the decoder head to every hidden state
  const auto [favorite_probs, favorite_tokens] = probs.topk(topk, -1);
  // Let's also plot hidden state magnitudes, normalised by the maximum over tokens 1.. (token 0 is always huge).
  auto magnitudes = hs.norm(2, -1);
  magnitudes = magnitudes / (hs.size(1) > 1 ? magnitudes.slice(1, 1) : magnitudes).max();
  // All the input tokens.
  std::vector<std::string> prompt_tokens;
  for (auto t : tok.encode(prefix)) prompt_tokens.push_back(tok.decode(t));

  // Foreground color shows token probability, and background color shows hs magnitude.
  auto color_fn = [&](double m, double p) {
    auto channel = [](double v) { return std::to_string(static_cast<int>(std::clamp(v, 0.0, 255.0))); };
    const auto a = [&](int c) { return channel(255 * (1 - m) + c * m); };
    const auto b = channel(255 * (1 - p));
    return show::style({{"background", "rgb(" + a(color[0]) + ", " + a(color[1]) + ", " + a(color[2]) + ")"},
                        {"color", "rgb(" + b + ", " + b + ", " + b + ")"}});
  };
  // In the hover popup, show topk probabilities beyond the 0th.
  auto hover = [&](const torch::Tensor& prob, const torch::Tensor& toks, double m) {
    std::string lines = fmt::format("mag: {:.2f}", m);
    for (int64_t k = 0; k < prob.size(0); ++k)
      lines += fmt::format("\n{}: prob {:.2f}", tok.decode(toks[k].item<int64_t>()), prob[k].item<double>());
    return show::attr({{"title", lines}});
  };
  // Construct the HTML output using show.
  show::Node::List header_line{show::style({{"fontWeight", "bold"}}), "Layer"};
  for (std::size_t i = 0; i < prompt_tokens.size(); ++i)
    header_line.insert(header_line.end(), {show::style({{"background", "yellow"}}),
                                           show::attr({{"title", fmt::format("Token {}", i)}}), prompt_tokens[i]});
  show::Node::List rows{header_line};
  for (int64_t layer = 0; layer < magnitudes.size(0); ++layer) {
    show::Node::List row{show::style({{"fontWeight", "bold"}}), std::to_string(layer)};
    for (int64_t t = 0; t < magnitudes.size(1); ++t) {
      const double m = magnitudes[layer][t].item<double>();
      const auto p = favorite_probs[layer][t], toks = favorite_tokens[layer][t];
      row.insert(row.end(),
                 {color_fn(m, p[0].item<double>()), hover(p, toks, m),
                  show::style({{"overflowX", "hidden"}, {"width", "6em"}}), tok.decode(toks[0].item<int64_t>())});
    }
    rows.push_back(row);
  }
  rows.push_back(header_line);
  return show::Node(rows);
}

int main(int argc, char** argv) {
  torch::set_num_threads(2);
  baukit::kernels::use_openblas_kernels_for_this_cpu();  // a no-op unless OpenBLAS runs generic kernels here
  const std::filesystem::path dir =
      argc > 1 ? argv[1] : std::filesystem::path(BAUKIT_SOURCE_DIR) / "models" / "default";

  // In [ ]: First load the model and tokenizer
  auto model = baukit::models::from_pretrained(dir);
  const auto tok = baukit::Tokenizer::from_pretrained(dir);

  // In [ ]: baukit.set_requires_grad(False, model)
  baukit::set_requires_grad(false, model->module());

  // In [ ]: generate(model, tok, 'In his NBA career, KC Jones played', n=100)
  const int64_t room =
      model->max_positions() - static_cast<int64_t>(tok.encode("In his NBA career, KC Jones played").size());
  std::cout << baukit::generate(*model, tok, "In his NBA career, KC Jones played", std::min<int64_t>(100, room))
            << "\n";

  // In [ ]: hs = get_hidden_states(model, tok, prompt); hs.shape
  const auto hs = baukit::get_hidden_states(*model, tok, "Hello, my name is also");
  std::cout << "hs.shape = " << hs.sizes() << "\n";

  // In [ ]: show_logit_lens(model, tok, '. The Space Needle is located in')
  const std::string prompt = ". The Space Needle is located in";
  show::save("seed-lens.html", show_logit_lens(*model, tok, prompt, baukit::get_hidden_states(*model, tok, prompt)),
             "Logit lens");

  // In [ ]: hs = get_hidden_state_deltas(model, tok, 'The Space Needle is located in'); hs.shape
  std::cout << "deltas.shape = "
            << baukit::get_hidden_state_deltas(*model, tok, "The Space Needle is located in").sizes() << "\n";

  // In [ ]: show_logit_lens(model, tok, '. The Space Needle is located in', hs=get_hidden_state_deltas)
  show::save("seed-delta-lens.html",
             show_logit_lens(*model, tok, prompt, baukit::get_hidden_state_deltas(*model, tok, prompt)), "Delta lens");
  std::cout << "wrote seed-lens.html and seed-delta-lens.html\n";
  return 0;
}
