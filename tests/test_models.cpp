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

// Top-k ids equal, allowing swaps of neighbours whose reference probabilities differ by less than 1e-5.
void check_topk(const std::vector<int64_t>& got, const std::vector<int64_t>& expected,
                const std::vector<double>& probs) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    if (got[k] == expected[k]) continue;
    const bool tie = (k + 1 < got.size() && got[k] == expected[k + 1] && std::abs(probs[k] - probs[k + 1]) < 1e-5) ||
                     (k > 0 && got[k] == expected[k - 1] && std::abs(probs[k] - probs[k - 1]) < 1e-5);
    CHECK(tie);
  }
}

std::string safetensors_bytes(const std::string& header, std::size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

CheckpointErrorKind kind_of(const std::function<void()>& load) {
  try {
    load();
  } catch (const CheckpointError& e) {
    return e.kind();
  }
  FAIL("no CheckpointError was thrown");
  return CheckpointErrorKind::io;
}

// Hidden states of every block and of transformer.drop within 1e-4, top-5 lens tokens and final top-5 equal,
// and the 10 greedy tokens equal (with and without the cache), for every prompt of `reference`; on the model's
// device, compared on the CPU.
void check_parity(baukit::models::CausalLM& model, const nlohmann::json& reference,
                  const std::map<std::string, torch::Tensor>& tensors, const std::string& label) {
  const auto layout = model.lens_layout();
  const auto& layers = layout.blocks;
  REQUIRE(static_cast<int64_t>(layers.size()) == model.num_layers());
  REQUIRE(baukit::module_names(model.module(), std::regex(R"(^transformer.h.\d+$)")) == layers);
  REQUIRE(reference["prompts"].size() == 5);
  auto decoder = baukit::make_decoder(model);
  for (std::size_t p = 0; p < reference["prompts"].size(); ++p) {
    INFO(label << ", prompt " << p);
    const auto& prompt = reference["prompts"][p];
    const auto ids = prompt["ids"].get<std::vector<int64_t>>();
    auto names = layers;
    names.insert(names.begin(), "transformer.drop");
    baukit::TraceDict tr(model.module(), names);
    const auto logits = model.forward(ids_tensor(ids).to(model.device()), {}, nullptr).cpu();
    std::vector<torch::Tensor> hidden;
    for (const auto& layer : layers) hidden.push_back(tr[layer].output()[0]);
    const auto hs = torch::stack(hidden).cpu();
    CHECK((hs - tensors.at(fmt::format("p{}.hidden", p))).abs().max().item<double>() < 1e-4);
    CHECK((tr["transformer.drop"].output()[0].to(torch::kFloat32).cpu() - tensors.at(fmt::format("p{}.embed", p)))
              .abs()
              .max()
              .item<double>() < 1e-4);
    CHECK((logits[0][-1] - tensors.at(fmt::format("p{}.logits_last", p))).abs().max().item<double>() < 1e-3);

    if (prompt.contains("final_logits_top5")) {
      const auto final_top5 = prompt["final_logits_top5"].get<std::vector<std::vector<int64_t>>>();
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const auto row = logits[0][static_cast<int64_t>(t)];
        const auto top = std::get<1>(row.topk(5));
        const auto probs = torch::softmax(row, -1);
        std::vector<double> ref_probs;
        for (auto id : final_top5[t]) ref_probs.push_back(probs[id].item<double>());
        check_topk(std::vector<int64_t>(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + 5), final_top5[t],
                   ref_probs);
      }
    }
    // The lens: top-5 of softmax(lm_head(ln_f(h))) per layer and position.
    torch::NoGradGuard no_grad;
    const auto top_ids = std::get<1>(decoder->forward(hs.to(model.device())).topk(5, -1)).cpu();
    for (std::size_t l = 0; l < layers.size(); ++l)
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const auto row = top_ids[static_cast<int64_t>(l)][static_cast<int64_t>(t)];
        check_topk(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 5),
                   prompt["lens"]["tokens"][l][t].get<std::vector<int64_t>>(),
                   prompt["lens"]["probs"][l][t].get<std::vector<double>>());
      }

    const auto expected = prompt["generated"].get<std::vector<int64_t>>();
    CHECK(baukit::generate_ids(model, {ids}, 10).front() == expected);
    CHECK(baukit::generate_ids(model, {ids}, 10, baukit::GenerateOptions().use_cache(false)).front() == expected);
  }
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

