// Specification of the GPT-2 model, checkpoint loading and generation, against the fixtures' references.
#include <dlfcn.h>

#include <baukit/baukit.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "device.hpp"
#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp

namespace fs = std::filesystem;
using baukit::io::CheckpointError;
using baukit::io::CheckpointErrorKind;

std::map<std::string, torch::Tensor> reference_tensors(const fs::path& path) {
  baukit::io::SafetensorsFile file(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& entry : file.entries()) out[entry.name] = file.tensor(entry).to(torch::kFloat32).clone();
  return out;
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kLong).unsqueeze(0);
}

// Hidden states of every block and of the embedding within 1e-4, logits within 1e-3, top-5 lens tokens and final
// top-5 equal, and the 10 greedy tokens equal (with and without the cache), for every prompt of `reference`
// (`baukit::models::compare_to_reference`, the library's check for a family); the blocks are the traceable modules
// of the layout's names.
void check_parity(baukit::models::CausalLM& model, const nlohmann::json& reference,
                  const std::map<std::string, torch::Tensor>& tensors, const std::string& label) {
  INFO(label);
  const auto layout = model.lens_layout();
  const auto& layers = layout.blocks;
  REQUIRE(static_cast<int64_t>(layers.size()) == model.num_layers());
  const auto block_prefix = layers.front().substr(0, layers.front().size() - 1);  // "transformer.h.", "model.layers."
  REQUIRE(baukit::module_names(model.module(), std::regex("^" + std::regex_replace(block_prefix, std::regex(R"(\.)"),
                                                                                    R"(\.)") +
                                                          R"(\d+$)")) == layers);
  REQUIRE(reference["prompts"].size() == 5);
  const auto report = baukit::models::compare_to_reference(model, reference, tensors);
  INFO(report.summary());
  CHECK(report.hidden < 1e-4);
  CHECK(report.embedding < 1e-4);
  CHECK(report.logits < 1e-3);
  CHECK(report.mismatches.empty());
  CHECK(report.within(1e-4));
  // Every layer, position and continuation was compared.
  int64_t cells = 0;
  for (const auto& prompt : reference["prompts"]) cells += model.num_layers() * static_cast<int64_t>(prompt["ids"].size()) + 2;
  CHECK(report.cells == cells);
}

const std::vector<std::string> kGPT2Fixtures = {"gpt2-tiny", "gpt2-tiny-prefixed-bf16"};

}  // namespace

TEST_CASE("GPT-2 matches a float64 reference with Hugging Face's semantics on both fixtures", "[gpt2][parity]") {
  for (const auto& fixture : kGPT2Fixtures) {
    auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / fixture, baukit_tests::test_device());
    baukit::set_requires_grad(false, *model);
    const auto dir = kFixtures.parent_path() / "hf-reference";
    check_parity(*model, read_json(dir / (fixture + ".json")), reference_tensors(dir / (fixture + ".safetensors")),
                 fixture);
  }
}

TEST_CASE("compare_to_reference names what differs from a reference", "[gpt2][parity]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const auto dir = kFixtures.parent_path() / "hf-reference";
  auto reference = read_json(dir / "gpt2-tiny.json");
  auto tensors = reference_tensors(dir / "gpt2-tiny.safetensors");
  CHECK(baukit::models::compare_to_reference(*model, reference, tensors).within(1e-4));
  // One hidden state off by 0.01, one lens cell's top-1 replaced, one continuation changed: each is reported.
  tensors["p1.hidden"][2][0][3] += 0.01;
  auto& cell = reference["prompts"][0]["lens"]["tokens"][1][2];
  cell[0] = cell[0].get<int64_t>() == 7 ? 8 : 7;
  auto& generated = reference["prompts"][3]["generated"];
  generated[9] = generated[9].get<int64_t>() == 7 ? 8 : 7;
  const auto report = baukit::models::compare_to_reference(*model, reference, tensors);
  CHECK_FALSE(report.within(1e-4));
  CHECK(report.hidden > 0.009);
  CHECK(report.hidden < 0.011);
  REQUIRE(report.mismatches.size() == 3);
  CHECK(report.mismatches[0] == "prompt 0: the lens top-5 at transformer.h.1 position 2");
  CHECK(report.mismatches[1] == "prompt 3: the 10 greedy tokens with the cache");
  CHECK(report.mismatches[2] == "prompt 3: the 10 greedy tokens without the cache");
  CHECK_THAT(report.summary(), Catch::Contains("3 of") && Catch::Contains("transformer.h.1 position 2"));
  tensors.erase("p0.embed");
  CHECK_THROWS_WITH(baukit::models::compare_to_reference(*model, reference, tensors),
                    Catch::Contains("no tensor 'p0.embed'"));
}

TEST_CASE("GPT-2 matches the fixtures' own references (an independent PyTorch implementation)", "[gpt2][parity]") {
  for (const auto& fixture : kGPT2Fixtures) {
    auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / fixture, baukit_tests::test_device());
    baukit::set_requires_grad(false, *model);
    check_parity(*model, read_json(kFixtures / fixture / "reference.json"),
                 reference_tensors(kFixtures / fixture / "reference.safetensors"), fixture + " (shared reference)");
  }
}

TEST_CASE("Every GPT-2 submodule has Hugging Face's name and is traceable", "[gpt2]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  for (const char* name :
       {"transformer.wte", "transformer.wpe", "transformer.drop", "transformer.h.0", "transformer.h.0.ln_1",
        "transformer.h.0.attn", "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
        "transformer.h.0.attn.attn_dropout", "transformer.h.0.attn.resid_dropout", "transformer.h.0.ln_2",
        "transformer.h.0.mlp", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.act", "transformer.h.0.mlp.c_proj",
        "transformer.h.0.mlp.dropout", "transformer.ln_f", "lm_head"}) {
    INFO(name);
    CHECK_NOTHROW(baukit::Trace(*model, name));
  }
  // lm_head is tied to wte: the same parameter.
  CHECK(model->lm_head->weight.data_ptr() == model->transformer->wte->weight.data_ptr());
  // F32 weights view the memory-mapped file rather than a copy.
  baukit::io::SafetensorsFile file(kFixtures / "gpt2-tiny" / "model.safetensors");
  const auto first = file.tensor(file.entries().front());
  const auto* begin = static_cast<const char*>(first.data_ptr()) - file.entries().front().begin;
  const auto* param = static_cast<const char*>(
      model->transformer->h[0]->as<baukit::models::GPT2Block::Impl>()->attn->c_attn->weight.data_ptr());
  CHECK(std::abs(param - begin) <
        static_cast<std::ptrdiff_t>(fs::file_size(kFixtures / "gpt2-tiny" / "model.safetensors")) + (1 << 30));
}

