// Writes a random GPT-2 checkpoint of any size in the Hugging Face layout (config.json, model.safetensors,
// vocab.json, merges.txt), for tests and benchmarks.
//   make-random-checkpoint --preset gpt2-xl --out /tmp/gpt2-xl-random      (48 layers, 1600 wide: 6.43 GB in F32)
#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <chrono>
#include <iostream>

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  CLI::App app{"Writes a random GPT-2 checkpoint in the Hugging Face layout"};
  baukit::models::GPT2Config config;
  std::string preset, dtype = "f32", family = "gpt2";
  int64_t rotary_dim = 64;
  fs::path out, tokenizer = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  uint64_t seed = 0;
  int threads = 2;
  app.add_option("--out", out, "Folder to write")->required();
  app.add_option("--family", family, "gpt2 or gptj")->check(CLI::IsMember({"gpt2", "gptj"}))->capture_default_str();
  app.add_option("--preset", preset, "gpt2, gpt2-medium, gpt2-large, gpt2-xl or gpt-j-6b (sizes below override it)")
      ->check(CLI::IsMember({"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt-j-6b"}));
  app.add_option("--rotary-dim", rotary_dim, "GPT-J: rotated dimensions per head")->capture_default_str();
  auto* layers = app.add_option("--layers", config.n_layer, "Blocks")->check(CLI::PositiveNumber);
  auto* width = app.add_option("--width", config.n_embd, "n_embd")->check(CLI::PositiveNumber);
  auto* heads = app.add_option("--heads", config.n_head, "Attention heads")->check(CLI::PositiveNumber);
  auto* vocab_option =
      app.add_option("--vocab", config.vocab_size, "Vocabulary size (GPT-J: 50400)")->check(CLI::PositiveNumber);
  auto* positions_option =
      app.add_option("--positions", config.n_positions, "n_positions (GPT-J: 2048)")->check(CLI::PositiveNumber);
  app.add_option("--dtype", dtype, "Storage: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  app.add_option("--tokenizer", tokenizer, "Folder whose vocab.json and merges.txt are copied")
      ->check(CLI::ExistingDirectory);
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);

  const std::map<std::string, std::array<int64_t, 3>> presets = {{"gpt2", {12, 768, 12}},
                                                                 {"gpt2-medium", {24, 1024, 16}},
                                                                 {"gpt2-large", {36, 1280, 20}},
                                                                 {"gpt2-xl", {48, 1600, 25}},
                                                                 {"gpt-j-6b", {28, 4096, 16}}};
  if (!preset.empty()) {
    const auto [l, w, h] = presets.at(preset);
    if (!layers->count()) config.n_layer = l;
    if (!width->count()) config.n_embd = w;
    if (!heads->count()) config.n_head = h;
  }
  if (config.n_embd % config.n_head != 0) {
    std::cerr << "make-random-checkpoint: --width " << config.n_embd << " is not divisible by --heads " << config.n_head
              << "\n";
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto type = dtype == "f32" ? torch::kFloat32 : dtype == "f16" ? torch::kFloat16 : torch::kBFloat16;
  if (family == "gpt2") {
    baukit::models::GPT2LMHeadModel model(config);
    model->init_weights(seed);
    model->save_pretrained(out, type);
  } else {
    // GPT-J: weights are built and kept in the storage dtype, so a 6B model in F16 needs 12 GB, not 24.
    baukit::models::GPTJConfig j;
    j.n_layer = config.n_layer;
    j.n_embd = config.n_embd;
    j.n_head = config.n_head;
    j.rotary_dim = rotary_dim;
    j.vocab_size = vocab_option->count() ? config.vocab_size : 50400;
    j.n_positions = positions_option->count() ? config.n_positions : 2048;
    j.weight_dtype = type;
    baukit::models::GPTJForCausalLM model(j);
    model->init_weights(seed);
    model->save_pretrained(out);
    config.vocab_size = j.vocab_size;
  }
  for (const char* file : {"vocab.json", "merges.txt"})
    fs::copy_file(tokenizer / file, out / file, fs::copy_options::overwrite_existing);
  if (config.vocab_size > 50257) {  // names for the ids beyond GPT-2's, as GPT-J's added_tokens.json gives them
    nlohmann::json added;
    for (int64_t id = 50257; id < config.vocab_size; ++id) added[fmt::format("<|extratoken_{}|>", id - 50256)] = id;
    std::ofstream(out / "added_tokens.json") << added.dump();
  }
  std::cout << fmt::format("wrote {} {} ({} layers, {} wide, {} heads, {:.2f} GB) in {:.1f} s\n", family, out.string(),
                           config.n_layer, config.n_embd, config.n_head,
                           static_cast<double>(fs::file_size(out / "model.safetensors")) / 1e9,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