TEST_CASE("GPT-2 matches the fixtures' own references once c_attn.bias is dropped, as those references did",
          "[gpt2][parity]") {
  // The shared references were computed without attn.c_attn.bias (see tests/data/hf-reference/make_reference.py);
  // zeroing it here checks every other part of the model against that independent implementation.
  for (const auto& fixture : kGPT2Fixtures) {
    auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / fixture, baukit_tests::test_device());
    baukit::set_requires_grad(false, *model);
    for (auto& item : model->named_parameters())
      if (item.key().ends_with("attn.c_attn.bias")) item.value().zero_();
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

TEST_CASE("Malformed safetensors files give a clear error of the right kind", "[io][errors]") {
  const auto dir = scratch("bad-safetensors");
  const auto path = dir / "model.safetensors";
  auto load = [&] { baukit::io::SafetensorsFile file(path); };
  const std::string good =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";

  write_bytes(path, safetensors_bytes(good, 12));
  CHECK_NOTHROW(load());
  SECTION("truncated data") {
    write_bytes(path, safetensors_bytes(good, 10));
    CHECK(kind_of(load) == CheckpointErrorKind::truncated);
    CHECK_THROWS_WITH(load(), Catch::Contains("inside tensor 'b'"));
  }
  SECTION("header length beyond the file") {
    auto bytes = safetensors_bytes(good, 12);
    bytes[0] = '\xff';
    bytes[1] = '\x7f';
    write_bytes(path, bytes);
    CHECK(kind_of(load) == CheckpointErrorKind::truncated);
  }
  SECTION("a huge header length") {
    auto bytes = safetensors_bytes(good, 12);
    bytes[5] = '\x01';
    write_bytes(path, bytes);
    CHECK(kind_of(load) == CheckpointErrorKind::header);
  }
  SECTION("invalid JSON and invalid UTF-8") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F32",)", 0));
    CHECK(kind_of(load) == CheckpointErrorKind::header);
    write_bytes(path, safetensors_bytes("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
    CHECK(kind_of(load) == CheckpointErrorKind::header);
  }
  SECTION("unknown dtype") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4));
    CHECK(kind_of(load) == CheckpointErrorKind::dtype);
  }
  SECTION("overlapping offsets") {
    write_bytes(
        path,
        safetensors_bytes(
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8));
    CHECK_THROWS_WITH(load(), Catch::Contains("overlaps") && Catch::Contains(path.string()));
  }
  SECTION("byte count not matching the shape") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    CHECK(kind_of(load) == CheckpointErrorKind::size);
  }
  SECTION("duplicate names") {
    write_bytes(
        path,
        safetensors_bytes(
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8));
    CHECK_THROWS_WITH(load(), Catch::Contains("'a' is listed twice"));
  }
  SECTION("trailing bytes the header does not cover") {
    write_bytes(path, safetensors_bytes(good, 16));
    CHECK(kind_of(load) == CheckpointErrorKind::size);
  }
}