TEST_CASE("Generation: the cache matches full recomputation, and left-padded batches match single prompts",
          "[gpt2][generate]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny", baukit_tests::test_device());
  const auto reference = read_json(kFixtures.parent_path() / "hf-reference" / "gpt2-tiny.json");
  std::vector<std::vector<int64_t>> prompts, expected;
  for (const auto& prompt : reference["prompts"]) {
    prompts.push_back(prompt["ids"].get<std::vector<int64_t>>());
    expected.push_back(prompt["generated"].get<std::vector<int64_t>>());
  }
  CHECK(baukit::generate_ids(*model, prompts, 10) == expected);
  CHECK(baukit::generate_ids(*model, prompts, 10, baukit::GenerateOptions().use_cache(false)) == expected);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  CHECK(baukit::generate(*model, tokenizer, tokenizer.decode(prompts[0]), 10) == tokenizer.decode(expected[0]));
  CHECK_THROWS_WITH(baukit::generate_ids(*model, {prompts[0]}, 100), Catch::Contains("positions"));
}

TEST_CASE("A checkpoint saved by save_pretrained loads back identically, in F32 and F16", "[gpt2][io]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const auto dir = scratch("roundtrip");
  model->save_pretrained(dir / "f32");
  model->save_pretrained(dir / "f16", torch::kFloat16);
  auto again = baukit::models::GPT2LMHeadModel::from_pretrained(dir / "f32");
  auto half = baukit::models::GPT2LMHeadModel::from_pretrained(dir / "f16");
  const auto ids = ids_tensor({464, 2068, 7586});
  const auto logits = model->forward(ids, {}, nullptr);
  CHECK(torch::equal(again->forward(ids, {}, nullptr), logits));
  CHECK((half->forward(ids, {}, nullptr) - logits).abs().max().item<double>() < 0.05);
  CHECK(half->transformer->wte->weight.scalar_type() == torch::kFloat32);
}

TEST_CASE("Sharded safetensors checkpoints load through their index", "[gpt2][io]") {
  const auto dir = scratch("sharded");
  fs::copy_file(kFixtures / "gpt2-tiny" / "config.json", dir / "config.json");
  baukit::io::SafetensorsFile whole(kFixtures / "gpt2-tiny" / "model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> first, second;
  nlohmann::json index;
  for (const auto& entry : whole.entries()) {
    const bool in_first = entry.name.find("h.1.") == std::string::npos && entry.name.find("h.2.") == std::string::npos;
    (in_first ? first : second).emplace_back(entry.name, whole.tensor(entry));
    index["weight_map"][entry.name] =
        in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  baukit::io::save_safetensors(dir / "model-00001-of-00002.safetensors", first);
  baukit::io::save_safetensors(dir / "model-00002-of-00002.safetensors", second);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  auto sharded = baukit::models::GPT2LMHeadModel::from_pretrained(dir);
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = ids_tensor({15496, 995});
  CHECK(torch::equal(sharded->forward(ids, {}, nullptr), model->forward(ids, {}, nullptr)));
}

TEST_CASE("GPT-J matches the fixture's reference: hidden states, lens top-5, greedy tokens, F16 weights stay F16",
          "[gptj][parity]") {
  const auto dir = kFixtures / "gptj-tiny-f16-bin";
  auto loaded = baukit::models::from_pretrained(dir, baukit_tests::test_device());
  REQUIRE(loaded->model_type() == "gptj");
  auto& model = dynamic_cast<baukit::models::GPTJForCausalLMImpl&>(*loaded);
  CHECK(model.lm_head->weight.scalar_type() == torch::kFloat16);
  CHECK(model.transformer->ln_f->weight.scalar_type() == torch::kFloat32);
  CHECK(model.lm_head->bias.defined());
  for (const char* name :
       {"transformer.wte", "transformer.drop", "transformer.h.1", "transformer.h.1.ln_1", "transformer.h.1.attn",
        "transformer.h.1.attn.q_proj", "transformer.h.1.attn.k_proj", "transformer.h.1.attn.v_proj",
        "transformer.h.1.attn.out_proj", "transformer.h.1.mlp", "transformer.h.1.mlp.fc_in", "transformer.h.1.mlp.act",
        "transformer.h.1.mlp.fc_out", "transformer.ln_f", "lm_head"}) {
    INFO(name);
    CHECK_NOTHROW(baukit::Trace(model, name));
  }
  check_parity(model, read_json(dir / "reference.json"), reference_tensors(dir / "reference.safetensors"),
               "gptj-tiny-f16-bin");
  // Left-padded batches give each prompt its own tokens.
  const auto prompts = read_json(kFixtures / "prompts.json");
  std::vector<std::vector<int64_t>> batch, one_by_one;
  for (const auto& p : prompts) {
    batch.push_back(p["ids"].get<std::vector<int64_t>>());
    one_by_one.push_back(baukit::generate_ids(model, {batch.back()}, 10).front());
  }
  CHECK(baukit::generate_ids(model, batch, 10) == one_by_one);
}

TEST_CASE("from_pretrained fails by name on an unknown family", "[models][errors]") {
  const auto dir = scratch("unknown-family");
  std::ofstream(dir / "config.json") << R"({"model_type": "mamba"})";
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir),
                    Catch::Contains("'mamba'") && Catch::Contains("gemma2, gemma3_text, gpt2, gpt_neox, gptj, llama, mistral, qwen2, qwen3"));
  std::ofstream(dir / "config.json") << R"({"n_layer": 2})";
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir), Catch::Contains("model_type"));
}

TEST_CASE("Sharded pytorch_model.bin checkpoints load through their index", "[gptj][io]") {
  const auto dir = scratch("sharded-bin");
  const auto fixture = kFixtures / "gptj-tiny-f16-bin";
  for (const char* file : {"config.json", "added_tokens.json"}) fs::copy_file(fixture / file, dir / file);
  fs::copy_file(fixture / "pytorch_model.bin", dir / "pytorch_model-00001-of-00001.bin");
  nlohmann::json index;
  for (const auto& [name, tensor] : baukit::io::load_torch_bin(fixture / "pytorch_model.bin"))
    index["weight_map"][name] = "pytorch_model-00001-of-00001.bin";
  std::ofstream(dir / "pytorch_model.bin.index.json") << index.dump();
  auto sharded = baukit::models::from_pretrained(dir);
  auto whole = baukit::models::from_pretrained(fixture);
  const auto ids = ids_tensor({15496, 11, 616});
  CHECK(torch::equal(sharded->forward(ids, {}, nullptr), whole->forward(ids, {}, nullptr)));
  index["weight_map"]["transformer.h.9.surprise"] = "../escape.bin";
  std::ofstream(dir / "pytorch_model.bin.index.json") << index.dump();
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir), Catch::Contains("not a file in the checkpoint's folder"));
}

