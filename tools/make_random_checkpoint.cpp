// Writes a random checkpoint of any size in the Hugging Face layout (config.json, model.safetensors or shards, the
// tokenizer's files), for tests and benchmarks.
//   make-random-checkpoint --preset gpt2-xl --out /tmp/gpt2-xl-random      (48 layers, 1600 wide: 6.43 GB in F32)
//   make-random-checkpoint --family llama --preset llama-3-8b --out /tmp/llama-3-8b --shards 4   (BF16, 16 GB)
#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <chrono>
#include <iostream>

namespace {

// The real models' shapes and settings (their config.json), and the tests' tiny ones with real vocabularies.
const std::map<std::string, baukit::models::LlamaConfig>& llama_presets() {
  using baukit::models::LlamaConfig;
  static const auto presets = [] {
    std::map<std::string, LlamaConfig> p;
    auto make = [&](const std::string& name, const std::string& type, auto&& set) {
      auto c = LlamaConfig::defaults(type);
      c.weight_dtype = torch::kBFloat16;
      set(c);
      p[name] = c;
    };
    make("llama-3-8b", "llama", [](LlamaConfig& c) {
      c.vocab_size = 128256, c.intermediate_size = 14336, c.num_key_value_heads = 8, c.max_position_embeddings = 8192;
      c.rope_theta = 500000, c.rms_norm_eps = 1e-5, c.bos_token_id = 128000, c.eos_token_id = 128001;
    });
    make("llama-3.2-1b", "llama", [](LlamaConfig& c) {
      c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16;
      c.num_key_value_heads = 8, c.head_dim = 64, c.max_position_embeddings = 131072, c.rope_theta = 500000;
      c.rope_scaling.type = "llama3", c.rope_scaling.factor = 32,
      c.rope_scaling.original_max_position_embeddings = 8192;
      c.rms_norm_eps = 1e-5, c.tie_word_embeddings = true, c.bos_token_id = 128000, c.eos_token_id = 128001;
    });
    make("mistral-7b", "mistral",
         [](LlamaConfig& c) { c.max_position_embeddings = 32768, c.rms_norm_eps = 1e-5, c.sliding_window = 4096; });
    make("qwen2.5-7b", "qwen2", [](LlamaConfig& c) {
      c.vocab_size = 152064, c.hidden_size = 3584, c.intermediate_size = 18944, c.num_hidden_layers = 28;
      c.num_attention_heads = 28, c.num_key_value_heads = 4, c.max_position_embeddings = 131072, c.rope_theta = 1e6;
      c.sliding_window = 131072, c.bos_token_id = 151643, c.eos_token_id = 151643;
    });
    make("qwen3-8b", "qwen3", [](LlamaConfig& c) {
      c.intermediate_size = 12288, c.num_hidden_layers = 36, c.num_key_value_heads = 8,
      c.max_position_embeddings = 40960;
      c.rope_theta = 1e6, c.bos_token_id = 151643, c.eos_token_id = 151645;
    });
    // Tiny, for the tests: 16 wide, a few layers, the real vocabularies (tests/data/llama/README.md).
    auto tiny = [](LlamaConfig& c, int64_t vocab, int64_t layers) {
      c.vocab_size = vocab, c.hidden_size = 16, c.intermediate_size = 40, c.num_hidden_layers = layers;
      c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 256;
    };
    make("tiny-llama2", "llama", [&](LlamaConfig& c) {
      tiny(c, 32000, 3);
      c.num_key_value_heads = 4, c.rms_norm_eps = 1e-5, c.weight_dtype = torch::kFloat32;
    });
    make("tiny-llama3", "llama", [&](LlamaConfig& c) {
      tiny(c, 128256, 3);
      c.head_dim = 8, c.max_position_embeddings = 2048, c.rope_theta = 500000, c.rms_norm_eps = 1e-5;
      c.rope_scaling.type = "llama3", c.rope_scaling.factor = 8, c.rope_scaling.original_max_position_embeddings = 256;
      c.tie_word_embeddings = true, c.bos_token_id = 128000, c.eos_token_id = 128001;
    });
    make("tiny-mistral", "mistral", [&](LlamaConfig& c) {
      tiny(c, 32000, 2);
      c.sliding_window = 4, c.rms_norm_eps = 1e-5, c.weight_dtype = torch::kFloat32;
    });
    make("tiny-qwen2", "qwen2", [&](LlamaConfig& c) {
      tiny(c, 151936, 3);
      c.rope_theta = 1e6, c.tie_word_embeddings = true, c.bos_token_id = 151643, c.eos_token_id = 151643;
    });
    make("tiny-qwen3", "qwen3", [&](LlamaConfig& c) {
      tiny(c, 151936, 3);
      c.head_dim = 8, c.rope_theta = 1e6, c.tie_word_embeddings = true, c.weight_dtype = torch::kFloat32;
      c.rope_scaling.type = "yarn", c.rope_scaling.factor = 4, c.rope_scaling.original_max_position_embeddings = 64;
      c.bos_token_id = 151643, c.eos_token_id = 151645;
    });
    for (auto& [name, c] : p) c.layer_types = LlamaConfig::default_layer_types(c);
    return p;
  }();
  return presets;
}

// GPT-NeoX: the Pythia suite's shapes (F16, as EleutherAI publishes them; vocab padded past the tokenizer's
// 50,277 tokens) and the tests' tiny ones.
const std::map<std::string, baukit::models::GPTNeoXConfig>& neox_presets() {
  using baukit::models::GPTNeoXConfig;
  static const auto presets = [] {
    std::map<std::string, GPTNeoXConfig> p;
    auto pythia = [&](const std::string& name, int64_t width, int64_t layers, int64_t heads, int64_t vocab) {
      GPTNeoXConfig c;
      c.hidden_size = width, c.num_hidden_layers = layers, c.num_attention_heads = heads;
      c.intermediate_size = 4 * width, c.vocab_size = vocab, c.eos_token_id = 0, c.weight_dtype = torch::kFloat16;
      p[name] = c;
    };
    pythia("pythia-70m", 512, 6, 8, 50304);
    pythia("pythia-160m", 768, 12, 12, 50304);
    pythia("pythia-410m", 1024, 24, 16, 50304);
    pythia("pythia-1b", 2048, 16, 8, 50304);
    pythia("pythia-1.4b", 2048, 24, 16, 50304);
    pythia("pythia-2.8b", 2560, 32, 32, 50304);
    pythia("pythia-6.9b", 4096, 32, 32, 50432);
    pythia("pythia-12b", 5120, 36, 40, 50688);
    // Tiny, for the tests: 32 wide, heads of 8 with a quarter (2 dimensions) turning, GPT-2's byte-level vocabulary
    // (50,258 tokens with <|padding|>) in 50,304 rows as Pythia pads them.
    pythia("tiny-pythia", 32, 3, 4, 50304);
    p["tiny-pythia"].intermediate_size = 40, p["tiny-pythia"].max_position_embeddings = 256;
    p["tiny-pythia"].weight_dtype = torch::kFloat32;
    p["tiny-neox-sequential"] = p["tiny-pythia"];
    p["tiny-neox-sequential"].use_parallel_residual = false, p["tiny-neox-sequential"].rotary_pct = 0.5;
    return p;
  }();
  return presets;
}

// Gemma 2 and 3: the released text models' shapes (BF16) and the tests' tiny ones (24 wide: sqrt(24) is not a BF16
// number, so the embedding scale's rounding shows; soft caps low enough to bend the tiny model's logits).
const std::map<std::string, baukit::models::GemmaConfig>& gemma_presets() {
  using baukit::models::GemmaConfig;
  static const auto presets = [] {
    std::map<std::string, GemmaConfig> p;
    auto make = [&](const std::string& name, const std::string& type, auto&& set) {
      auto c = GemmaConfig::defaults(type);
      c.weight_dtype = c.checkpoint_dtype = torch::kBFloat16;
      set(c);
      c.layer_types = GemmaConfig::default_layer_types(c);
      p[name] = c;
    };
    make("gemma-2-2b", "gemma2", [](GemmaConfig&) {});
    make("gemma-2-9b", "gemma2", [](GemmaConfig& c) {
      c.hidden_size = 3584, c.intermediate_size = 14336, c.num_hidden_layers = 42, c.num_attention_heads = 16;
      c.num_key_value_heads = 8;
    });
    make("gemma-3-1b", "gemma3_text", [](GemmaConfig& c) {
      c.vocab_size = 262144, c.hidden_size = 1152, c.intermediate_size = 6912, c.num_attention_heads = 4;
      c.num_key_value_heads = 1, c.sliding_window = 512, c.max_position_embeddings = 32768;
    });
    make("gemma-3-4b", "gemma3_text", [](GemmaConfig& c) {
      c.hidden_size = 2560, c.intermediate_size = 10240, c.num_hidden_layers = 34, c.sliding_window = 1024;
      c.rope_scaling.type = "linear", c.rope_scaling.factor = 8;
    });
    auto tiny = [](GemmaConfig& c) {
      c.vocab_size = 262208, c.hidden_size = 24, c.intermediate_size = 40, c.num_attention_heads = 4;
      c.num_key_value_heads = 2, c.head_dim = 8, c.query_pre_attn_scalar = 6, c.sliding_window = 4;
      c.max_position_embeddings = 256;
    };
    make("tiny-gemma2", "gemma2", [&](GemmaConfig& c) {
      tiny(c);
      c.num_hidden_layers = 3, c.final_logit_softcapping = 15.0, c.attn_logit_softcapping = 1.5;
    });
    make("tiny-gemma3", "gemma3_text", [&](GemmaConfig& c) {
      tiny(c);
      c.num_hidden_layers = 4, c.sliding_window_pattern = 2, c.rope_local_base_freq = 100;
      c.rope_scaling.type = "linear", c.rope_scaling.factor = 8;
    });
    return p;
  }();
  return presets;
}

// Writes a checkpoint of `model` (its config `config`), initialised deterministically, with the tokenizer's files.
template <class Model, class Config>
void write_checkpoint(Model& model, const Config& config, uint64_t seed, int64_t shards,
                      const std::filesystem::path& tokenizer, const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  const auto tied = model->tied_names();
  baukit::models::init_deterministic(*model, seed, tied);
  baukit::models::save_checkpoint(*model, config.to_json(), out, config.weight_dtype, tied, shards);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"})
    if (fs::exists(tokenizer / file)) fs::copy_file(tokenizer / file, out / file, fs::copy_options::overwrite_existing);
}

// Picks `preset` from `presets` (for `family`) or the family's defaults; false (after a message) if it is another's.
template <class Config>
bool choose(const std::map<std::string, Config>& presets, const std::string& preset, const std::string& family,
            Config& config) {
  if (preset.empty()) return true;
  if (!presets.count(preset)) {
    std::cerr << "make-random-checkpoint: --preset " << preset << " is not a " << family << " preset\n";
    return false;
  }
  config = presets.at(preset);
  return true;
}

}  // namespace

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
  app.add_option("--family", family, "gpt2, gptj, llama, mistral, qwen2, qwen3, gpt_neox, gemma2 or gemma3_text")
      ->check(
          CLI::IsMember({"gpt2", "gptj", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gemma2", "gemma3_text"}))
      ->capture_default_str();
  std::vector<std::string> preset_names = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt-j-6b"};
  for (const auto& [name, llama] : llama_presets()) preset_names.push_back(name);
  for (const auto& [name, neox] : neox_presets()) preset_names.push_back(name);
  for (const auto& [name, gemma] : gemma_presets()) preset_names.push_back(name);
  app.add_option("--preset", preset,
                 "gpt2, gpt2-medium, gpt2-large, gpt2-xl, gpt-j-6b; llama-3-8b, llama-3.2-1b, mistral-7b, qwen2.5-7b, "
                 "qwen3-8b; pythia-70m ... pythia-12b; gemma-2-2b, gemma-2-9b, gemma-3-1b, gemma-3-4b; and the tests' "
                 "tiny-* (sizes below override it)")
      ->check(CLI::IsMember(preset_names));
  int64_t shards = 1;
  app.add_option("--shards", shards, "Llama families: safetensors files (with model.safetensors.index.json)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
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
  const auto type = dtype == "f32" ? torch::kFloat32 : dtype == "f16" ? torch::kFloat16 : torch::kBFloat16;
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const bool dtype_given = app.get_option("--dtype")->count() > 0;
  if (family == "gpt_neox") {
    baukit::models::GPTNeoXConfig c;
    if (!choose(neox_presets(), preset, family, c)) return 1;
    if (layers->count()) c.num_hidden_layers = config.n_layer;
    if (width->count()) c.hidden_size = config.n_embd, c.intermediate_size = 4 * config.n_embd;
    if (heads->count()) c.num_attention_heads = config.n_head;
    if (vocab_option->count()) c.vocab_size = config.vocab_size;
    if (positions_option->count()) c.max_position_embeddings = config.n_positions;
    if (dtype_given || preset.empty()) c.weight_dtype = type;
    baukit::models::GPTNeoXForCausalLM model(c);
    write_checkpoint(model, c, seed, shards, tokenizer, out);
    std::cout << fmt::format("wrote gpt_neox {} ({} layers, {} wide, {} heads, {}, {} residual) in {:.1f} s\n",
                             out.string(), c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                             baukit::models::dtype_name(c.weight_dtype),
                             c.use_parallel_residual ? "parallel" : "sequential", seconds());
    return 0;
  }
  if (family == "gemma2" || family == "gemma3_text") {
    auto c = baukit::models::GemmaConfig::defaults(family);
    if (!choose(gemma_presets(), preset, family, c)) return 1;
    if (c.model_type != family) {
      std::cerr << "make-random-checkpoint: --preset " << preset << " is not a " << family << " preset\n";
      return 1;
    }
    if (layers->count()) c.num_hidden_layers = config.n_layer;
    if (width->count()) c.hidden_size = config.n_embd;
    if (heads->count()) c.num_attention_heads = config.n_head;
    if (vocab_option->count()) c.vocab_size = config.vocab_size;
    if (positions_option->count()) c.max_position_embeddings = config.n_positions;
    if (dtype_given || preset.empty()) c.weight_dtype = c.checkpoint_dtype = type;
    c.layer_types = baukit::models::GemmaConfig::default_layer_types(c);
    baukit::models::GemmaForCausalLM model(c);
    write_checkpoint(model, c, seed, shards, tokenizer, out);
    std::cout << fmt::format("wrote {} {} ({} layers, {} wide, {} heads, {} key/value heads, {}) in {:.1f} s\n", family,
                             out.string(), c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                             c.num_key_value_heads, baukit::models::dtype_name(c.weight_dtype), seconds());
    return 0;
  }
  if (family != "gpt2" && family != "gptj") {
    auto llama = baukit::models::LlamaConfig::defaults(family);
    if (!choose(llama_presets(), preset, family, llama)) return 1;
    if (llama.model_type != family) {
      std::cerr << "make-random-checkpoint: --preset " << preset << " is not a " << family << " preset\n";
      return 1;
    }
    if (layers->count()) llama.num_hidden_layers = config.n_layer;
    if (width->count()) llama.hidden_size = config.n_embd;
    if (heads->count()) llama.num_attention_heads = config.n_head;
    if (vocab_option->count()) llama.vocab_size = config.vocab_size;
    if (positions_option->count()) llama.max_position_embeddings = config.n_positions;
    if (dtype_given || preset.empty()) llama.weight_dtype = type;
    llama.layer_types = baukit::models::LlamaConfig::default_layer_types(llama);  // for the sizes given
    baukit::models::LlamaForCausalLM model(llama);
    write_checkpoint(model, llama, seed, shards, tokenizer, out);
    std::cout << fmt::format("wrote {} {} ({} layers, {} wide, {} heads, {} key/value heads, {}) in {:.1f} s\n", family,
                             out.string(), llama.num_hidden_layers, llama.hidden_size, llama.num_attention_heads,
                             llama.kv_heads(), baukit::models::dtype_name(llama.weight_dtype), seconds());
    return 0;
  }

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
                           static_cast<double>(fs::file_size(out / "model.safetensors")) / 1e9, seconds());
  return 0;
}