TEST_CASE("Checkpoints that do not fit the model are reported tensor by tensor", "[gpt2][io][errors]") {
  const auto dir = scratch("mismatch");
  fs::copy_file(kFixtures / "gpt2-tiny" / "config.json", dir / "config.json");
  baukit::io::SafetensorsFile whole(kFixtures / "gpt2-tiny" / "model.safetensors");
  auto write_with = [&](const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& change) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& entry : whole.entries()) tensors.emplace_back(entry.name, whole.tensor(entry));
    change(tensors);
    baukit::io::save_safetensors(dir / "model.safetensors", tensors);
  };
  auto load = [&] { baukit::models::GPT2LMHeadModel::from_pretrained(dir); };
  SECTION("a missing tensor") {
    write_with([](auto& t) {
      t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "h.1.mlp.c_fc.weight"; }), t.end());
    });
    CHECK_THROWS_WITH(load(), Catch::Contains("missing") && Catch::Contains("transformer.h.1.mlp.c_fc.weight"));
  }
  SECTION("an extra tensor") {
    write_with([](auto& t) { t.emplace_back("h.9.surprise", torch::zeros({2})); });
    CHECK(kind_of(load) == CheckpointErrorKind::unexpected);
    CHECK_THROWS_WITH(load(), Catch::Contains("h.9.surprise"));
  }
  SECTION("a mis-shaped tensor, with both shapes") {
    write_with([](auto& t) {
      for (auto& [name, tensor] : t)
        if (name == "ln_f.weight") tensor = torch::ones({31});
    });
    CHECK_THROWS_WITH(load(), Catch::Contains("ln_f.weight") && Catch::Contains("[31]") && Catch::Contains("[32]"));
  }
  SECTION("NaN weights") {
    write_with([](auto& t) {
      for (auto& [name, tensor] : t)
        if (name == "h.0.ln_1.bias") tensor = torch::full({32}, NAN);
    });
    CHECK(kind_of(load) == CheckpointErrorKind::non_finite);
  }
  SECTION("a config.json with a wrong n_embd") {
    write_with([](auto&) {});
    auto config = read_json(kFixtures / "gpt2-tiny" / "config.json");
    config["n_embd"] = 48;
    std::ofstream(dir / "config.json") << config.dump();
    CHECK(kind_of(load) == CheckpointErrorKind::shape);
  }
  SECTION("unsupported settings fail by name") {
    write_with([](auto&) {});
    auto config = read_json(kFixtures / "gpt2-tiny" / "config.json");
    config["activation_function"] = "mish";
    std::ofstream(dir / "config.json") << config.dump();
    CHECK_THROWS_WITH(load(), Catch::Contains("activation_function") && Catch::Contains("mish"));
    config["activation_function"] = "gelu_new";
    config["n_head"] = "four";
    std::ofstream(dir / "config.json") << config.dump();
    CHECK_THROWS_WITH(load(), Catch::Contains("'n_head'") && Catch::Contains("config.json"));
  }
}

TEST_CASE("pytorch_model.bin: zero-copy reading, and a pickle asking for a foreign global is refused", "[io][pickle]") {
  const auto bin = kFixtures / "gptj-tiny-f16-bin" / "pytorch_model.bin";
  const auto tensors = baukit::io::load_torch_bin(bin);
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  CHECK(by_name.at("transformer.wte.weight").sizes() == torch::IntArrayRef({50400, 32}));
  CHECK(by_name.at("transformer.wte.weight").scalar_type() == torch::kFloat16);
  CHECK(by_name.at("transformer.h.0.attn.bias").scalar_type() == torch::kBool);

  const auto dir = scratch("bad-pickle");
  auto bytes = read_bytes(bin);
  SECTION("a global outside the allowed set") {
    const std::string from = "collections\nOrderedDict\n", to = "subprocess\nPopen_______\n";
    const auto at = bytes.find(from);
    REQUIRE(at != std::string::npos);
    bytes.replace(at, from.size(), to);
    write_bytes(dir / "pytorch_model.bin", bytes);
    CHECK_THROWS_WITH(baukit::io::load_torch_bin(dir / "pytorch_model.bin"),
                      Catch::Contains("subprocess.Popen_______") && Catch::Contains("outside the allowed set"));
  }
  SECTION("a truncated archive") {
    write_bytes(dir / "pytorch_model.bin", bytes.substr(0, bytes.size() / 2));
    CHECK(kind_of([&] { baukit::io::load_torch_bin(dir / "pytorch_model.bin"); }) == CheckpointErrorKind::archive);
  }
  SECTION("a zip entry pointing outside the file") {
    const auto eocd = bytes.rfind(std::string("PK\x05\x06", 4));
    REQUIRE(eocd != std::string::npos);
    const auto directory = static_cast<std::size_t>(baukit::io::detail::read_le(bytes, eocd + 16, 4));
    bytes[directory + 42 + 3] = '\x7f';  // the first entry's local header offset, far beyond the end
    write_bytes(dir / "pytorch_model.bin", bytes);
    CHECK_THROWS_WITH(baukit::io::load_torch_bin(dir / "pytorch_model.bin"), Catch::Contains("outside"));
  }
}