TEST_CASE("The skinny products equal BLAS for 1 to 16 rows, and decline what they do not handle", "[kernels]") {
  namespace kernels = baukit::kernels;
  torch::NoGradGuard no_grad;
  // Conv1D's layout [in, out] with 112 = 7 x 16 columns, and Linear's [out, in] with 101 features: both end in a
  // partial tile.
  const auto in_out = torch::randn({208, 112}), in_out_bias = torch::randn({112});
  const auto out_in = torch::randn({101, 208}), out_in_bias = torch::randn({101});
  for (int64_t rows = 1; rows <= kernels::kSkinnyMaxRows; ++rows) {
    CAPTURE(rows);
    const auto x = torch::randn({rows, 208});
    const auto conv = kernels::skinny_addmm(in_out_bias, x, in_out);
    const auto linear = kernels::skinny_linear(x, out_in, out_in_bias);
    REQUIRE(conv.has_value() == kernels::skinny_matmul_available());
    REQUIRE(linear.has_value() == kernels::skinny_matmul_available());
    if (!conv) continue;  // no AVX2/FMA here: declining every product (checked above) is the whole contract
    CHECK(torch::allclose(*conv, torch::addmm(in_out_bias, x, in_out), 1e-4, 1e-4));
    CHECK(torch::allclose(*kernels::skinny_addmm({}, x, in_out), torch::mm(x, in_out), 1e-4, 1e-4));
    CHECK(torch::allclose(*linear, torch::linear(x, out_in, out_in_bias), 1e-4, 1e-4));
    CHECK(torch::allclose(*kernels::skinny_linear(x, out_in, {}), torch::mm(x, out_in.t()), 1e-4, 1e-4));
#ifdef BAUKIT_SKINNY_MATMUL_X86
    // Each instruction set the CPU has, not only the one chosen, on 13 vectors of columns (a half tile at the end).
    const auto check = [&](auto in_out_columns, auto out_in_columns, int64_t width, const char* isa) {
      CAPTURE(isa);
      const int64_t n = 13 * width;
      const auto narrow = torch::randn({208, n});
      auto y = torch::empty({rows, n});
      in_out_columns(x.data_ptr<float>(), narrow.data_ptr<float>(), y.data_ptr<float>(), rows, 208, n, 0, n);
      CHECK(torch::allclose(y, torch::mm(x, narrow), 1e-4, 1e-4));
      auto z = torch::empty({rows, 101});
      out_in_columns(x.data_ptr<float>(), out_in.data_ptr<float>(), z.data_ptr<float>(), rows, 208, 101, 0, 101);
      CHECK(torch::allclose(z, torch::mm(x, out_in.t()), 1e-4, 1e-4));
    };
    // The out_in kernels on BF16 and F16 weights, widened as they are read.
    const auto check_half = [&](auto bf16_columns, auto f16_columns, const char* isa) {
      CAPTURE(isa);
      const auto bf16 = out_in.to(torch::kBFloat16), f16 = out_in.to(torch::kHalf);
      auto z = torch::empty({rows, 101});
      bf16_columns(x.data_ptr<float>(), bf16.data_ptr<c10::BFloat16>(), z.data_ptr<float>(), rows, 208, 101, 0, 101);
      CHECK(torch::allclose(z, torch::mm(x, bf16.to(torch::kFloat32).t()), 1e-4, 1e-4));
      f16_columns(x.data_ptr<float>(), f16.data_ptr<c10::Half>(), z.data_ptr<float>(), rows, 208, 101, 0, 101);
      CHECK(torch::allclose(z, torch::mm(x, f16.to(torch::kFloat32).t()), 1e-4, 1e-4));
    };
    namespace isa = baukit::kernels::detail;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      check(isa::avx2::in_out_columns, isa::avx2::out_in_columns<float>, isa::avx2::Vec::kWidth, "avx2");
      check_half(isa::avx2::out_in_columns<c10::BFloat16>, isa::avx2::out_in_columns<c10::Half>, "avx2");
    }
    if (__builtin_cpu_supports("avx512f")) {
      check(isa::avx512::in_out_columns, isa::avx512::out_in_columns<float>, isa::avx512::Vec::kWidth, "avx512");
      check_half(isa::avx512::out_in_columns<c10::BFloat16>, isa::avx512::out_in_columns<c10::Half>, "avx512");
    }
#endif
    // Through skinny_linear: BF16 and F16 weights and biases as checkpoints store them, never upcast whole.
    for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
      const auto w = out_in.to(dtype), b = out_in_bias.to(dtype);
      const auto half = kernels::skinny_linear(x, w, b);
      REQUIRE(half.has_value() == kernels::skinny_matmul_available());
      if (half) CHECK(torch::allclose(*half, torch::linear(x, w.to(torch::kFloat32), b.to(torch::kFloat32)), 1e-4, 1e-4));
      CHECK(torch::allclose(kernels::linear(x, w, b, kernels::WeightLayout::out_in),
                            torch::linear(x, w.to(torch::kFloat32), b.to(torch::kFloat32)), 1e-4, 1e-4));
    }
  }
  if (kernels::skinny_matmul_available()) {
    const auto strided_x = torch::randn({208, 4}).t();  // not contiguous: copied first
    CHECK(torch::allclose(*kernels::skinny_addmm(in_out_bias, strided_x, in_out),
                          torch::addmm(in_out_bias, strided_x, in_out), 1e-4, 1e-4));
    CHECK(
        torch::allclose(*kernels::skinny_linear(strided_x, out_in, {}), torch::mm(strided_x, out_in.t()), 1e-4, 1e-4));
  }
  CHECK_FALSE(kernels::skinny_addmm(in_out_bias, torch::randn({17, 208}), in_out));  // too many rows: BLAS
  CHECK_FALSE(kernels::skinny_linear(torch::randn({17, 208}), out_in, {}));
  CHECK_FALSE(kernels::skinny_addmm({}, torch::randn({2, 208}), torch::randn({208, 40})));      // 40 % 16 != 0
  CHECK_FALSE(kernels::skinny_linear(torch::randn({2, 40}), torch::randn({8, 40}), {}));        // 40 % 16 != 0
  CHECK_FALSE(kernels::skinny_addmm({}, torch::randn({2, 208}), torch::randn({96, 208}).t()));  // strided
  CHECK_FALSE(kernels::skinny_linear(torch::randn({2, 208}), torch::randn({208, 96}).t(), {}));
  CHECK_FALSE(kernels::skinny_addmm({}, torch::randn({2, 208}, torch::kFloat64), in_out.to(torch::kFloat64)));
  CHECK_FALSE(kernels::skinny_addmm({}, torch::randn({2, 208}), in_out.to(torch::kBFloat16)));  // Conv1D: float only
  CHECK_FALSE(kernels::skinny_linear(torch::randn({2, 208}).to(torch::kBFloat16), out_in.to(torch::kBFloat16), {}));
  CHECK_FALSE(kernels::skinny_linear(torch::randn({2, 208}), out_in.to(torch::kFloat64), {}));  // not float/half
  {
    torch::AutoGradMode grad(true);
    CHECK_FALSE(kernels::skinny_addmm({}, torch::randn({2, 208}, torch::requires_grad()), in_out));
    CHECK_FALSE(kernels::skinny_linear(torch::randn({2, 208}, torch::requires_grad()), out_in, {}));
  }
}