TEST_CASE("GPT-J matches the fixture's reference: hidden states, lens top-5, greedy tokens; F16 weights stay F16",
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
  std::ofstream(dir / "config.json") << R"({"model_type": "llama"})";
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir), Catch::Contains("'llama'") && Catch::Contains("gpt2, gptj"));
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
  namespace models = baukit::models;
  torch::NoGradGuard no_grad;
  // Conv1D's layout [in, out] with 112 = 7 x 16 columns, and Linear's [out, in] with 101 features: both end in a
  // partial tile.
  const auto in_out = torch::randn({208, 112}), in_out_bias = torch::randn({112});
  const auto out_in = torch::randn({101, 208}), out_in_bias = torch::randn({101});
  for (int64_t rows = 1; rows <= models::kSkinnyMaxRows; ++rows) {
    CAPTURE(rows);
    const auto x = torch::randn({rows, 208});
    const auto conv = models::skinny_addmm(in_out_bias, x, in_out);
    const auto linear = models::skinny_linear(x, out_in, out_in_bias);
    REQUIRE(conv.has_value() == models::skinny_matmul_available());
    REQUIRE(linear.has_value() == models::skinny_matmul_available());
    if (!conv) continue;  // no AVX2/FMA here: declining every product (checked above) is the whole contract
    CHECK(torch::allclose(*conv, torch::addmm(in_out_bias, x, in_out), 1e-4, 1e-4));
    CHECK(torch::allclose(*models::skinny_addmm({}, x, in_out), torch::mm(x, in_out), 1e-4, 1e-4));
    CHECK(torch::allclose(*linear, torch::linear(x, out_in, out_in_bias), 1e-4, 1e-4));
    CHECK(torch::allclose(*models::skinny_linear(x, out_in, {}), torch::mm(x, out_in.t()), 1e-4, 1e-4));
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
    namespace kernels = models::detail;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      check(kernels::avx2::in_out_columns, kernels::avx2::out_in_columns, kernels::avx2::Vec::kWidth, "avx2");
    if (__builtin_cpu_supports("avx512f"))
      check(kernels::avx512::in_out_columns, kernels::avx512::out_in_columns, kernels::avx512::Vec::kWidth, "avx512");
#endif
  }
  if (models::skinny_matmul_available()) {
    const auto strided_x = torch::randn({208, 4}).t();  // not contiguous: copied first
    CHECK(torch::allclose(*models::skinny_addmm(in_out_bias, strided_x, in_out),
                          torch::addmm(in_out_bias, strided_x, in_out), 1e-4, 1e-4));
    CHECK(torch::allclose(*models::skinny_linear(strided_x, out_in, {}), torch::mm(strided_x, out_in.t()), 1e-4, 1e-4));
  }
  CHECK_FALSE(models::skinny_addmm(in_out_bias, torch::randn({17, 208}), in_out));  // too many rows: BLAS
  CHECK_FALSE(models::skinny_linear(torch::randn({17, 208}), out_in, {}));
  CHECK_FALSE(models::skinny_addmm({}, torch::randn({2, 208}), torch::randn({208, 40})));      // 40 % 16 != 0
  CHECK_FALSE(models::skinny_linear(torch::randn({2, 40}), torch::randn({8, 40}), {}));        // 40 % 16 != 0
  CHECK_FALSE(models::skinny_addmm({}, torch::randn({2, 208}), torch::randn({96, 208}).t()));  // strided
  CHECK_FALSE(models::skinny_linear(torch::randn({2, 208}), torch::randn({208, 96}).t(), {}));
  CHECK_FALSE(models::skinny_addmm({}, torch::randn({2, 208}, torch::kFloat64), in_out.to(torch::kFloat64)));
  CHECK_FALSE(models::skinny_linear(torch::randn({2, 208}), out_in.to(torch::kFloat16), {}));
  {
    torch::AutoGradMode grad(true);
    CHECK_FALSE(models::skinny_addmm({}, torch::randn({2, 208}, torch::requires_grad()), in_out));
    CHECK_FALSE(models::skinny_linear(torch::randn({2, 208}, torch::requires_grad()), out_in, {}));
  }
}