TEST_CASE("Many rows times a large F16/BF16 weight: widened block by block, the same product as the upcast weight's",
          "[kernels]") {
  torch::manual_seed(3);
  // 70,000 x 256 output features x inputs: 71.7 MB as float32, more than one widened block (64 MiB).
  const auto weight32 = torch::randn({70000, 256}) * 0.05, bias32 = torch::randn({70000});
  const auto x = torch::randn({40, 256});
  for (const auto type : {torch::kBFloat16, torch::kHalf}) {
    INFO(type);
    const auto weight = weight32.to(type), bias = bias32.to(type);
    const auto expected = torch::linear(x, weight.to(torch::kFloat32), bias.to(torch::kFloat32));
    const auto got = baukit::kernels::linear(x, weight, bias, baukit::kernels::WeightLayout::out_in);
    CHECK(got.scalar_type() == torch::kFloat32);
    CHECK((got - expected).abs().max().item<double>() < 1e-4);
    const auto no_bias = baukit::kernels::linear(x.view({4, 10, 256}), weight, {}, baukit::kernels::WeightLayout::out_in);
    CHECK(no_bias.sizes() == torch::IntArrayRef({4, 10, 70000}));
    CHECK((no_bias.view({40, 70000}) - torch::linear(x, weight.to(torch::kFloat32))).abs().max().item<double>() < 1e-4);
  }
}

TEST_CASE("The oneDNN product equals BLAS for many rows, and declines what it does not handle", "[kernels]") {
  namespace kernels = baukit::kernels;
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({40, 208}), weight = torch::randn({101, 208}), bias = torch::randn({101});
  const auto product = kernels::onednn_linear(x, weight, bias);
  REQUIRE(product.has_value() == at::hasMKLDNN());
  if (!product) return;  // libtorch without oneDNN: declining (checked above) is the whole contract
  CHECK(torch::allclose(*product, torch::linear(x, weight, bias), 1e-4, 1e-4));
  CHECK(torch::allclose(*kernels::onednn_linear(x, weight, {}), torch::mm(x, weight.t()), 1e-4, 1e-4));
  const auto strided_x = torch::randn({208, 40}).t();
  CHECK(torch::allclose(*kernels::onednn_linear(strided_x, weight, {}), torch::mm(strided_x, weight.t()), 1e-4, 1e-4));
  CHECK_FALSE(kernels::onednn_linear(x.to(torch::kFloat64), weight.to(torch::kFloat64), {}));
  CHECK_FALSE(kernels::onednn_linear(x, torch::randn({101, 200}), {}));  // inner sizes differ
  torch::AutoGradMode grad(true);
  CHECK_FALSE(kernels::onednn_linear(x, weight.clone().requires_grad_(), {}));
}

TEST_CASE("OpenBLAS on generic kernels is switched to the CPU's, with the same products, otherwise nothing changes",
          "[kernels][blas]") {
  namespace kernels = baukit::kernels;
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({64, 256}), weight = torch::randn({300, 256});
  const auto before = torch::mm(x, weight.t());
  const bool switchable = kernels::blas_runs_generic_kernels() && !std::getenv("OPENBLAS_CORETYPE") &&
                          dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init") && __builtin_cpu_supports("avx2");
  const auto chosen = kernels::use_openblas_kernels_for_this_cpu();
  INFO("OpenBLAS core now: '" << kernels::detail::openblas_core_name() << "'");
  if (switchable) {
    CHECK((chosen == "SkylakeX" || chosen == "Haswell"));
    CHECK(kernels::detail::openblas_core_name() == chosen);
    CHECK_FALSE(kernels::blas_runs_generic_kernels());
  } else {
    CHECK(chosen.empty());
  }
  CHECK((std::getenv("OPENBLAS_CORETYPE") == nullptr || !switchable));  // the variable is not left set
  CHECK(torch::allclose(torch::mm(x, weight.t()), before, 1e-5, 1e-4));
  CHECK(kernels::use_openblas_kernels_for_this_cpu().empty());  // a second call changes nothing
}

TEST_CASE("Conv1D and Linear refuse an input of the wrong width", "[kernels][errors]") {
  torch::NoGradGuard no_grad;
  baukit::models::Conv1D conv(8, 16);
  baukit::models::Linear linear(8, 16);
  conv->weight.normal_();
  conv->bias.zero_();
  linear->weight.normal_();
  CHECK_THROWS_WITH(conv->forward(torch::randn({2, 4, 7})), Catch::Contains("last dimension 7, expected 8"));
  CHECK_THROWS(linear->forward(torch::randn({2, 4, 7})));
  CHECK_THROWS(linear->forward(torch::randn({2, 4, 16})));  // 2 x 4 x 16 = 16 rows of 8: must not be reshaped
  CHECK(conv->forward(torch::randn({2, 4, 8})).sizes() == torch::IntArrayRef({2, 4, 16}));
  CHECK(linear->forward(torch::randn({2, 4, 8})).sizes() == torch::IntArrayRef({2, 4, 16}));
}

TEST_CASE("Token ids outside the model's vocabulary, and empty ids, are refused by name", "[gpt2][errors][hostile]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const int64_t vocab = model->config.vocab_size;
  CHECK_THROWS_WITH(model->forward(torch::tensor({int64_t{1}, vocab}, torch::kLong).unsqueeze(0), {}, nullptr),
                    Catch::Contains(fmt::format("input id {} (batch row 0, position 1)", vocab)) &&
                        Catch::Contains(fmt::format("vocabulary of {}", vocab)));
  CHECK_THROWS_WITH(model->forward(torch::tensor({int64_t{-1}}, torch::kLong).unsqueeze(0), {}, nullptr),
                    Catch::Contains("input id -1"));
  CHECK_THROWS_WITH(model->forward(torch::empty({1, 0}, torch::kLong), {}, nullptr),
                    Catch::Contains("GPT-2: forward needs at least one token"));
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = tokenizer.encode("Hello world<|endoftext|>", /*allow_special=*/true);
  CHECK_NOTHROW(tokenizer.check_ids_fit(ids, vocab));
  CHECK_THROWS_WITH(
      tokenizer.check_ids_fit(ids, 50000),
      Catch::Contains("vocab.json: token '<|endoftext|>' has the id 50256") && Catch::Contains("vocab_size of 50000"));
  CHECK_THROWS_WITH(tokenizer.check_ids_fit(ids, 1000), Catch::Contains("token 'Hello' has the id 15496"));
}

// --- The Llama architecture: llama (2-style and 3 with llama3 rope scaling), mistral, qwen2, qwen3 ---------------

namespace {

const fs::path kLlamaData = kData / "llama";
const fs::path kLlamaFixtures = fs::path(BAUKIT_BINARY_DIR) / "llama-fixtures";  // written by llama_fixtures_setup

fs::path llama_fixture(const std::string& name) {
  const auto dir = kLlamaFixtures / name;
  INFO("the ctest fixture llama_fixtures_setup writes " << dir);
  REQUIRE(fs::exists(dir / "config.json"));
  return dir;
}

std::vector<std::string> llama_fixture_names() {
  const auto spec = read_json(kLlamaData / "fixtures.json");  // not a temporary: the loop reads into it
  std::vector<std::string> names;
  for (const auto& f : spec["fixtures"]) names.push_back(f["name"]);
  REQUIRE(names.size() == 5);
  return names;
}

}  // namespace

TEST_CASE("Llama-architecture fixtures match the Hugging Face-semantics reference: hidden states, lens, greedy tokens",
          "[llama][parity]") {
  const auto prompts = read_json(kLlamaData / "prompts.json");
  for (const auto& name : llama_fixture_names()) {
    INFO(name);
    const auto dir = llama_fixture(name);
    auto loaded = baukit::models::from_pretrained(dir, baukit_tests::test_device());
    auto& model = dynamic_cast<baukit::models::LlamaForCausalLMImpl&>(*loaded);
    const auto config = read_json(dir / "config.json");
    CHECK(model.model_type() == config["model_type"]);
    // BF16 weights stay BF16 (upcast per layer at use); norms are float32; tied embeddings are one tensor.
    const auto stored = config["torch_dtype"] == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
    CHECK(model.model->embed_tokens->weight.scalar_type() == stored);
    CHECK(model.model->norm->weight.scalar_type() == torch::kFloat32);
    CHECK((model.lm_head->weight.data_ptr() == model.model->embed_tokens->weight.data_ptr()) ==
          config["tie_word_embeddings"].get<bool>());
    // baukit's tokenizer gives Hugging Face's ids (BOS as the tokenizer's config says).
    const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
    for (const auto& prompt : prompts[name])
      CHECK(tokenizer.encode(prompt["text"].get<std::string>()) == prompt["ids"].get<std::vector<int64_t>>());

    const auto reference = read_json(kLlamaData / (name + ".json"));
    check_parity(model, reference, reference_tensors(kLlamaData / (name + ".safetensors")), name);
    // A left-padded batch (one forward per step) gives each prompt its own tokens.
    std::vector<std::vector<int64_t>> batch;
    for (const auto& prompt : reference["prompts"]) batch.push_back(prompt["ids"].get<std::vector<int64_t>>());
    const auto expected = reference["batch_generated"].get<std::vector<std::vector<int64_t>>>();
    CHECK(baukit::generate_ids(model, batch, 10) == expected);
    CHECK(baukit::generate_ids(model, batch, 10, baukit::GenerateOptions().use_cache(false)) == expected);
  }
}

TEST_CASE("Every Llama-architecture submodule has Hugging Face's name and is traceable", "[llama]") {
  auto qwen3 = baukit::models::LlamaForCausalLM::from_pretrained(llama_fixture("qwen3-tiny"));
  for (const char* name :
       {"model.embed_tokens", "model.layers.1", "model.layers.1.input_layernorm", "model.layers.1.self_attn",
        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj",
        "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_norm", "model.layers.1.self_attn.k_norm",
        "model.layers.1.post_attention_layernorm", "model.layers.1.mlp", "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj", "model.layers.1.mlp.act_fn", "model.norm",
        "lm_head"}) {
    INFO(name);
    CHECK_NOTHROW(baukit::Trace(*qwen3, name));
  }
  // The lens's point after attention: the layer's input plus self_attn's output, before the MLP.
  const auto ids = torch::tensor({{151643, 785, 3974}}, torch::kLong);
  baukit::TraceDict tr(*qwen3, {"model.embed_tokens", "model.layers.0.self_attn", "model.layers.0.mlp",
                                "model.layers.0"});
  (void)qwen3->forward(ids, {}, nullptr);
  const auto after_attention = tr["model.embed_tokens"].output().to(torch::kFloat32) + tr["model.layers.0.self_attn"].output();
  CHECK(torch::allclose(after_attention + tr["model.layers.0.mlp"].output(), tr["model.layers.0"].output()));
  // Qwen 2 has q/k/v biases and no o bias; Llama 2-style has none; Qwen 3 has q/k norms, the others not.
  auto qwen2 = baukit::models::LlamaForCausalLM::from_pretrained(llama_fixture("qwen2-tiny-bf16"));
  const auto& attn2 = qwen2->model->layers[0]->as<baukit::models::LlamaDecoderLayer::Impl>()->self_attn;
  CHECK((attn2->q_proj->bias.defined() && attn2->v_proj->bias.defined() && !attn2->o_proj->bias.defined()));
  CHECK(!attn2->q_norm);
  auto llama2 = baukit::models::LlamaForCausalLM::from_pretrained(llama_fixture("llama2-tiny"));
  CHECK(!llama2->model->layers[0]->as<baukit::models::LlamaDecoderLayer::Impl>()->self_attn->q_proj->bias.defined());
}