TEST_CASE("The oneDNN product equals BLAS for many rows, and declines what it does not handle", "[kernels]") {
  namespace models = baukit::models;
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({40, 208}), weight = torch::randn({101, 208}), bias = torch::randn({101});
  const auto product = models::onednn_linear(x, weight, bias);
  REQUIRE(product.has_value() == at::hasMKLDNN());
  if (!product) return;  // libtorch without oneDNN: declining (checked above) is the whole contract
  CHECK(torch::allclose(*product, torch::linear(x, weight, bias), 1e-4, 1e-4));
  CHECK(torch::allclose(*models::onednn_linear(x, weight, {}), torch::mm(x, weight.t()), 1e-4, 1e-4));
  const auto strided_x = torch::randn({208, 40}).t();
  CHECK(torch::allclose(*models::onednn_linear(strided_x, weight, {}), torch::mm(strided_x, weight.t()), 1e-4, 1e-4));
  CHECK_FALSE(models::onednn_linear(x.to(torch::kFloat64), weight.to(torch::kFloat64), {}));
  CHECK_FALSE(models::onednn_linear(x, torch::randn({101, 200}), {}));  // inner sizes differ
  torch::AutoGradMode grad(true);
  CHECK_FALSE(models::onednn_linear(x, weight.clone().requires_grad_(), {}));
}