TEST_CASE("Rotary frequencies equal Hugging Face's for every rope_scaling type", "[llama][rope]") {
  const auto cases = read_json(kLlamaData / "rope.json");
  for (const auto& [name, spec] : cases.items()) {
    INFO(name);
    const baukit::models::ConfigFile file{spec["config"], "rope.json"};
    const auto& c = spec["config"];
    const int64_t head = c["hidden_size"].get<int64_t>() / c["num_attention_heads"].get<int64_t>();
    const auto rotary_dim = static_cast<int64_t>(static_cast<double>(head) * c.value("partial_rotary_factor", 1.0));
    const int64_t max_positions = c["max_position_embeddings"];
    const baukit::models::RotaryEmbedding rotary(baukit::models::RotaryOptions(head)
                                                     .rotary_dim(rotary_dim)
                                                     .base(c["rope_theta"])
                                                     .scaling(baukit::models::RopeScaling::read(file, max_positions))
                                                     .max_position_embeddings(max_positions));
    const auto expected = torch::tensor(spec["inv_freq"].get<std::vector<double>>(), torch::kFloat32);
    const auto got = rotary.inv_freq(spec["seq_len"].is_null() ? 0 : spec["seq_len"].get<int64_t>());
    REQUIRE(got.sizes() == expected.sizes());
    CHECK(((got - expected).abs() / expected).max().item<double>() < 1e-6);
    CHECK(rotary.attention_factor() == Approx(spec["attention_factor"].get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("Llama-architecture configs: unsupported or inconsistent settings fail by name when read",
          "[llama][errors]") {
  const auto source = llama_fixture("llama3-tiny-bf16");
  const auto base = read_json(source / "config.json");
  const auto dir = scratch("llama-config");
  for (const auto& entry : fs::directory_iterator(source))
    if (entry.path().filename() != "config.json") fs::copy_file(entry.path(), dir / entry.path().filename());
  auto fails = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& message) {
    auto config = base;
    edit(config);
    std::ofstream(dir / "config.json") << config.dump();
    INFO(config.dump());
    CHECK_THROWS_WITH(baukit::models::from_pretrained(dir), Catch::Contains(message));
  };
  fails([](auto& c) { c["rope_scaling"] = {{"rope_type", "longrope"}}; },
        "'rope_scaling.rope_type' \"longrope\" is not supported");
  fails([](auto& c) { c["rope_scaling"] = {{"rope_type", "linear"}}; }, "'rope_scaling.factor' is required");
  fails([](auto& c) { c["rope_scaling"] = "yes"; }, "'rope_scaling' must be an object or null");
  fails([](auto& c) { c["hidden_act"] = "gelu_quick"; }, "'hidden_act' 'gelu_quick' is not supported");
  fails([](auto& c) { c["num_key_value_heads"] = 3; }, "'num_key_value_heads' 3 does not divide");
  fails([](auto& c) { c["partial_rotary_factor"] = 0.1; }, "'partial_rotary_factor'");
  fails([](auto& c) { c["layer_types"] = {"full_attention"}; }, "'layer_types' must list 3 layers");
  fails([](auto& c) { c["head_dim"] = 4; }, "model.layers.0.self_attn.q_proj.weight");
  fails([](auto& c) { c["num_hidden_layers"] = 5; }, "'num_hidden_layers' is 5, but the checkpoint holds 3");
  fails([](auto& c) { c["vocab_size"] = -1; }, "'vocab_size' must be positive");
  fails([](auto& c) { c["model_type"] = "mistral", c["layer_types"] = {"sliding_attention", "full_attention", "full_attention"}, c["sliding_window"] = nullptr; },
        "'sliding_window' is null, but layer_types has sliding_attention layers");
  // The model refuses ids beyond its vocabulary and an empty prompt by name.
  std::ofstream(dir / "config.json") << base.dump();
  auto model = baukit::models::from_pretrained(dir);
  CHECK_THROWS_WITH(model->forward(torch::tensor({{1, 200000}}, torch::kLong), {}, nullptr),
                    Catch::Contains("input id 200000") && Catch::Contains("llama"));
  CHECK_THROWS_WITH(model->forward(torch::zeros({1, 0}, torch::kLong), {}, nullptr),
                    Catch::Contains("at least one token"));
}

TEST_CASE("A family registered outside the library loads through from_pretrained, registering twice is refused",
          "[models][registry]") {
  // A researcher's family: here a renamed Llama, registered as a program would at namespace scope.
  static const bool registered = baukit::models::register_family(
      "my_llama", [](const baukit::models::ConfigFile& config, const baukit::models::PretrainedOptions& options) {
        auto as_llama = config;  // the parsed config.json, read once by from_pretrained
        as_llama.json["model_type"] = "llama";
        return std::shared_ptr<baukit::models::CausalLM>(
            baukit::models::LlamaForCausalLMImpl::from_config(as_llama, options));
      });
  CHECK(registered);
  const auto families = baukit::models::family_names();
  CHECK(std::find(families.begin(), families.end(), "my_llama") != families.end());
  const auto dir = scratch("my-llama");
  const auto source = llama_fixture("llama2-tiny");
  for (const auto& entry : fs::directory_iterator(source)) fs::copy_file(entry.path(), dir / entry.path().filename());
  auto config = read_json(source / "config.json");
  config["model_type"] = "my_llama";
  std::ofstream(dir / "config.json") << config.dump();
  auto mine = baukit::models::from_pretrained(dir);
  auto theirs = baukit::models::from_pretrained(source);
  const auto ids = torch::tensor({{1, 415, 2936}}, torch::kLong);
  CHECK(torch::equal(mine->forward(ids, {}, nullptr), theirs->forward(ids, {}, nullptr)));
  CHECK_THROWS_WITH(baukit::models::register_family("llama", [](const baukit::models::ConfigFile&, const baukit::models::PretrainedOptions&) {
                      return std::shared_ptr<baukit::models::CausalLM>();
                    }),
                    Catch::Contains("'llama' is already registered"));
  // PretrainedOptions: weights converted to float32 at load give the same logits as BF16 upcast per layer.
  const auto bf16 = llama_fixture("llama3-tiny-bf16");
  auto as_stored = baukit::models::from_pretrained(bf16);
  auto as_f32 = baukit::models::from_pretrained(bf16, baukit::models::PretrainedOptions().weight_dtype(torch::kFloat32));
  CHECK(dynamic_cast<baukit::models::LlamaForCausalLMImpl&>(*as_f32).lm_head->weight.scalar_type() == torch::kFloat32);
  const auto ids3 = torch::tensor({{128000, 791, 4062}}, torch::kLong);
  CHECK(torch::allclose(as_stored->forward(ids3, {}, nullptr), as_f32->forward(ids3, {}, nullptr), 1e-5, 1e-5));
  CHECK_THROWS_WITH(baukit::models::from_pretrained(kFixtures / "gpt2-tiny",
                                                    baukit::models::PretrainedOptions().weight_dtype(torch::kBFloat16)),
                    Catch::Contains("weight_dtype bfloat16 is not supported"));
  CHECK_NOTHROW(baukit::models::from_pretrained(kFixtures / "gpt2-tiny",
                                                baukit::models::PretrainedOptions().weight_dtype(torch::kFloat32)));
}

TEST_CASE("A Llama-architecture model saved by save_pretrained loads back identically, sharded or not", "[llama][io]") {
  auto model = baukit::models::LlamaForCausalLM::from_pretrained(llama_fixture("qwen3-tiny"));
  const auto dir = scratch("llama-roundtrip");
  model->save_pretrained(dir);
  baukit::models::save_checkpoint(*model, model->config.to_json(), dir / "sharded", torch::kFloat32,
                                  {"lm_head.weight"}, 3);
  CHECK(fs::exists(dir / "sharded" / "model-00003-of-00003.safetensors"));
  CHECK(read_json(dir / "config.json") == read_json(llama_fixture("qwen3-tiny") / "config.json"));
  const auto ids = torch::tensor({{151643, 785, 3974, 13876}}, torch::kLong);
  const auto logits = model->forward(ids, {}, nullptr);
  CHECK(torch::equal(baukit::models::from_pretrained(dir)->forward(ids, {}, nullptr), logits));
  CHECK(torch::equal(baukit::models::from_pretrained(dir / "sharded")->forward(ids, {}, nullptr), logits));
}

// --- Gemma 2 and 3, GPT-NeoX (Pythia): tests/data/families ------------------------------------------------------

namespace {

const fs::path kFamiliesData = kData / "families";
const fs::path kFamiliesFixtures = fs::path(BAUKIT_BINARY_DIR) / "families-fixtures";  // families_fixtures_setup

fs::path family_fixture(const std::string& name) {
  const auto dir = kFamiliesFixtures / name;
  INFO("the ctest fixture families_fixtures_setup writes " << dir);
  REQUIRE(fs::exists(dir / "config.json"));
  return dir;
}

// Runs `check(x, mask)` with the stream entering block `block` of `model` and its output, read by a trace.
torch::Tensor traced_output(baukit::models::CausalLM& model, const std::string& name, const torch::Tensor& ids) {
  baukit::Trace tr(model.module(), name);
  (void)model.forward(ids, {}, nullptr);
  return tr.output().to(torch::kFloat32);
}

}  // namespace

TEST_CASE("Gemma 2, Gemma 3 and GPT-NeoX fixtures match the Hugging Face-semantics reference: hidden states, lens, "
          "greedy tokens with and without the cache, batches",
          "[gemma][neox][parity]") {
  const auto prompts = read_json(kFamiliesData / "prompts.json");
  const auto spec = read_json(kFamiliesData / "fixtures.json");
  REQUIRE(spec["fixtures"].size() == 8);
  for (const auto& fixture : spec["fixtures"]) {
    const auto name = fixture["name"].get<std::string>();
    INFO(name);
    const auto dir = family_fixture(name);
    auto model = baukit::models::from_pretrained(dir, baukit_tests::test_device());
    const auto config = read_json(dir / "config.json");
    CHECK(model->model_type() == config["model_type"]);
    // Half-precision weights stay as stored (upcast per layer at use).
    const auto stored = config["torch_dtype"] == "bfloat16" ? torch::kBFloat16
                        : config["torch_dtype"] == "float16" ? torch::kFloat16
                                                             : torch::kFloat32;
    const auto embedding = model->lens_layout().embedding == "model.embed_tokens" ? "model.embed_tokens.weight"
                                                                                  : "gpt_neox.embed_in.weight";
    CHECK(model->module().named_parameters()[embedding].scalar_type() == stored);
    if (auto* gemma = dynamic_cast<baukit::models::GemmaForCausalLMImpl*>(model.get()))
      // sqrt(24) = 4.8990 rounded to the checkpoint's dtype: BF16 has 4.90625 there (a difference the hidden states
      // below would show at 1e-2).
      CHECK(gemma->model->embed_tokens->scale() ==
            (stored == torch::kBFloat16 ? 4.90625 : static_cast<double>(static_cast<float>(std::sqrt(24.0)))));
    // baukit's tokenizer gives Hugging Face's ids (Gemma's BOS; the NeoX-style file adds none).
    const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
    for (const auto& prompt : prompts[name])
      CHECK(tokenizer.encode(prompt["text"].get<std::string>()) == prompt["ids"].get<std::vector<int64_t>>());

    const auto reference = read_json(kFamiliesData / (name + ".json"));
    check_parity(*model, reference, reference_tensors(kFamiliesData / (name + ".safetensors")), name);
    std::vector<std::vector<int64_t>> batch;
    for (const auto& prompt : reference["prompts"]) {
      batch.push_back(prompt["ids"].get<std::vector<int64_t>>());
      // 10 greedy tokens, with the cache and by recomputation.
      const auto generated = prompt["generated"].get<std::vector<int64_t>>();
      CHECK(baukit::generate_ids(*model, {batch.back()}, 10)[0] == generated);
      CHECK(baukit::generate_ids(*model, {batch.back()}, 10, baukit::GenerateOptions().use_cache(false))[0] ==
            generated);
    }
    const auto expected = reference["batch_generated"].get<std::vector<std::vector<int64_t>>>();
    CHECK(baukit::generate_ids(*model, batch, 10) == expected);
    CHECK(baukit::generate_ids(*model, batch, 10, baukit::GenerateOptions().use_cache(false)) == expected);
  }
}

TEST_CASE("Gemma 2's final soft cap is part of the lens decoder: without it the lens probabilities are wrong",
          "[gemma][lens]") {
  for (const char* name : {"gemma2-tiny-bf16", "gemma2-tiny"}) {
    INFO(name);
    auto model = baukit::models::from_pretrained(family_fixture(name));
    const auto reference = read_json(kFamiliesData / (std::string(name) + ".json"));
    const auto tensors = reference_tensors(kFamiliesData / (std::string(name) + ".safetensors"));
    auto decoder = baukit::make_decoder(*model);
    REQUIRE(decoder->named_children().contains("logit_transform"));
    // The same stages without the cap: what a lens that stopped at lm_head would show.
    auto uncapped = torch::nn::Sequential();
    uncapped->push_back("ln_f", model->final_norm());
    uncapped->push_back("lm_head", model->unembedding());
    uncapped->push_back(torch::nn::Softmax(-1));
    torch::NoGradGuard no_grad;
    for (std::size_t p = 0; p < reference["prompts"].size(); ++p) {
      const auto hidden = tensors.at(fmt::format("p{}.hidden", p));  // the reference's own states
      const auto& want = reference["prompts"][p]["lens"];
      const auto top = torch::tensor(want["tokens"].get<std::vector<std::vector<std::vector<int64_t>>>>()[0][0]);
      const auto expected = torch::tensor(want["probs"].get<std::vector<std::vector<std::vector<double>>>>()[0][0],
                                          torch::kFloat32);
      const auto state = hidden[0][0];  // layer 0, position 0
      CHECK((decoder->forward(state).index_select(0, top) - expected).abs().max().item<double>() < 1e-5);
      CHECK((uncapped->forward(state).index_select(0, top) - expected).abs().max().item<double>() > 1e-3);
    }
    // The model's logits are capped: none beyond the cap.
    const auto cap = read_json(family_fixture(name) / "config.json")["final_logit_softcapping"].get<double>();
    const auto logits = model->forward(torch::tensor({{2, 818, 3823, 8864}}, torch::kLong), {}, nullptr);
    CHECK(logits.abs().max().item<double>() < cap);
  }
}

TEST_CASE("Every Gemma and GPT-NeoX submodule has Hugging Face's name and is traceable, the lens's points are "
          "where the layout says",
          "[gemma][neox]") {
  const auto ids = torch::tensor({{2, 818, 3823, 8864, 37423}}, torch::kLong);
  {
    auto gemma3 = baukit::models::from_pretrained(family_fixture("gemma3-tiny-sharded"));
    for (const char* name :
         {"model.embed_tokens", "model.layers.1", "model.layers.1.input_layernorm", "model.layers.1.self_attn",
          "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj",
          "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_norm", "model.layers.1.self_attn.k_norm",
          "model.layers.1.post_attention_layernorm", "model.layers.1.pre_feedforward_layernorm", "model.layers.1.mlp",
          "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj",
          "model.layers.1.mlp.act_fn", "model.layers.1.post_feedforward_layernorm", "model.norm", "lm_head"}) {
      INFO(name);
      CHECK_NOTHROW(baukit::Trace(gemma3->module(), name));
    }
    // The stream before layer 0 is the scaled embedding; after attention it is that plus the normed attention.
    baukit::TraceDict tr(gemma3->module(), {"model.embed_tokens", "model.layers.0.post_attention_layernorm",
                                             "model.layers.0.post_feedforward_layernorm", "model.layers.0"});
    (void)gemma3->forward(ids, {}, nullptr);
    auto& impl = dynamic_cast<baukit::models::GemmaForCausalLMImpl&>(*gemma3);
    const auto raw = torch::embedding(impl.model->embed_tokens->weight, ids).to(torch::kFloat32);
    CHECK(torch::allclose(tr["model.embed_tokens"].output(), raw * std::sqrt(24.0)));
    const auto after_attention = tr["model.embed_tokens"].output() + tr["model.layers.0.post_attention_layernorm"].output();
    CHECK(torch::allclose(after_attention + tr["model.layers.0.post_feedforward_layernorm"].output(),
                          tr["model.layers.0"].output(), 1e-5, 1e-5));
    CHECK(gemma3->lens_layout().attention.at(0) == "model.layers.0.post_attention_layernorm");
    // Gemma 3 has q/k norms and no soft caps; sliding and global layers alternate (pattern 2 in the fixture).
    CHECK(gemma3->logit_transform().is_empty());
    CHECK(impl.config.layer_types == std::vector<std::string>{"sliding_attention", "full_attention",
                                                              "sliding_attention", "full_attention"});
    auto gemma2 = baukit::models::GemmaForCausalLM::from_pretrained(family_fixture("gemma2-tiny"));
    CHECK(!gemma2->model->layers[0]->as<baukit::models::GemmaDecoderLayer::Impl>()->self_attn->q_norm);
  }
  const auto neox_ids = torch::tensor({{464, 2068, 7586, 21831}}, torch::kLong);
  for (const char* fixture : {"pythia-tiny", "neox-sequential-tiny"}) {
    INFO(fixture);
    auto neox = baukit::models::from_pretrained(family_fixture(fixture));
    for (const char* name :
         {"gpt_neox.embed_in", "gpt_neox.emb_dropout", "gpt_neox.layers.2", "gpt_neox.layers.2.input_layernorm",
          "gpt_neox.layers.2.post_attention_layernorm", "gpt_neox.layers.2.attention",
          "gpt_neox.layers.2.attention.query_key_value", "gpt_neox.layers.2.attention.dense",
          "gpt_neox.layers.2.post_attention_dropout", "gpt_neox.layers.2.post_mlp_dropout", "gpt_neox.layers.2.mlp",
          "gpt_neox.layers.2.mlp.dense_h_to_4h", "gpt_neox.layers.2.mlp.act", "gpt_neox.layers.2.mlp.dense_4h_to_h",
          "gpt_neox.final_layer_norm", "embed_out"}) {
      INFO(name);
      CHECK_NOTHROW(baukit::Trace(neox->module(), name));
    }
    baukit::TraceDict tr(neox->module(), {"gpt_neox.emb_dropout", "gpt_neox.layers.0.attention",
                                           "gpt_neox.layers.0.mlp", "gpt_neox.layers.0"});
    (void)neox->forward(neox_ids, {}, nullptr);
    // Both residual forms: x + attention + mlp = the block's output.
    CHECK(torch::allclose(tr["gpt_neox.emb_dropout"].output() + tr["gpt_neox.layers.0.attention"].output() +
                              tr["gpt_neox.layers.0.mlp"].output(),
                          tr["gpt_neox.layers.0"].output(), 1e-5, 1e-5));
    const bool parallel = std::string(fixture) == "pythia-tiny";
    // Pythia's parallel blocks have no point after attention alone; sequential ones have it.
    CHECK(neox->lens_layout().attention.empty() == parallel);
  }
  // The sequential MLP reads the stream after attention; the parallel one reads the block's input.
  auto sequential = baukit::models::from_pretrained(family_fixture("neox-sequential-tiny"));
  const auto stream = traced_output(*sequential, "gpt_neox.emb_dropout", neox_ids) +
                      traced_output(*sequential, "gpt_neox.layers.0.attention", neox_ids);
  const auto normed = traced_output(*sequential, "gpt_neox.layers.0.post_attention_layernorm", neox_ids);
  auto& impl = dynamic_cast<baukit::models::GPTNeoXForCausalLMImpl&>(*sequential);
  auto& layer0 = *impl.gpt_neox->layers[0]->as<baukit::models::GPTNeoXLayer::Impl>();
  CHECK(torch::allclose(layer0.post_attention_layernorm->forward(stream), normed, 1e-5, 1e-5));
  CHECK(impl.config.rotary_ndims() == 4);  // rotary_pct 0.5 of heads of 8
}

TEST_CASE("Gemma and GPT-NeoX configs: unsupported or inconsistent settings fail by name when read",
          "[gemma][neox][errors]") {
  auto fails_for = [](const std::string& fixture, const std::function<void(nlohmann::json&)>& edit,
                      const std::string& message) {
    const auto source = family_fixture(fixture);
    const auto dir = scratch("family-config-" + fixture);
    for (const auto& entry : fs::directory_iterator(source))
      if (entry.path().filename() != "config.json")
        fs::copy_file(entry.path(), dir / entry.path().filename(), fs::copy_options::overwrite_existing);
    auto config = read_json(source / "config.json");
    edit(config);
    std::ofstream(dir / "config.json") << config.dump();
    INFO(config.dump());
    CHECK_THROWS_WITH(baukit::models::from_pretrained(dir), Catch::Contains(message));
  };
  fails_for("gemma2-tiny", [](auto& c) { c["final_logit_softcapping"] = -1.0; },
            "'final_logit_softcapping' must be positive");
  fails_for("gemma2-tiny", [](auto& c) { c["hidden_activation"] = "gelu_quick"; },
            "'hidden_activation' 'gelu_quick' is not supported");
  fails_for("gemma2-tiny", [](auto& c) { c["num_key_value_heads"] = 3; }, "'num_key_value_heads' 3 does not divide");
  fails_for("gemma2-tiny", [](auto& c) { c["layer_types"] = {"full_attention"}; }, "'layer_types' must list 3 layers");
  fails_for("gemma3-tiny-sharded", [](auto& c) { c["head_dim"] = 4; }, "model.layers.0.self_attn.q_proj.weight");
  fails_for("gemma3-tiny-sharded", [](auto& c) { c["rope_scaling"] = {{"rope_type", "longrope"}}; },
            "\"longrope\" is not supported");
  fails_for("pythia-tiny", [](auto& c) { c["rotary_pct"] = 0.01; }, "'rotary_pct'");
  fails_for("pythia-tiny", [](auto& c) { c["hidden_size"] = 30; }, "'hidden_size' 30 is not divisible");
  fails_for("pythia-tiny", [](auto& c) { c["num_hidden_layers"] = 5; },
            "'num_hidden_layers' is 5, but the checkpoint holds 3");
  fails_for("pythia-tiny", [](auto& c) { c["model_type"] = "gpt_neo"; }, "'model_type' is 'gpt_neo'");
}

TEST_CASE("Gemma and GPT-NeoX models saved by save_pretrained load back identically", "[gemma][neox][io]") {
  const auto ids = torch::tensor({{2, 818, 3823, 8864}}, torch::kLong);
  {
    auto gemma = baukit::models::GemmaForCausalLM::from_pretrained(family_fixture("gemma3-tiny-sharded"));
    const auto dir = scratch("gemma-roundtrip");
    gemma->save_pretrained(dir);
    CHECK(read_json(dir / "config.json") == read_json(family_fixture("gemma3-tiny-sharded") / "config.json"));
    CHECK(torch::equal(baukit::models::from_pretrained(dir)->forward(ids, {}, nullptr), gemma->forward(ids, {}, nullptr)));
  }
  auto neox = baukit::models::GPTNeoXForCausalLM::from_pretrained(family_fixture("pythia-tiny-f16"));
  const auto dir = scratch("neox-roundtrip");
  neox->save_pretrained(dir);
  CHECK(read_json(dir / "config.json") == read_json(family_fixture("pythia-tiny-f16") / "config.json"));
  CHECK(torch::equal(baukit::models::from_pretrained(dir)->forward(ids, {}, nullptr), neox->forward(ids, {}, nullptr)));
}