TEST_CASE("OpenBLAS on generic kernels is switched to the CPU's, with the same products; otherwise nothing changes",
          "[kernels][blas]") {
  namespace models = baukit::models;
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({64, 256}), weight = torch::randn({300, 256});
  const auto before = torch::mm(x, weight.t());
  const bool switchable = models::blas_runs_generic_kernels() && !std::getenv("OPENBLAS_CORETYPE") &&
                          dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init") && __builtin_cpu_supports("avx2");
  const auto kernels = models::use_openblas_kernels_for_this_cpu();
  INFO("OpenBLAS core now: '" << models::detail::openblas_core_name() << "'");
  if (switchable) {
    CHECK((kernels == "SkylakeX" || kernels == "Haswell"));
    CHECK(models::detail::openblas_core_name() == kernels);
    CHECK_FALSE(models::blas_runs_generic_kernels());
  } else {
    CHECK(kernels.empty());
  }
  CHECK((std::getenv("OPENBLAS_CORETYPE") == nullptr || !switchable));  // the variable is not left set
  CHECK(torch::allclose(torch::mm(x, weight.t()), before, 1e-5, 1e-4));
  CHECK(models::use_openblas_kernels_for_this_cpu().empty());  // a second call changes nothing
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

TEST_CASE("Every checkpoint in the committed bad-input corpus fails with its error kind, naming file and tensor",
          "[io][errors][corpus]") {
  // tests/data/bad-checkpoints/make_corpus.py wrote these; each folder's expect.json holds the kind and the strings
  // the message must contain.
  const auto corpus = fs::path(BAUKIT_SOURCE_DIR) / "tests" / "data" / "bad-checkpoints";
  const fs::path pwned = "/tmp/baukit-pwned";  // where the corpus pickle would write
  fs::remove(pwned);
  std::vector<std::string> cases;
  for (const auto& entry : fs::directory_iterator(corpus))
    if (entry.is_directory()) cases.push_back(entry.path().filename().string());
  std::sort(cases.begin(), cases.end());
  REQUIRE(cases.size() == 29);
  for (const auto& name : cases) {
    INFO("case " << name);
    const auto expect = read_json(corpus / name / "expect.json");
    try {
      (void)baukit::models::GPT2LMHeadModel::from_pretrained(corpus / name, torch::kCPU, /*check_finite=*/true);
      FAIL_CHECK("loaded without an error");
    } catch (const CheckpointError& error) {
      INFO(error.what());
      CHECK(baukit::io::to_string(error.kind()) == expect["kind"].get<std::string>());
      for (const auto& mention : expect["mentions"])
        CHECK_THAT(error.what(), Catch::Contains(mention.get<std::string>()));
      CHECK_THAT(error.what(), Catch::Contains((corpus / name).string()));
    }
  }
  CHECK_FALSE(fs::exists(pwned));  // the pickle's command never ran
}

TEST_CASE("Inputs that are not regular files are refused at once: a FIFO for weights, config.json or vocab.json",
          "[io][errors][hostile]") {
  const auto dir = scratch("fifo-inputs");
  for (const char* part : {"weights", "config", "vocab"}) fs::create_directories(dir / part);
  for (const char* file : {"config.json", "vocab.json", "merges.txt"}) {
    fs::copy_file(kFixtures / "gpt2-tiny" / file, dir / "weights" / file);
    fs::copy_file(kFixtures / "gpt2-tiny" / file, dir / "vocab" / file);
  }
  fs::copy_file(kFixtures / "gpt2-tiny" / "model.safetensors", dir / "config" / "model.safetensors");
  make_fifo(dir / "weights" / "model.safetensors");
  make_fifo(dir / "config" / "config.json");
  fs::remove(dir / "vocab" / "vocab.json");
  make_fifo(dir / "vocab" / "vocab.json");
  FifoWatchdog watchdog(
      {dir / "weights" / "model.safetensors", dir / "config" / "config.json", dir / "vocab" / "vocab.json"});
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir / "weights"),
                    Catch::Contains("model.safetensors: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir / "config"),
                    Catch::Contains("config.json: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::Tokenizer::from_pretrained(dir / "vocab"),
                    Catch::Contains("vocab.json: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::io::SafetensorsFile(dir / "weights"), Catch::Contains("is a directory"));
  CHECK_FALSE(watchdog.blocked());
}

TEST_CASE("The unpickler bounds nesting, refuses aliasing tricks and destroys deep values without recursion",
          "[io][pickle][hostile]") {
  using namespace std::string_literals;
  auto unpickle = [](const std::string& body) {
    const std::string pickle = "\x80\x02" + body + ".";
    return baukit::io::Unpickler(pickle, "test.pkl",
                                 [](const std::string&, torch::ScalarType, int64_t) { return torch::Tensor(); })
        .state_dict();
  };
  const std::string deep_lists = std::string(200'000, ']') + std::string(199'999, 'a');
  CHECK_THROWS_WITH(unpickle(deep_lists), Catch::Contains("containers nest more than 100 deep"));
  CHECK_THROWS_WITH(unpickle(")" + std::string(200'000, '\x85')), Catch::Contains("nest more than 100 deep"));
  CHECK_THROWS_WITH(unpickle(std::string(200'000, '(') + std::string(200'000, 't')), Catch::Contains("nest more"));
  // 100 levels are accepted (and then refused as not a dict).
  CHECK_THROWS_WITH(unpickle(std::string(100, ']') + std::string(99, 'a')), Catch::Contains("not a dict"));
  CHECK_THROWS_WITH(unpickle("]q\x00h\x00"
                             "a"s),
                    Catch::Contains("inside itself"));
  // B placed inside A, then changed through the memo: refused, or nesting could grow past the bound unseen.
  CHECK_THROWS_WITH(unpickle("]q\x00]q\x01"
                             "ah\x01K\x05"
                             "a"s),
                    Catch::Contains("already placed inside another"));

  // Destruction of a million-deep chain built directly: no recursion, so no stack overflow.
  using Value = baukit::io::detail::PickleValue;
  Value root = Value::of(Value::Kind::list);
  Value* tail = &root;
  for (int i = 0; i < 1'000'000; ++i) {
    tail->items->items.push_back(Value::of(Value::Kind::list));
    tail = &tail->items->items.back();
  }
  root = Value();
  CHECK(root.items == nullptr);
}

TEST_CASE("Outputs: regular files are replaced atomically, devices and FIFOs written through, the rest refused",
          "[io][output][hostile]") {
  const auto dir = scratch("outputs");
  auto write = [](const fs::path& path, const std::string& text) {
    baukit::io::write_file_atomically(path, [&](std::ostream& out) { out << text; });
  };
  auto no_temporaries = [&] {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().filename().string().find(".tmp-") != std::string::npos) return false;
    return true;
  };
  SECTION("a new path, then a regular file replaced; a symbolic link is followed, not replaced") {
    write(dir / "a.txt", "one");
    write(dir / "a.txt", "two");
    CHECK(read_bytes(dir / "a.txt") == "two");
    fs::create_symlink("a.txt", dir / "link.txt");
    write(dir / "link.txt", "three");
    CHECK(fs::is_symlink(dir / "link.txt"));
    CHECK(read_bytes(dir / "a.txt") == "three");
    fs::create_symlink("nowhere.txt", dir / "dangling.txt");
    CHECK_THROWS_WITH(write(dir / "dangling.txt", "x"), Catch::Contains("does not exist"));
    CHECK_THROWS_WITH(write(dir / "missing" / "a.txt", "x"),
                      Catch::Contains("the folder") && Catch::Contains("missing"));
  }
  SECTION("a character device is written through and stays a device; a full one is an error") {
    const auto null = char_device(dir, "null", 3), full = char_device(dir, "full", 7);
    write(null, std::string(1 << 20, 'x'));
    CHECK(is_char_device(null));
    CHECK_THROWS_WITH(write(full, "x"), Catch::Contains(full.string()) && Catch::Contains("No space left"));
    CHECK(is_char_device(full));
  }
  SECTION("a FIFO: an error without a reader, written through with one") {
    make_fifo(dir / "pipe");
    CHECK_THROWS_WITH(write(dir / "pipe", "x"), Catch::Contains("a FIFO that nothing reads"));
    std::string received;
    std::thread reader([&] { received = read_bytes(dir / "pipe"); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the reader opens its end first
    write(dir / "pipe", "through the pipe");
    reader.join();
    CHECK(received == "through the pipe");
    CHECK(fs::is_fifo(dir / "pipe"));
  }
  SECTION("a directory and a socket are refused") {
    fs::create_directories(dir / "folder");
    CHECK_THROWS_WITH(write(dir / "folder", "x"), Catch::Contains("is a directory"));
    const int socket = make_socket(dir / "socket");
    CHECK_THROWS_WITH(write(dir / "socket", "x"), Catch::Contains("is a socket"));
    ::close(socket);
    CHECK(fs::is_socket(dir / "socket"));
  }
  SECTION("two outputs: when one fails, the other is left as it was") {
    write(dir / "page.html", "previous page");
    baukit::io::OutputFile page(dir / "page.html"), json(char_device(dir, "full", 7));
    page.stream() << "new page";
    json.stream() << std::string(1 << 17, 'x');
    CHECK_THROWS_WITH(baukit::io::commit_all({&page, &json}), Catch::Contains("No space left"));
    CHECK(read_bytes(dir / "page.html") == "previous page");
  }
  SECTION("an exception while writing leaves nothing") {
    CHECK_THROWS(baukit::io::write_file_atomically(dir / "b.txt", [](std::ostream& out) {
      out << "partial";
      throw std::runtime_error("interrupted");
    }));
    CHECK_FALSE(fs::exists(dir / "b.txt"));
  }
  CHECK(no_temporaries());
}

TEST_CASE("Token ids outside the model's vocabulary are refused by name", "[gpt2][errors][hostile]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const int64_t vocab = model->config.vocab_size;
  CHECK_THROWS_WITH(model->forward(torch::tensor({int64_t{1}, vocab}, torch::kLong).unsqueeze(0), {}, nullptr),
                    Catch::Contains(fmt::format("input id {} (batch row 0, position 1)", vocab)) &&
                        Catch::Contains(fmt::format("vocabulary of {}", vocab)));
  CHECK_THROWS_WITH(model->forward(torch::tensor({int64_t{-1}}, torch::kLong).unsqueeze(0), {}, nullptr),
                    Catch::Contains("input id -1"));
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = tokenizer.encode("Hello world<|endoftext|>", /*allow_special=*/true);
  CHECK_NOTHROW(tokenizer.check_ids_fit(ids, vocab));
  CHECK_THROWS_WITH(
      tokenizer.check_ids_fit(ids, 50000),
      Catch::Contains("vocab.json: token '<|endoftext|>' has the id 50256") && Catch::Contains("vocab_size of 50000"));
  CHECK_THROWS_WITH(tokenizer.check_ids_fit(ids, 1000), Catch::Contains("token 'Hello' has the id 15496"));
}
