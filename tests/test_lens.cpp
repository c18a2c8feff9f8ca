// Specification of the logit lens, the show builder, the page, and the baukit-lens command.
#include <sys/wait.h>
#include <unistd.h>

#include <baukit/baukit.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>

#include "default_model/corpus.hpp"
#include "device.hpp"
#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp

namespace fs = std::filesystem;

struct Run {
  int status;
  std::string output;
};

// Runs a shell command, capturing stdout and stderr.
Run run(const std::string& command) {
  // One log per process: ctest runs test cases in parallel processes.
  const auto log = fs::path(BAUKIT_BINARY_DIR) / "test-scratch" / fmt::format("command-{}.log", ::getpid());
  fs::create_directories(log.parent_path());
  const int raw = std::system((command + " > " + quoted(log.string()) + " 2>&1").c_str());
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_bytes(log)};
}

// The command fails (a non-zero exit) and says `message`.
void fails_with(const std::string& command, const std::string& message) {
  const auto result = run(command);
  INFO(result.output);
  CHECK(result.status != 0);
  CHECK(result.output.find(message) != std::string::npos);
}

std::string lens_command(const fs::path& model, const std::string& prompt, const fs::path& out,
                         const std::string& extra = "") {
  const auto device = extra.find("--device") == std::string::npos ? "--device " + baukit_tests::test_device_name() : "";
  return fmt::format("{} --model {} --tokenizer {} --prompt {} --out {} --threads 1 {} {}", quoted(BAUKIT_LENS_EXE),
                     quoted(model.string()), quoted((kFixtures / "gpt2-tiny").string()), quoted(prompt),
                     quoted(out.string()), device, extra);
}

// Tokens equal (allowing neighbours swapped within 1e-5), probabilities and magnitudes within 1e-4.
void check_view(const nlohmann::json& got, const nlohmann::json& expected, bool check_magnitudes = true) {
  const auto& tokens = expected["tokens"];
  REQUIRE(got["tokens"].size() == tokens.size());
  for (std::size_t l = 0; l < tokens.size(); ++l)
    for (std::size_t t = 0; t < tokens[l].size(); ++t) {
      const auto want = tokens[l][t].get<std::vector<int64_t>>(),
                 have = got["tokens"][l][t].get<std::vector<int64_t>>();
      const auto want_p = expected["probs"][l][t].get<std::vector<double>>(),
                 have_p = got["probs"][l][t].get<std::vector<double>>();
      for (std::size_t k = 0; k < want.size(); ++k) {
        CHECK(std::abs(have_p[k] - want_p[k]) < 1e-4);
        if (have[k] != want[k]) CHECK(std::abs(want_p[k] - want_p[k + (k + 1 < want.size() ? 1 : -1)]) < 1e-5);
      }
      if (check_magnitudes)
        CHECK(std::abs(got["magnitudes"][l][t].get<double>() - expected["magnitudes"][l][t].get<double>()) < 1e-4);
    }
}

std::string dump_dom(const fs::path& page, const std::string& fragment = "", const fs::path& screenshot = {}) {
  const auto profile = scratch("chromium-profile");
  const std::string flags =
      "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update --no-first-run "
      "--disable-sync --disable-quic --user-data-dir=" +
      quoted(profile.string());
  const std::string url = "file://" + fs::absolute(page).string() + fragment;
  if (!screenshot.empty())
    REQUIRE(run(fmt::format("timeout 120 chromium {} --window-size=1400,600 --screenshot={} {}", flags,
                            quoted(screenshot.string()), quoted(url)))
                .status == 0);
  const auto result = run(fmt::format("timeout 120 chromium {} --dump-dom {}", flags, quoted(url)));
  REQUIRE(result.status == 0);
  return result.output;
}

// Two lens cells agree: the same tokens and ranks, probabilities and statistics within the margins.
void check_same_cell(const baukit::LensCell& a, const baukit::LensCell& b, double prob_margin, double stat_margin) {
  CHECK(a.tokens == b.tokens);
  for (std::size_t i = 0; i < a.probs.size(); ++i) CHECK(a.probs[i] == Approx(b.probs[i]).margin(prob_margin));
  CHECK(a.entropy == Approx(b.entropy).margin(stat_margin));
  CHECK(a.kl_to_final == Approx(b.kl_to_final).margin(stat_margin));
  // Ranks equal near the top; deep in a large vocabulary (Gemma's 262,208 tokens in the 24-wide fixtures), where
  // neighbouring logits lie ~1e-6 apart, float rounding moves a rank by a few places in a hundred thousand.
  // Off the top (rank 200 and beyond) a place in 200 is allowed: products of other shapes (a batch, a cache) round
  // differently on some CPUs' kernels (seen: 457 against 456 in Qwen 3's 151,936 tokens on an AMD EPYC).
  const auto same_rank = [](int64_t x, int64_t y) { return std::abs(x - y) <= std::max(x, y) / 200; };
  INFO("ranks of the final top-1 " << a.rank_of_final_top1 << " and " << b.rank_of_final_top1 << ", of the target "
                                   << a.rank_of_target << " and " << b.rank_of_target);
  CHECK(same_rank(a.rank_of_final_top1, b.rank_of_final_top1));
  CHECK(same_rank(a.rank_of_target, b.rank_of_target));
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("show escapes every text and attribute value, and lays out nested lists", "[show]") {
  using namespace baukit::show;
  const Node page = {
      {style({{"fontWeight", "bold"}}), "Layer", attr({{"title", "a\"b<c>&'"}}), "<script>alert(1)</script>"}};
  const auto out = html(page);
  CHECK(out.find("<script>") == std::string::npos);
  CHECK(out.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(out.find("title=\"a&quot;b&lt;c&gt;&amp;&#39;\"") != std::string::npos);
  CHECK(out.find("font-weight: bold") != std::string::npos);
  CHECK(out.find("flex-direction: column") < out.find("flex-direction: row"));
  CHECK_THROWS_WITH(html({style({{"color", "red; background: url(x)"}}), "x"}), Catch::Contains("contains one of"));
  CHECK_THROWS_WITH(html({attr({{"onclick", "x()"}}), "x"}), Catch::Contains("event-handler"));
  CHECK_THROWS_WITH(html({attr({{"a b", "x"}}), "x"}), Catch::Contains("not a valid attribute name"));
  CHECK_THROWS_WITH(html({attr({{"href", " Java\tScript:alert(1)"}}), "x"}), Catch::Contains("as script"));
  CHECK_THROWS_WITH(html({attr({{"SRC", "data:text/html,<script>"}}), "x"}), Catch::Contains("as script"));
  CHECK_THROWS_WITH(html({attr({{"SrcDoc", "<script>alert(1)</script>"}}), "x"}), Catch::Contains("as script"));
  CHECK_THROWS_WITH(html({attr({{"Style", "color: red"}}), "x"}), Catch::Contains("style(...)"));
  CHECK_NOTHROW(html({attr({{"href", "https://example.org/a:b"}}), "x"}));
  const auto dir = scratch("show");
  save(dir / "page.html", page, "t<i>tle");
  CHECK(read_bytes(dir / "page.html").find("<title>t&lt;i&gt;tle</title>") != std::string::npos);
  CHECK_THROWS(save(dir / "missing-folder" / "page.html", page));
  CHECK_FALSE(fs::exists(dir / "missing-folder"));
}

TEST_CASE("The lens matches the fixtures' references", "[lens][parity]") {
  for (const std::string fixture : {"gpt2-tiny", "gpt2-tiny-prefixed-bf16"}) {
    auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / fixture, baukit_tests::test_device());
    const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
    const auto reference = read_json(kFixtures / fixture / "reference.json");  // outlives the loop (unlike a temporary)
    for (const auto& prompt : reference["prompts"]) {
      INFO(fixture << ": " << prompt["text"].get<std::string>());
      const auto json =
          baukit::to_json(baukit::logit_lens(*model, prompt["ids"].get<std::vector<int64_t>>()), tokenizer);
      check_view(json["lens"], prompt["lens"]);
      check_view(json["delta_lens"], prompt["delta_lens"]);
    }
  }
}

TEST_CASE("baukit-lens --json equals the Hugging Face-semantics reference for every prompt", "[lens][command]") {
  const auto dir = scratch("lens-json");
  for (const std::string fixture : {"gpt2-tiny", "gpt2-tiny-prefixed-bf16"}) {
    const auto reference = read_json(kData / "hf-reference" / (fixture + ".json"));
    const auto prompts = read_json(kFixtures / "prompts.json");
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const auto text = prompts[i]["text"].get<std::string>();
      INFO(fixture << ": " << text);
      const auto result = run(
          lens_command(kFixtures / fixture, text, dir / "lens.html", "--json " + quoted((dir / "lens.json").string())));
      REQUIRE(result.status == 0);
      const auto json = read_json(dir / "lens.json");
      CHECK(json["ids"] == prompts[i]["ids"]);
      check_view(json["lens"], reference["prompts"][i]["lens"]);
      check_view(json["delta_lens"], reference["prompts"][i]["delta_lens"]);
      for (const char* key : {"entropy", "kl_to_final", "rank_of_final_top1", "token_strings"})
        CHECK(json["lens"].contains(key));
    }
  }
}

TEST_CASE("baukit-lens --json on the GPT-J fixture equals its reference lens", "[lens][command][gptj]") {
  const auto dir = scratch("lens-gptj");
  const auto fixture = kFixtures / "gptj-tiny-f16-bin";
  const auto reference = read_json(fixture / "reference.json");
  for (const auto& prompt : reference["prompts"]) {
    const auto text = prompt["text"].get<std::string>();
    INFO(text);
    REQUIRE(
        run(lens_command(fixture, text, dir / "lens.html", "--json " + quoted((dir / "lens.json").string()))).status ==
        0);
    const auto json = read_json(dir / "lens.json");
    CHECK(json["ids"] == prompt["ids"]);
    check_view(json["lens"], prompt["lens"]);
    check_view(json["delta_lens"], prompt["delta_lens"]);
  }
  const auto result = run(lens_command(fixture, "x", dir / "lens.html", "--attention-rows"));
  CHECK(result.status != 0);
  CHECK(result.output.find("gptj") != std::string::npos);
}

namespace {

// A model whose logits are a transform of its unembedding's output (Gemma 2's final soft-capping, here on GPT-2).
struct SoftCapImpl : torch::nn::Cloneable<SoftCapImpl> {
  explicit SoftCapImpl(double cap) : cap(cap) {}
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& logits) { return torch::tanh(logits / cap) * cap; }
  double cap;
};
BAUKIT_TRACED_MODULE(SoftCap);

struct CappedGPT2 : baukit::models::GPT2LMHeadModelImpl {
  explicit CappedGPT2(baukit::models::GPT2Config config) : GPT2LMHeadModelImpl(std::move(config)) {
    cap = register_module("cap", SoftCap(1.0));
  }
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask, baukit::models::KVCache* cache) override {
    return cap(GPT2LMHeadModelImpl::forward(ids, mask, cache));
  }
  torch::nn::AnyModule logit_transform() override { return torch::nn::AnyModule(cap); }
  SoftCap cap{nullptr};
};

}  // namespace

TEST_CASE("A model's logit transform is in its lens decoder, so the last layer's lens is its output", "[lens]") {
  const auto dir = kFixtures / "gpt2-tiny";
  auto plain = baukit::models::GPT2LMHeadModelImpl::from_pretrained(dir);
  auto capped = baukit::models::build_pretrained<CappedGPT2>(
      baukit::models::GPT2Config::from_pretrained(dir), baukit::io::read_checkpoint(dir),
      baukit::io::LoadOptions().optional_prefix("transformer.").ignore(R"(\.attn\.(masked_)?bias$)").may_be_missing({"lm_head.weight"}),
      dir, {});
  const auto decoder = baukit::make_decoder(*capped);
  REQUIRE(decoder->size() == 4);
  CHECK(decoder->named_children()[2].key() == "logit_transform");
  CHECK(baukit::make_decoder(*plain)->size() == 3);
  const std::vector<int64_t> ids = {13, 383, 4687, 39949, 318, 5140, 287};
  const auto with_cap = baukit::logit_lens(*capped, ids);
  const auto without = baukit::logit_lens(*plain, ids);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    CAPTURE(t);
    CHECK(with_cap.lens.cells.back()[t].kl_to_final < 1e-5);  // the decoder is the model's own head
    CHECK(with_cap.lens.cells.back()[t].probs[0] < without.lens.cells.back()[t].probs[0]);  // capped: flatter
  }
  // The plain model's head applied to the capped model's output distribution would be far from it.
  const auto logits = plain->forward(torch::tensor(ids, torch::kLong).unsqueeze(0), {}, nullptr)[0];
  const auto capped_probs = torch::softmax(capped->forward(torch::tensor(ids, torch::kLong).unsqueeze(0), {}, nullptr)[0], -1);
  const auto kl = (capped_probs * (capped_probs.log() - torch::log_softmax(logits, -1))).sum(-1);
  CHECK(kl.min().item<double>() > 1e-3);
}

TEST_CASE("Lens statistics: KL and rank are zero/one at the last layer, entropy is bounded, targets are ranked",
          "[lens]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = tokenizer.encode(". The Space Needle is located in");
  const auto target = tokenizer.encode(" Seattle").front();
  const auto result =
      baukit::logit_lens(*model, ids, baukit::LensOptions().target(target).topk(3).attention_rows(true).chunk_bytes(1));
  REQUIRE(result.lens.rows.size() == 6);  // "0 attn", "0", ... with attention rows
  CHECK(result.lens.rows[0] == "0 attn");
  const auto& last = result.lens.cells.back();
  for (const auto& cell : last) {
    CHECK(cell.kl_to_final < 1e-4);
    CHECK(cell.rank_of_final_top1 == 1);
    CHECK(cell.tokens.size() == 3);
    CHECK(cell.rank_of_target >= 1);
    CHECK(cell.entropy >= 0);
    CHECK(cell.entropy <= std::log(50257.0) + 1e-3);
  }
  // Row 0's stream after attention is the embedding plus attention's output, traced independently here.
  baukit::Trace attn(*model, "transformer.h.0.attn");
  baukit::Trace drop(*model, "transformer.drop");
  model->forward(torch::tensor(ids).unsqueeze(0), {}, nullptr);
  const auto mid = baukit::residual_stream(*model, ids, true)[1];
  CHECK(torch::allclose(mid, (drop.output() + attn.output())[0]));
  // Hidden states the seed's way.
  CHECK(baukit::get_hidden_states(*model, tokenizer, "Hello, my name is also").sizes() ==
        torch::IntArrayRef({3, 6, 32}));
  CHECK(baukit::get_hidden_state_deltas(*model, tokenizer, "Hello, my name is also").sizes() ==
        torch::IntArrayRef({3, 6, 32}));
  CHECK_THROWS_WITH(baukit::logit_lens(*model, {}), Catch::Contains("no tokens"));
  CHECK_THROWS_WITH(baukit::logit_lens(*model, std::vector<int64_t>(65, 13)), Catch::Contains("at most 64"));
}

TEST_CASE("Lens statistics from logits equal those from the softmax, NaN streams and outputs are refused", "[lens]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny").encode(" Paris is the capital of");
  const auto stream = baukit::residual_stream(*model, ids);
  auto decoder = baukit::make_decoder(*model);
  const auto final_probs = decoder->forward(stream[stream.size(0) - 1]);
  const auto options = baukit::LensOptions().topk(4).target(13);
  // A hook on the softmax makes the decode run it (and use the probabilities); without one, it is skipped.
  const auto from_logits = baukit::decode_states(decoder, stream, final_probs, options);
  {
    baukit::Trace softmax(*decoder, "softmax");
    const auto from_probs = baukit::decode_states(decoder, stream, final_probs, options);
    CHECK(softmax.output().defined());
    for (std::size_t r = 0; r < from_probs.cells.size(); ++r)
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const auto &a = from_logits.cells[r][t], &b = from_probs.cells[r][t];
        CAPTURE(r, t);
        // libtorch's float softmax is off by up to ~3e-5 here; the logits path is checked in double below.
        check_same_cell(a, b, 5e-5, 1e-4);
        CHECK(a.magnitude == b.magnitude);
      }
  }
  // The logits path against a softmax in double precision.
  const auto exact = torch::softmax(baukit::make_decoder(*model, false)->forward(stream).to(torch::kDouble), -1);
  for (std::size_t r = 0; r < from_logits.cells.size(); ++r)
    for (std::size_t t = 0; t < ids.size(); ++t)
      for (std::size_t i = 0; i < 4; ++i) {
        const auto& cell = from_logits.cells[r][t];
        CHECK(cell.probs[i] == Approx(exact[r][t][cell.tokens[i]].item<double>()).margin(1e-6));
      }
  // The 4-lane statistics (any x86-64 CPU) equal those of the widest this CPU runs (16 lanes with AVX-512).
  {
    const auto logits = baukit::make_decoder(*model, false)->forward(stream).reshape({-1, final_probs.size(-1)});
    const auto q = final_probs.contiguous();
    const int64_t vocab = q.size(-1), tokens = q.size(0);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      baukit::kernels::DistributionStatistics wide, narrow;
      const float* z = logits.data_ptr<float>() + i * vocab;
      const float* q_t = q.data_ptr<float>() + (i % tokens) * vocab;
      baukit::kernels::cell_statistics_from_logits(z, q_t, vocab, 3, 13, 5, wide);
      baukit::kernels::cell_statistics_lanes<baukit::kernels::Floats4>(z, q_t, vocab, 3, 13, 5, narrow);
      CAPTURE(i);
      CHECK(wide.tokens == narrow.tokens);
      for (std::size_t k = 0; k < wide.probs.size(); ++k) CHECK(wide.probs[k] == Approx(narrow.probs[k]).margin(1e-7));
      CHECK(wide.entropy == Approx(narrow.entropy).margin(1e-5));
      CHECK(wide.cross_entropy == Approx(narrow.cross_entropy).margin(1e-5));
      CHECK(wide.rank_of_final_top1 == narrow.rank_of_final_top1);
      CHECK(wide.rank_of_target == narrow.rank_of_target);
    }
  }
  // e^x as the statistics compute it, against the library's.
  for (float x = -100.0f; x <= 0.0f; x += 0.37f)
    CHECK(baukit::kernels::exp_nonpositive(x) == Approx(std::exp(std::max(x, -87.0f))).epsilon(3e-7));
  // NaN logits make a cell's numbers NaN, not quietly finite.
  model->lm_head->weight.data()[5].fill_(std::numeric_limits<float>::quiet_NaN());
  const auto with_nan = baukit::decode_states(decoder, stream, final_probs, options).cells[0][0];
  CHECK(std::isnan(with_nan.entropy));
  CHECK(std::isnan(with_nan.probs[0]));
  CHECK_THROWS_AS(baukit::logit_lens(*model, ids), baukit::NonFiniteError);  // the output distribution
  model->named_parameters()["transformer.h.1.mlp.c_fc.weight"].data()[0][0].fill_(INFINITY);
  CHECK_THROWS_WITH(baukit::logit_lens(*model, ids), Catch::Contains("row '1'"));
}

TEST_CASE("The page renders in Chromium: rows, hover titles, view switching, and no injected script runs",
          "[lens][browser]") {
  const auto dir = scratch("browser");
  // Payloads that would mark the page if they ever ran.
  const std::vector<std::string> payloads = {
      "Ünïcödé 🙂 <script>alert(1)</script> & \"quotes\" ’curly’ 東京",
      "<script>document.body.setAttribute('data-pwned','1')</script>",
      "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">",
      "</script><script>document.body.setAttribute('data-pwned','3')</script>",
      "<a href=\"javascript:document.body.setAttribute('data-pwned','4')\">x</a> \\u003cscript\\u003e",
      "' onmouseover='document.body.setAttribute(\"data-pwned\",\"5\")' x='",
      "<svg onload=\"document.body.setAttribute('data-pwned','6')\"><iframe srcdoc=\"<script>parent.document.body."
      "setAttribute('data-pwned','7')</script>\">",
      "&lt;script&gt;document.body.setAttribute('data-pwned','8')&lt;/script&gt; %3Cscript%3E <!-- ]]> \\x3cscript>",
      "javascript:document.body.setAttribute('data-pwned','9') \u2028\u2029 {{constructor.constructor('x')()}}"};
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    INFO(payloads[i]);
    const auto page = dir / fmt::format("lens-{}.html", i);
    REQUIRE(run(lens_command(kFixtures / "gpt2-tiny", payloads[i], page,
                             "--json " + quoted((dir / "lens.json").string()) + " --target ' Seattle'"))
                .status == 0);
    const auto dom = dump_dom(page, "", i == 0 ? fs::path(BAUKIT_BINARY_DIR) / "lens-screenshot.png" : fs::path());
    // A payload that ran would have marked <body>; the payload text itself appears, escaped, in the page.
    const auto body_start = dom.find("<body");
    REQUIRE(body_start != std::string::npos);
    const auto body_tag = dom.substr(body_start, dom.find('>', body_start) - body_start);
    CHECK(body_tag.find("data-pwned") == std::string::npos);
    CHECK(body_tag.find("data-lens-ready=\"lens prob\"") != std::string::npos);  // the page's own script ran
    CHECK(count(dom, "class=\"lens-row\"") == 3 + 2);                            // layers + two header rows
    CHECK(dom.find("mag: ") != std::string::npos);
    CHECK(std::regex_search(dom, std::regex("title=\"mag: [0-9.]+\n(.*: prob [0-9.]+\n){5}entropy")));
    if (i == 0) {
      CHECK(fs::file_size(fs::path(BAUKIT_BINARY_DIR) / "lens-screenshot.png") > 1000);
      // The delta view, chosen through the link, shows the delta lens's top-1 tokens.
      const auto delta_dom = dump_dom(page, "#view=delta_lens&stat=kl");
      CHECK(delta_dom.find("data-lens-ready=\"delta_lens kl\"") != std::string::npos);
      const auto json = read_json(dir / "lens.json");
      const auto first = baukit::visible_token(json["delta_lens"]["token_strings"][0][1][0].get<std::string>());
      CHECK(delta_dom.find("data-r=\"0\" data-t=\"1\">" + baukit::show::escape(first) + "<") != std::string::npos);
    }
  }
}

TEST_CASE("baukit-lens: bad arguments and files give an error naming them and a non-zero exit",
          "[lens][command][errors]") {
  const auto dir = scratch("lens-errors");
  const auto tiny = kFixtures / "gpt2-tiny";
  fails_with(lens_command(dir / "nowhere", "x", dir / "a.html"), "nowhere");
  fails_with(lens_command(tiny, "", dir / "a.html"), "--prompt: the prompt is empty");
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += fmt::format(" word{} and", i);  // well over 64 tokens
  fails_with(lens_command(tiny, long_prompt, dir / "a.html"), "--truncate");
  fails_with(lens_command(tiny, "ok\xC3(", dir / "a.html"), "not valid UTF-8");
  fails_with(lens_command(tiny, "x", dir / "a.html", "--topk 0"), "--topk");
  fails_with(lens_command(tiny, "x", dir / "a.html", "--target ' Seattle Space'"), "--target");
  fails_with(lens_command(tiny, "x", "/proc/version/lens.html"), "/proc/version/lens.html");
  if (torch::cuda::is_available())
    CHECK(run(lens_command(tiny, "x", dir / "cuda.html", "--device cuda")).status == 0);
  else
    fails_with(lens_command(tiny, "x", dir / "a.html", "--device cuda"), "cuda");
  // NaN weights: loaded without a scan, caught in the stream, then named by a scanning load.
  const auto nan_weights = fs::path(BAUKIT_SOURCE_DIR) / "tests" / "data" / "bad-checkpoints" / "nan-weights";
  fails_with(lens_command(nan_weights, "!", dir / "a.html"), "transformer.h.0.mlp.c_fc.weight");
  CHECK(run(lens_command(tiny, long_prompt, dir / "long.html", "--truncate")).status == 0);
  std::string huge_prompt;  // 100k characters: refused by length, or truncated when asked
  while (huge_prompt.size() < 100'000) huge_prompt += "The Space Needle, 東京 🙂; ";
  fails_with(lens_command(tiny, huge_prompt, dir / "a.html"), "--truncate");
  CHECK(run(lens_command(tiny, huge_prompt, dir / "huge.html", "--truncate")).status == 0);

  // A write that fails part-way (here: a 1 KB file-size limit, as a full disk would) leaves the previous page
  // untouched and no temporary behind.
  {
    std::ofstream(dir / "kept.html") << "previous page";
    const auto result =
        run("bash -c " + quoted("trap '' XFSZ; ulimit -f 1; exec " + lens_command(tiny, "x", dir / "kept.html")));
    INFO(result.output);
    CHECK(result.status != 0);
    CHECK(result.output.find((dir / "kept.html").string()) != std::string::npos);
    CHECK(read_bytes(dir / "kept.html") == "previous page");
    for (const auto& entry : fs::directory_iterator(dir))
      CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
  }
  std::string controls = "tab\there\x01\x7f";
  CHECK(run(lens_command(tiny, controls, dir / "controls.html")).status == 0);
  CHECK(read_bytes(dir / "controls.html").find("\u2401") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "a.html"));
}

TEST_CASE("The default model knows where the Space Needle is, in its middle layers, and answers held-out phrasings",
          "[default-model]") {
  const fs::path dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  CHECK(fs::file_size(dir / "model.safetensors") + fs::file_size(dir / "vocab.json") +
            fs::file_size(dir / "merges.txt") <=
        30'000'000);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
  auto model = baukit::models::from_pretrained(dir);
  CHECK(model->num_layers() >= 6);
  CHECK(model->vocab_size() == 50257);

  const auto needle =
      default_model::evaluate(*model, tokenizer, {{". The Space Needle is located in", " Seattle", "Space Needle"}})
          .front();
  CHECK(needle.final_top1 == " Seattle");
  CHECK(needle.answer_probability > 0.5);
  CHECK(needle.first_top1_layer >= 0);
  CHECK(needle.first_top1_layer < model->num_layers() - 1);  // emerges before the last layer

  const auto corpus = default_model::build_corpus(default_model::read_facts(dir / "facts.tsv"));
  REQUIRE(corpus.held_out.size() >= 40);
  const auto results = default_model::evaluate(*model, tokenizer, corpus.held_out);
  std::size_t correct = 0;
  for (const auto& e : results) correct += e.final_top1 == e.item.answer;
  INFO(correct << " of " << results.size() << " held-out phrasings answered");
  CHECK(static_cast<double>(correct) >= 0.8 * static_cast<double>(results.size()));
  // None of the held-out sentences is in the training corpus.
  std::size_t leaked = 0;
  for (const auto& h : corpus.held_out)
    for (const auto& sentence : corpus.train) leaked += ". " + sentence == h.prompt + h.answer + ".";
  CHECK(leaked == 0);
}

TEST_CASE("baukit-lens: prompts from a file or standard input, outputs to devices, both outputs or neither",
          "[lens][command][errors][hostile]") {
  const auto dir = scratch("lens-hostile");
  const auto tiny = kFixtures / "gpt2-tiny";
  const std::string prompt = ". The Space Needle is located in";
  REQUIRE(run(lens_command(tiny, prompt, dir / "a.html", "--json " + quoted((dir / "a.json").string()))).status == 0);
  const auto expected = read_json(dir / "a.json");

  // --prompt-file: a file, standard input ("-"), and a prompt longer than one argument may be (128 KiB).
  write_bytes(dir / "prompt.txt", prompt);
  const auto from_file = fmt::format("{} --prompt-file {} --json {}", lens_command(tiny, "unused", dir / "b.html"),
                                     quoted((dir / "prompt.txt").string()), quoted((dir / "b.json").string()));
  fails_with(from_file, "excludes --prompt");
  const auto base = fmt::format("{} --model {} --tokenizer {} --threads 1 --out {}", quoted(BAUKIT_LENS_EXE),
                                quoted(tiny.string()), quoted(tiny.string()), quoted((dir / "b.html").string()));
  REQUIRE(run(fmt::format("{} --prompt-file {} --json {}", base, quoted((dir / "prompt.txt").string()),
                          quoted((dir / "b.json").string())))
              .status == 0);
  CHECK(read_json(dir / "b.json")["lens"] == expected["lens"]);
  REQUIRE(run(fmt::format("{} --prompt-file - --json {} < {}", base, quoted((dir / "c.json").string()),
                          quoted((dir / "prompt.txt").string())))
              .status == 0);
  CHECK(read_json(dir / "c.json")["lens"] == expected["lens"]);
  std::string huge;
  while (huge.size() < 200'000) huge += "The Space Needle, 東京 🙂; ";
  write_bytes(dir / "huge.txt", huge + prompt);
  REQUIRE(run(fmt::format("{} --prompt-file {} --truncate --json {}", base, quoted((dir / "huge.txt").string()),
                          quoted((dir / "d.json").string())))
              .status == 0);
  CHECK(read_json(dir / "d.json")["ids"].size() == 64);  // gpt2-tiny's n_positions
  fails_with(fmt::format("{} --prompt-file {}", base, quoted((dir / "nowhere.txt").string())), "nowhere.txt");
  fails_with(lens_command(tiny, "x", dir / "e.html", "--target ''"), "--target: the token is empty");

  // Devices and FIFOs are written through and never replaced; a full device is an error naming it.
  const auto null = char_device(dir, "null", 3), full = char_device(dir, "full", 7);
  CHECK(run(lens_command(tiny, "x", null, "--json " + quoted(null.string()))).status == 0);
  CHECK(is_char_device(null));
  // --json /dev/stdout into a pipe: the JSON comes out of the pipe.
  const auto piped = run(lens_command(tiny, "x", null, "--json /dev/stdout") + " 2>/dev/null | head -c 2");
  CHECK(piped.status == 0);
  CHECK(piped.output == "{\"");  // the JSON alone: the notes went to stderr
  // The same beside a page written to a file (a pipe's /dev/stdout has no canonical path to compare with it).
  const auto beside_page = run("(" + lens_command(tiny, "x", dir / "beside.html", "--json /dev/stdout") +
                               " 2>/dev/null | cat > " + quoted((dir / "beside.json").string()) + ")");
  CHECK(beside_page.status == 0);
  CHECK(read_json(dir / "beside.json")["ids"].size() == 1);
  CHECK(fs::exists(dir / "beside.html"));
  fails_with(lens_command(tiny, "x", dir / "same.html", "--json " + quoted((dir / "same.html").string())),
             "--out and --json both name");
  write_bytes(dir / "kept.html", "previous page");
  fails_with(lens_command(tiny, "x", dir / "kept.html", "--json " + quoted(full.string())), "No space left");
  CHECK(is_char_device(full));
  CHECK(read_bytes(dir / "kept.html") == "previous page");  // the page waits for the JSON: both or neither
  // An output into a missing folder fails before any work, naming the folder.
  fails_with(lens_command(tiny, "x", dir / "kept.html", "--json " + quoted((dir / "missing" / "a.json").string())),
             "the folder '" + (dir / "missing").string() + "' does not exist");
  CHECK(read_bytes(dir / "kept.html") == "previous page");
  make_fifo(dir / "pipe");
  fails_with(lens_command(tiny, "x", dir / "pipe"), "a FIFO that nothing reads");
  CHECK(fs::is_fifo(dir / "pipe"));
  fails_with(lens_command(tiny, "x", dir), "is a directory");

  // A tokenizer of another model: a vocab.json id beyond the model's vocabulary is named with the file and size.
  fs::create_directories(dir / "other-tokenizer");
  auto vocab = read_json(tiny / "vocab.json");
  vocab["\u0120located"] = 60000;  // a token of the default prompt, moved beyond the model's 50257 rows
  write_bytes(dir / "other-tokenizer" / "vocab.json", vocab.dump());
  fs::copy_file(tiny / "merges.txt", dir / "other-tokenizer" / "merges.txt");
  fails_with(fmt::format("{} --model {} --tokenizer {} --out {}", quoted(BAUKIT_LENS_EXE), quoted(tiny.string()),
                         quoted((dir / "other-tokenizer").string()), quoted((dir / "f.html").string())),
             "vocab.json: token '\u0120located' has the id 60000, beyond the model's vocab_size of 50257");
  // A FIFO as vocab.json fails at once instead of blocking.
  fs::create_directories(dir / "fifo-tokenizer");
  fs::copy_file(tiny / "merges.txt", dir / "fifo-tokenizer" / "merges.txt");
  make_fifo(dir / "fifo-tokenizer" / "vocab.json");
  fails_with(
      fmt::format("timeout 60 {} --model {} --tokenizer {} --out {}", quoted(BAUKIT_LENS_EXE), quoted(tiny.string()),
                  quoted((dir / "fifo-tokenizer").string()), quoted((dir / "g.html").string())),
      "vocab.json: is a FIFO (named pipe), not a regular file");
  fs::create_directories(dir / "no-tokenizer");
  fails_with(fmt::format("{} --model {} --tokenizer {} --out {}", quoted(BAUKIT_LENS_EXE), quoted(tiny.string()),
                         quoted((dir / "no-tokenizer").string()), quoted((dir / "g.html").string())),
             "no vocab.json; give --tokenizer DIR");
}

TEST_CASE("Lens pages from assembled results: shapes checked, absent views not offered, unknown ids as placeholders",
          "[lens][page][errors]") {
  const auto dir = scratch("lens-assembled");
  auto model = baukit::models::from_pretrained(kFixtures / "gpt2-tiny");
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  const auto ids = tokenizer.encode(". The Space Needle is located in");
  const auto result = baukit::logit_lens(*model, ids);

  // decode_states labels its rows, so its grid makes a page.
  torch::NoGradGuard no_grad;
  auto decoder = baukit::make_decoder(*model);
  torch::Tensor logits;
  const auto stream = baukit::residual_stream(*model, ids, false, nullptr, &logits);
  const auto grid =
      baukit::decode_states(decoder, stream, torch::softmax(logits[0], -1), baukit::LensOptions().topk(3));
  CHECK(grid.rows.size() == grid.cells.size());
  baukit::LensResult assembled{ids, 3, -1, grid, {}};
  CHECK_NOTHROW(baukit::save_lens_page(dir / "assembled.html", assembled, tokenizer));

  // A grid whose labels do not match its rows is refused, not read out of bounds.
  auto unlabeled = result;
  unlabeled.lens.rows.clear();
  CHECK_THROWS_WITH(baukit::save_lens_page(dir / "bad.html", unlabeled, tokenizer),
                    Catch::Contains("lens view has 3 rows of cells but 0 row labels"));
  CHECK_THROWS_WITH(baukit::to_json(unlabeled, tokenizer), Catch::Contains("0 row labels"));
  auto short_row = result;
  short_row.delta_lens.cells[1].pop_back();
  CHECK_THROWS_WITH(baukit::lens_page_html(short_row, tokenizer), Catch::Contains("row 1"));
  CHECK_FALSE(fs::exists(dir / "bad.html"));

  // Only the views present are offered; a link to an absent one opens what there is.
  const auto html = baukit::lens_page_html(assembled, tokenizer, baukit::LensPageOptions().deltas(true));
  CHECK(html.find("value=\"delta_lens\"") == std::string::npos);
  const auto dom = dump_dom(dir / "assembled.html", "#view=delta_lens&stat=kl");
  CHECK(dom.find("data-lens-ready=\"lens kl\"") != std::string::npos);

  // Ids beyond the tokenizer (a padded vocabulary) show as a placeholder in the page and the JSON.
  auto padded = result;
  padded.lens.cells[2][0].tokens[0] = 50300;
  CHECK(baukit::lens_page_html(padded, tokenizer)
            .find("&lt;id\u2423"
                  "50300&gt;") != std::string::npos);  // ␣: a space
  CHECK(baukit::to_json(padded, tokenizer)["lens"]["token_strings"][2][0][0] == "<id 50300>");
  CHECK(tokenizer.token_text(50300) == "<id 50300>");
}

TEST_CASE("baukit-lens --tokenizer takes a tokenizer.json folder: the same lens as GPT-2's vocab.json and merges.txt",
          "[lens][tokenizer][vocabularies]") {
  const auto dir = scratch("lens-tokenizer-json");
  const auto json_dir = fs::path(BAUKIT_BINARY_DIR) / "tokenizers" / "vocabularies" / "gpt2" / "json";
  if (!fs::exists(json_dir / "tokenizer.json"))
    FAIL(json_dir.string() << " is missing: run `ctest -R tokenizers_setup`");
  const auto tiny = kFixtures / "gpt2-tiny";
  auto lens = [&](const fs::path& tokenizer, const std::string& name) {
    const auto command =
        fmt::format("{} --model {} --tokenizer {} --prompt {} --out {} --json {} --threads 1", quoted(BAUKIT_LENS_EXE),
                    quoted(tiny.string()), quoted(tokenizer.string()), quoted(". The Space Needle is located in"),
                    quoted((dir / (name + ".html")).string()), quoted((dir / (name + ".json")).string()));
    const auto result = run(command);
    INFO(result.output);
    REQUIRE(result.status == 0);
    return read_json(dir / (name + ".json"));
  };
  const auto from_files = lens(tiny, "files");
  const auto from_json = lens(json_dir, "json");
  CHECK(from_json["ids"] == from_files["ids"]);
  CHECK(from_json["prompt_tokens"] == from_files["prompt_tokens"]);
  CHECK(from_json == from_files);  // every number and token string
}

static bool prompts_add_bos(const nlohmann::json& reference) {
  for (const auto& prompt : reference["prompts"])
    if (prompt["ids"].front() != 1) return false;
  return true;
}

TEST_CASE("baukit-lens --json on the Llama, Gemma and GPT-NeoX fixtures equals the reference lens and delta lens",
          "[lens][command][llama][gemma][neox]") {
  const auto dir = scratch("lens-families");
  // Written by the ctest fixtures llama_fixtures_setup and families_fixtures_setup.
  int64_t checked = 0;
  for (const auto& [data, fixtures] : {std::pair{kData / "llama", fs::path(BAUKIT_BINARY_DIR) / "llama-fixtures"},
                                       std::pair{kData / "families", fs::path(BAUKIT_BINARY_DIR) / "families-fixtures"}})
  for (const auto spec = read_json(data / "fixtures.json"); const auto& fixture : spec["fixtures"]) {  // spec lives on
    ++checked;
    const auto name = fixture["name"].get<std::string>();
    const auto model = fixtures / name;
    REQUIRE(fs::exists(model / "tokenizer.json"));
    const auto reference = read_json(data / (name + ".json"));
    for (const auto& prompt : reference["prompts"]) {
      const auto text = prompt["text"].get<std::string>();
      INFO(name << ": " << text);
      const auto result = run(fmt::format("{} --model {} --prompt {} --out {} --json {} --threads 1 --device {}",
                                          quoted(BAUKIT_LENS_EXE), quoted(model.string()), quoted(text),
                                          quoted((dir / "lens.html").string()), quoted((dir / "lens.json").string()),
                                          baukit_tests::test_device_name()));
      REQUIRE(result.status == 0);
      const auto json = read_json(dir / "lens.json");
      CHECK(json["ids"] == prompt["ids"]);
      check_view(json["lens"], prompt["lens"]);
      check_view(json["delta_lens"], prompt["delta_lens"]);
    }
    // The BOS the tokenizer adds (Llama 2's and Mistral's do; the Llama 3 and Qwen files installed add none) is the
    // page's first column, named as the vocabulary writes it.
    if (prompts_add_bos(reference))
      CHECK(read_bytes(dir / "lens.html").find(R"(title="Token 0" class="lens-cell lens-head">&lt;s&gt;<)") !=
            std::string::npos);
  }
  CHECK(checked == 13);  // 5 Llama-architecture fixtures, 8 of Gemma and GPT-NeoX
}

TEST_CASE("A batched lens (prompts of different lengths, left-padded, one forward) equals each prompt's own lens",
          "[lens][batch]") {
  const std::vector<std::string> texts = {"Paris is the capital of", ". The Space Needle is located in", "Hi",
                                          "In his NBA career, KC Jones played"};
  const auto llama = fs::path(BAUKIT_BINARY_DIR) / "llama-fixtures";  // written by llama_fixtures_setup
  const auto families = fs::path(BAUKIT_BINARY_DIR) / "families-fixtures";  // written by families_fixtures_setup
  for (const auto& dir : {kFixtures / "gpt2-tiny", llama / "mistral-tiny-sharded", llama / "qwen3-tiny",
                          families / "gemma2-tiny-bf16", families / "gemma3-tiny-sharded", families / "pythia-tiny-f16",
                          families / "neox-sequential-tiny"}) {
    INFO(dir);
    REQUIRE(fs::exists(dir / "config.json"));
    auto model = baukit::models::from_pretrained(dir);
    const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
    // Padded batch encoding: each row is its text's ids after zeros, the mask marks them.
    const auto batch = tokenizer.encode_batch(texts, {}, 0);
    REQUIRE(batch.ids.size() == texts.size());
    std::size_t longest = 0;
    for (const auto& ids : batch.ids) longest = std::max(longest, ids.size());
    for (std::size_t b = 0; b < texts.size(); ++b) {
      CHECK(batch.ids[b] == tokenizer.encode(texts[b]));
      REQUIRE(batch.input_ids[b].size() == longest);
      const auto padding = longest - batch.ids[b].size();
      CHECK(std::vector<int64_t>(batch.input_ids[b].begin() + static_cast<std::ptrdiff_t>(padding),
                                 batch.input_ids[b].end()) == batch.ids[b]);
      CHECK(std::count(batch.attention_mask[b].begin(), batch.attention_mask[b].end(), 0) ==
            static_cast<std::ptrdiff_t>(padding));
      CHECK(batch.attention_mask[b].back() == 1);
    }
    CHECK(std::adjacent_find(batch.ids.begin(), batch.ids.end(), [](const auto& a, const auto& b) {
            return a.size() == b.size();
          }) == batch.ids.end());  // the lengths differ, so there is padding to get right
    const bool parallel = model->lens_layout().attention.empty();  // Pythia: no point after attention alone
    if (parallel)
      CHECK_THROWS_WITH(baukit::logit_lens(*model, batch.ids[0], baukit::LensOptions().attention_rows(true)),
                        Catch::Contains("no residual stream point after attention alone"));
    const auto options = baukit::LensOptions().topk(5).attention_rows(!parallel);
    const auto results = baukit::logit_lens_batch(*model, batch.ids, options);
    REQUIRE(results.size() == texts.size());
    for (std::size_t b = 0; b < texts.size(); ++b) {
      INFO(texts[b]);
      const auto single = baukit::logit_lens(*model, batch.ids[b], options);
      CHECK(results[b].ids == single.ids);
      for (baukit::LensGrid baukit::LensResult::*grids : {&baukit::LensResult::lens, &baukit::LensResult::delta_lens}) {
        const auto &got = results[b].*grids, &want = single.*grids;
        REQUIRE(got.rows == want.rows);
        REQUIRE(got.cells.size() == want.cells.size());
        for (std::size_t r = 0; r < got.cells.size(); ++r)
          for (std::size_t t = 0; t < got.cells[r].size(); ++t) {
            check_same_cell(got.cells[r][t], want.cells[r][t], 1e-5, 1e-4);
            CHECK(got.cells[r][t].magnitude == Approx(want.cells[r][t].magnitude).margin(1e-5));
          }
      }
    }
  }
  CHECK_THROWS_WITH(baukit::logit_lens_batch(*baukit::models::from_pretrained(kFixtures / "gpt2-tiny"), {{464}, {}}),
                    Catch::Contains("prompt 1 has no tokens"));
}

TEST_CASE("The lens over generated text (key/value cache, traced per step) equals the lens of the whole text at once",
          "[lens][generate]") {
  const auto llama = fs::path(BAUKIT_BINARY_DIR) / "llama-fixtures";
  const auto families = fs::path(BAUKIT_BINARY_DIR) / "families-fixtures";
  for (const auto& dir : {kFixtures / "gpt2-tiny", kFixtures / "gptj-tiny-f16-bin", llama / "mistral-tiny-sharded",
                          llama / "qwen3-tiny", families / "gemma2-tiny-bf16", families / "gemma3-tiny-sharded",
                          families / "pythia-tiny-f16"}) {
    INFO(dir);
    REQUIRE(fs::exists(dir / "config.json"));
    auto model = baukit::models::from_pretrained(dir);
    const bool own_tokenizer = fs::exists(dir / "vocab.json") || fs::exists(dir / "tokenizer.json");
    const auto tokenizer = baukit::Tokenizer::from_pretrained(own_tokenizer ? dir : kFixtures / "gpt2-tiny");
    const auto prompt = tokenizer.encode("Paris is the capital of");
    const bool parallel = model->lens_layout().attention.empty();
    const auto options = baukit::LensOptions().topk(5).attention_rows(!parallel);
    const int64_t n = 9;
    std::vector<int64_t> reported;
    const auto result = baukit::generate_lens(*model, prompt, n, options, {}, [&](int64_t done, int64_t total) {
      reported.push_back(done);
      CHECK(total == n);
    });
    CHECK(reported == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
    REQUIRE(result.generated == static_cast<std::size_t>(n));
    REQUIRE(result.ids.size() == prompt.size() + static_cast<std::size_t>(n));
    CHECK(std::equal(prompt.begin(), prompt.end(), result.ids.begin()));
    const std::vector<int64_t> continuation(result.ids.begin() + static_cast<std::ptrdiff_t>(prompt.size()),
                                            result.ids.end());
    CHECK(continuation == baukit::generate_ids(*model, {prompt}, n).front());  // the same greedy tokens
    const auto whole = baukit::logit_lens(*model, result.ids, options);
    for (baukit::LensGrid baukit::LensResult::*grids : {&baukit::LensResult::lens, &baukit::LensResult::delta_lens}) {
      const auto &got = result.*grids, &want = whole.*grids;
      REQUIRE(got.rows == want.rows);
      REQUIRE(got.cells.size() == want.cells.size());
      for (std::size_t r = 0; r < got.cells.size(); ++r) {
        REQUIRE(got.cells[r].size() == result.ids.size());
        for (std::size_t t = 0; t < got.cells[r].size(); ++t) {
          INFO("row " << got.rows[r] << ", position " << t);
          check_same_cell(got.cells[r][t], want.cells[r][t], 1e-5, 1e-4);
          CHECK(got.cells[r][t].magnitude == Approx(want.cells[r][t].magnitude).margin(1e-5));
        }
      }
    }
    // A stop token ends the continuation there, kept; nothing to generate is the prompt's own lens.
    const auto stop = continuation[3];
    const auto stopped = baukit::generate_lens(*model, prompt, n, options, baukit::GenerateOptions().stop_token(stop));
    const auto first = static_cast<std::size_t>(std::find(continuation.begin(), continuation.end(), stop) -
                                                continuation.begin());
    CHECK(stopped.generated == first + 1);
    CHECK(stopped.ids.back() == stop);
    CHECK(stopped.lens.cells[0].size() == stopped.ids.size());
    const auto none = baukit::generate_lens(*model, prompt, 0, options);
    CHECK(none.generated == 0);
    CHECK(none.ids == prompt);
    CHECK(none.lens.cells.back().back().tokens == baukit::logit_lens(*model, prompt, options).lens.cells.back().back().tokens);
    CHECK_THROWS_WITH(baukit::generate_lens(*model, prompt, model->max_positions(), options),
                      Catch::Contains("exceed the model's " + std::to_string(model->max_positions()) + " positions"));
  }
  auto gpt2 = baukit::models::from_pretrained(kFixtures / "gpt2-tiny");
  CHECK_THROWS_WITH(baukit::generate_lens(*gpt2, {}, 3), Catch::Contains("the prompt has no tokens"));
  CHECK_THROWS_WITH(baukit::generate_lens(*gpt2, {464}, -1), Catch::Contains("-1 tokens to generate"));
  // Nothing stays attached: a forward after it runs untraced, and a callback that throws stops the work.
  CHECK_THROWS_WITH(baukit::generate_lens(*gpt2, {464, 318}, 5, {}, {},
                                          [](int64_t done, int64_t) {
                                            if (done == 2) throw std::runtime_error("stopped by the caller");
                                          }),
                    Catch::Contains("stopped by the caller"));
  for (const auto& module : gpt2->module().modules())
    if (const auto* hookable = dynamic_cast<const baukit::Hookable*>(module.get()))
      CHECK(hookable->num_forward_hooks() == 0);
}

TEST_CASE("Lenses compared: the KL per cell and tracked tokens' probabilities and ranks equal a direct decode",
          "[lens][compare]") {
  const auto families = fs::path(BAUKIT_BINARY_DIR) / "families-fixtures";
  for (const auto& dir : {kFixtures / "gpt2-tiny", families / "gemma2-tiny-bf16"}) {  // Gemma: soft-capped logits
    INFO(dir);
    auto model = baukit::models::from_pretrained(dir);
    const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
    const auto a = baukit::residual_stream(*model, tokenizer.encode("Paris is the capital of")).slice(0, 1);
    const auto b = baukit::residual_stream(*model, tokenizer.encode("The city of Rome is the capital of")).slice(0, 1);
    auto decoder = baukit::make_decoder(*model);
    const int64_t positions = std::min(a.size(1), b.size(1));
    const auto pa = decoder->forward(a).slice(1, 0, positions).to(torch::kFloat64);
    const auto pb = decoder->forward(b).slice(1, 0, positions).to(torch::kFloat64);
    const auto direct = (torch::xlogy(pa, pa) - pa * torch::log(pb)).sum(-1);
    const auto kl = baukit::lens_divergence(*model, a, b, /*chunk_bytes=*/1);  // one row per chunk
    REQUIRE(kl.sizes() == direct.sizes());
    CHECK((kl.to(torch::kFloat64) - direct).abs().max().item<double>() < 1e-4);
    CHECK(baukit::lens_divergence(*model, a, a).max().item<double>() < 1e-5);
    const std::vector<int64_t> tokens = {tokenizer.encode(" France").front(), 7, 3};
    const auto tracked = baukit::track_tokens(*model, a, tokens);
    const auto probs = decoder->forward(a);  // [rows, positions, vocab]
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const auto p = probs.select(-1, tokens[i]);
      CHECK((tracked.probs[static_cast<int64_t>(i)] - p).abs().max().item<double>() < 1e-5);
      const auto ranks = (probs > p.unsqueeze(-1)).sum(-1) + 1;
      // Equal but where float rounding of the softmax ties neighbours (a place or two in the whole vocabulary).
      CHECK((tracked.ranks[static_cast<int64_t>(i)] - ranks).abs().max().item<int64_t>() <= 2);
    }
    const auto lens = baukit::logit_lens(*model, tokenizer.encode("Paris is the capital of"));
    const auto top = lens.lens.cells.back().back().tokens.front();
    CHECK(baukit::track_tokens(*model, a, {top}).ranks[0][-1][-1].item<int64_t>() == 1);
  }
  auto gpt2 = baukit::models::from_pretrained(kFixtures / "gpt2-tiny");
  const auto states = torch::zeros({3, 2, 8});
  CHECK_THROWS_WITH(baukit::lens_divergence(*gpt2, states, torch::zeros({2, 2, 8})),
                    Catch::Contains("must be [rows, positions, width] with the same rows and width"));
  CHECK_THROWS_WITH(baukit::track_tokens(*gpt2, states, {gpt2->vocab_size()}),
                    Catch::Contains("is outside the vocabulary of"));
}

TEST_CASE("baukit-lens --generate: the continuation in the JSON and on the page, and its limit named",
          "[lens][command][generate]") {
  const auto dir = scratch("lens-generate");
  const auto json_path = dir / "lens.json";
  const auto result = run(lens_command(kFixtures / "gpt2-tiny", "Paris is the capital of", dir / "lens.html",
                                       "--generate 6 --json " + quoted(json_path.string())));
  INFO(result.output);
  REQUIRE(result.status == 0);
  CHECK(result.output.find("generated 6 tokens in") != std::string::npos);
  const auto json = read_json(json_path);
  CHECK(json["generated"] == 6);
  CHECK(json["prompt"] == "Paris is the capital of");
  auto model = baukit::models::from_pretrained(kFixtures / "gpt2-tiny");
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny");
  const auto expected = baukit::generate_lens(*model, tokenizer.encode("Paris is the capital of"), 6);
  CHECK(json["ids"].get<std::vector<int64_t>>() == expected.ids);
  CHECK(json["lens"]["tokens"].size() == expected.lens.cells.size());
  CHECK(json["lens"]["tokens"][0].size() == expected.ids.size());
  const auto page = read_bytes(dir / "lens.html");
  CHECK(count(page, "(generated)") == 2 * 6);  // header rows above and below
  CHECK(page.find("Generated: <span id=\"generated\">") != std::string::npos);
  fails_with(lens_command(kFixtures / "gpt2-tiny", "Paris", dir / "lens.html", "--generate 5000"),
             "--generate: 5000 tokens, but the model takes at most");
}

namespace {

const fs::path kDefaultModel = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";

// Runs tests/data/learned_lens/lenses.py under Debian's python3-torch; the test fails if that does.
std::string learned_lens_script(const std::string& args) {
  const std::string python = BAUKIT_TORCH_PYTHON;
  INFO("needs Debian's python3-torch at " << python << " (scripts/install-deps.sh --test installs it)");
  REQUIRE(python.find("NOTFOUND") == std::string::npos);
  const auto result =
      run(fmt::format("{} {} {}", quoted(python), quoted((kData / "learned_lens" / "lenses.py").string()), args));
  INFO(result.output);
  REQUIRE(result.status == 0);
  return result.output;
}

std::map<std::string, torch::Tensor> read_safetensors(const fs::path& path) {
  baukit::io::SafetensorsFile file(path);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : file.entries()) tensors.emplace(entry.name, file.tensor(entry).clone());
  return tensors;
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32) - b.to(torch::kFloat32)).abs().max().item<double>();
}

}  // namespace

TEST_CASE(
    "Learned lenses: the published tuned-lens and Jacobian-lens files load and decode as Python decodes "
    "them, and a tuned lens saved in C++ loads in Python",
    "[lens][learned]") {
  const auto dir = scratch("learned");
  for (const auto* dtype : {"float32", "float16"})
    learned_lens_script(fmt::format("write-tuned {} 128 6 1 {}", quoted((dir / dtype).string()), dtype));
  learned_lens_script(fmt::format("write-jacobian {} 128 6 2", quoted((dir / "jacobian.pt").string())));

  auto model = baukit::models::from_pretrained(kDefaultModel);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  const auto ids = tokenizer.encode(". The Space Needle is located in");
  const auto stream = baukit::residual_stream(*model, ids);  // [7, tokens, 128]
  baukit::io::save_safetensors(dir / "stream.safetensors", {{"stream", stream}});
  const auto jacobian = baukit::load_jacobian_lens(dir / "jacobian.pt");
  CHECK(jacobian->source_layers() == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(jacobian->n_prompts() == 100);
  CHECK(jacobian->matrix(0).scalar_type() == torch::kFloat16);  // kept as stored
  for (const auto* dtype : {"float32", "float16"}) {
    INFO(dtype);
    const auto tuned = baukit::load_tuned_lens(dir / dtype);
    CHECK(tuned->config().num_hidden_layers == 6);
    learned_lens_script(fmt::format("decode {} {} {} {} {}", quoted((dir / "stream.safetensors").string()),
                                    quoted((kDefaultModel / "model.safetensors").string()),
                                    quoted((dir / dtype).string()), quoted((dir / "jacobian.pt").string()),
                                    quoted((dir / "python.safetensors").string())));
    const auto expected = read_safetensors(dir / "python.safetensors");
    // Each layer's decoder (translator, ln_f, lm_head, softmax) gives Python's distribution.
    torch::NoGradGuard no_grad;
    for (int64_t l = 0; l < 6; ++l) {
      INFO("layer " << l);
      auto tuned_decoder = l < 5 ? baukit::make_decoder(*model, tuned.ptr(), l) : baukit::make_decoder(*model);
      auto jacobian_decoder = l < 5 ? baukit::make_decoder(*model, jacobian, l) : baukit::make_decoder(*model);
      CHECK(max_difference(tuned_decoder->forward(stream[l + 1]), expected.at(fmt::format("tuned.{}", l))) < 1e-5);
      CHECK(max_difference(jacobian_decoder->forward(stream[l + 1]), expected.at(fmt::format("jacobian.{}", l))) <
            1e-5);
    }
    // In the lens: one grid each, whose cells are those distributions' top-k.
    const auto result =
        baukit::logit_lens(*model, ids, baukit::LensOptions().topk(3).learned_lenses({tuned.ptr(), jacobian}));
    REQUIRE(result.learned.size() == 2);
    CHECK(result.learned[0].name == "tuned_lens");
    CHECK(result.learned[1].name == "jacobian_lens");
    for (std::size_t v = 0; v < 2; ++v)
      for (int64_t l = 0; l < 6; ++l)
        for (std::size_t t = 0; t < ids.size(); ++t) {
          const auto probs =
              expected.at(fmt::format("{}.{}", v == 0 ? "tuned" : "jacobian", l))[static_cast<int64_t>(t)];
          const auto [top, top_ids] = probs.topk(3);
          const auto& cell = result.learned[v].grid.cells[static_cast<std::size_t>(l)][t];
          CHECK(cell.probs[0] == Approx(top[0].item<float>()).margin(1e-4));  // the lens decode's own kernels
          CHECK((cell.tokens[0] == top_ids[0].item<int64_t>() || top[0].item<float>() - top[1].item<float>() < 1e-4));
        }
    // The last layer is the model's output in every view.
    for (std::size_t t = 0; t < ids.size(); ++t)
      CHECK(result.learned[0].grid.cells[5][t].tokens == result.lens.cells[5][t].tokens);
  }
  // A new tuned lens is zero: exactly the logit lens.
  const auto zero = baukit::make_tuned_lens(*model, 128);
  const auto plain = baukit::logit_lens(*model, ids, baukit::LensOptions().learned_lenses({zero.ptr()}));
  for (std::size_t l = 0; l < 6; ++l)
    for (std::size_t t = 0; t < ids.size(); ++t) {
      CHECK(plain.learned[0].grid.cells[l][t].tokens == plain.lens.cells[l][t].tokens);
      CHECK(plain.learned[0].grid.cells[l][t].probs == plain.lens.cells[l][t].probs);
    }
  // Saved by C++ (after a change), loaded by Python as tuned-lens loads it, with the same parameters.
  auto tuned = baukit::load_tuned_lens(dir / "float16");
  {
    torch::NoGradGuard no_grad;
    tuned->translator(2)->weight[0][0] = 0.25;
  }
  baukit::save_tuned_lens(*tuned, dir / "saved");
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& item : tuned->named_parameters()) parameters.emplace_back(item.key(), item.value());
  baukit::io::save_safetensors(dir / "expected.safetensors", parameters);
  CHECK(learned_lens_script(fmt::format("check-tuned {} {}", quoted((dir / "saved").string()),
                                        quoted((dir / "expected.safetensors").string())))
            .find("ok: 12 tensors of a 6-layer lens") != std::string::npos);
  // ... and by C++ again, equal.
  const auto again = baukit::load_tuned_lens(dir / "saved");
  for (std::size_t i = 0; i < parameters.size(); ++i) CHECK(torch::equal(again->parameters()[i], parameters[i].second));
}

TEST_CASE("Learned lenses: files that do not fit name the file, the key and what was expected", "[lens][learned]") {
  const auto dir = scratch("learned-errors");
  learned_lens_script(fmt::format("write-tuned {} 128 6 1 float32", quoted((dir / "good").string())));
  learned_lens_script(fmt::format("write-tuned {} 64 6 1 float32", quoted((dir / "narrow").string())));
  learned_lens_script(fmt::format("write-jacobian {} 64 6 2", quoted((dir / "narrow.pt").string())));
  auto model = baukit::models::from_pretrained(kDefaultModel);
  // A config that disagrees with its params.pt.
  auto edited = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const auto to = dir / name;
    fs::create_directories(to);
    fs::copy_file(dir / "good" / "params.pt", to / "params.pt", fs::copy_options::overwrite_existing);
    auto config = read_json(dir / "good" / "config.json");
    edit(config);
    write_bytes(to / "config.json", config.dump());
    return to;
  };
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("seven", [](auto& c) { c["num_hidden_layers"] = 7; })),
                    Catch::Contains("params.pt: no '6.weight'") && Catch::Contains("[missing]"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("five", [](auto& c) { c["num_hidden_layers"] = 5; })),
                    Catch::Contains("'5.bias' is not a translator parameter") && Catch::Contains("[unexpected]"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("nobias", [](auto& c) { c["bias"] = false; })),
                    Catch::Contains("'0.bias' is not a translator parameter"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("wide", [](auto& c) { c["d_model"] = 256; })),
                    Catch::Contains("'0.weight' has shape [128, 128], but d_model 256 needs [256, 256] [shape]"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("nowidth", [](auto& c) { c.erase("d_model"); })),
                    Catch::Contains("config.json: 'd_model' is missing"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(edited("type", [](auto& c) { c["lens_type"] = "logit_lens"; })),
                    Catch::Contains("only 'linear_tuned_lens' is supported"));
  CHECK_THROWS_WITH(baukit::load_tuned_lens(dir / "missing"), Catch::Contains("config.json"));
  // Lenses of another model: refused before any work, by the lens and by the command.
  const auto ids = std::vector<int64_t>{464, 3290};
  CHECK_THROWS_WITH(
      baukit::logit_lens(*model, ids,
                         baukit::LensOptions().learned_lenses({baukit::load_tuned_lens(dir / "narrow").ptr()})),
      Catch::Contains("made for 6 layers of width 64") && Catch::Contains("6 layers of width 128"));
  CHECK_THROWS_WITH(
      baukit::logit_lens(*model, ids,
                         baukit::LensOptions().learned_lenses({baukit::load_jacobian_lens(dir / "narrow.pt")})),
      Catch::Contains("narrow.pt: d_model 64, but the model is 128 wide"));
  CHECK_THROWS_WITH(baukit::logit_lens(*model, ids,
                                       baukit::LensOptions().attention_rows(true).learned_lenses(
                                           {baukit::load_tuned_lens(dir / "good").ptr()})),
                    Catch::Contains("translates block outputs only"));
  // Two lenses of one name would be one view; a name the JSON uses itself would overwrite it.
  const auto good = baukit::load_tuned_lens(dir / "good").ptr();
  CHECK_THROWS_WITH(baukit::logit_lens(*model, ids, baukit::LensOptions().learned_lenses({good, good})),
                    Catch::Contains("two learned lenses are named 'tuned_lens'"));
  auto result = baukit::logit_lens(*model, ids, baukit::LensOptions().learned_lenses({good}));
  result.learned[0].name = "ids";
  CHECK_THROWS_WITH(baukit::to_json(result, baukit::Tokenizer::from_pretrained(kDefaultModel)),
                    Catch::Contains("a learned lens is named 'ids'"));
  const auto page = dir / "page.html";
  fails_with(lens_command(kDefaultModel, "Hello", page, "--tuned-lens " + quoted((dir / "narrow").string())),
             "made for 6 layers of width 64");
  fails_with(lens_command(kDefaultModel, "Hello", page, "--jacobian-lens " + quoted((dir / "narrow.pt").string())),
             "d_model 64, but the model is 128 wide");
  CHECK(!fs::exists(page));
  // A Jacobian lens missing a layer the grid needs.
  {
    const std::string python = BAUKIT_TORCH_PYTHON;
    REQUIRE(run(fmt::format("{} -c \"import torch; torch.save({{'J': {{0: torch.eye(128).half()}}, 'n_prompts': 1, "
                            "'d_model': 128}}, '{}')\"",
                            quoted(python), (dir / "one.pt").string()))
                .status == 0);
    CHECK_THROWS_WITH(
        baukit::logit_lens(*model, ids,
                           baukit::LensOptions().learned_lenses({baukit::load_jacobian_lens(dir / "one.pt")})),
        Catch::Contains("no matrix for layer 1 (it has 0)"));
  }
}

TEST_CASE("baukit-lens --tuned-lens and --jacobian-lens: their views in the JSON and on the page, in Chromium",
          "[lens][learned][browser]") {
  const auto dir = scratch("learned-page");
  learned_lens_script(fmt::format("write-tuned {} 128 6 1 float32", quoted((dir / "tuned").string())));
  learned_lens_script(fmt::format("write-jacobian {} 128 6 2", quoted((dir / "jacobian.pt").string())));
  const auto page = dir / "lens.html", json_path = dir / "lens.json";
  const auto result =
      run(lens_command(kDefaultModel, ". The Space Needle is located in", page,
                       fmt::format("--json {} --tuned-lens {} --jacobian-lens {}", quoted(json_path.string()),
                                   quoted((dir / "tuned").string()), quoted((dir / "jacobian.pt").string()))));
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto json = read_json(json_path);
  REQUIRE(json["learned_lenses"].size() == 2);
  CHECK(json["learned_lenses"][0]["name"] == "tuned_lens");
  CHECK(json["learned_lenses"][1]["label"] == "Jacobian lens");
  for (const auto* view : {"tuned_lens", "jacobian_lens"}) {
    CHECK(json[view]["rows"] == json["lens"]["rows"]);
    CHECK(json[view]["tokens"].size() == 6);
    CHECK(json[view]["tokens"][5] == json["lens"]["tokens"][5]);  // the model's output in both
  }
  CHECK(json["tuned_lens"]["tokens"] != json["lens"]["tokens"]);  // the translators change what layers show
  const auto text = read_bytes(page);
  CHECK(text.find("<option value=\"tuned_lens\">tuned lens") != std::string::npos);
  CHECK(text.find("<option value=\"jacobian_lens\">Jacobian lens") != std::string::npos);
  const auto dom =
      dump_dom(page, "#view=tuned_lens&stat=kl", fs::path(BAUKIT_BINARY_DIR) / "tuned-lens-screenshot.png");
  CHECK(dom.find("data-lens-ready=\"tuned_lens kl\"") != std::string::npos);
  const auto first = baukit::visible_token(json["tuned_lens"]["token_strings"][0][1][0].get<std::string>());
  CHECK(dom.find("data-r=\"0\" data-t=\"1\">" + baukit::show::escape(first) + "<") != std::string::npos);
  CHECK(dump_dom(page, "#view=jacobian_lens").find("data-lens-ready=\"jacobian_lens prob\"") != std::string::npos);
}

TEST_CASE("The default model's committed tuned lens is closer to the final distribution than the logit lens at "
          "every layer but the last, on the held-out phrasings",
          "[lens][learned]") {
  auto model = baukit::models::from_pretrained(kDefaultModel);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  const auto lens = baukit::load_tuned_lens(kDefaultModel / "tuned-lens");
  CHECK(lens->config().base_model_name_or_path == "default");
  // The held-out text as train-tuned-lens evaluates it (README's table).
  const auto corpus = default_model::build_corpus(default_model::read_facts(kDefaultModel / "facts.tsv"));
  std::string held;
  for (const auto& h : corpus.held_out) held += (held.empty() ? "" : " ") + h.prompt.substr(2) + h.answer + ".";
  const auto test = baukit::token_windows(tokenizer.encode(held), 32);
  REQUIRE(test.size() == 12);
  const auto logit = baukit::mean_kl_per_layer(*model, test);
  const auto tuned = baukit::mean_kl_per_layer(*model, test, lens.ptr());
  REQUIRE(logit.size() == 6);
  for (std::size_t l = 0; l + 1 < logit.size(); ++l) {
    INFO("layer " << l << ": logit lens " << logit[l] << ", tuned lens " << tuned[l]);
    CHECK(tuned[l] < 0.5 * logit[l]);
  }
  CHECK(logit[0] == Approx(0.5585).margin(1e-4));  // the README's figures
  CHECK(tuned[0] == Approx(0.1892).margin(1e-4));
}

TEST_CASE("Training a tuned lens: lower KL than the logit lens, checkpoints that resume to the same lens",
          "[lens][learned][training]") {
  const auto dir = scratch("tuned-training");
  auto model = baukit::models::from_pretrained(kDefaultModel);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  const auto corpus = default_model::build_corpus(default_model::read_facts(kDefaultModel / "facts.tsv"));
  std::string text;
  for (const auto& sentence : corpus.train) text += sentence + " ";
  const auto windows = baukit::token_windows(tokenizer.encode(text), 16);
  REQUIRE(windows.size() > 40);
  CHECK(baukit::token_windows({1, 2, 3, 4, 5}, 2) == std::vector<std::vector<int64_t>>{{1, 2}, {3, 4}});
  const auto options =
      baukit::TunedLensTrainOptions().num_steps(6).tokens_per_step(64).batch_size(4).checkpoint_every(2);
  CHECK_THROWS_WITH(baukit::train_tuned_lens(*model, *baukit::make_tuned_lens(*model, 128), windows,
                                             baukit::TunedLensTrainOptions(options).tokens_per_step(60)),
                    Catch::Contains("tokens_per_step 60 is not a multiple of the window length 16"));

  // One run, uninterrupted.
  std::vector<bool> requires_grad;
  for (const auto& p : model->module().parameters()) requires_grad.push_back(p.requires_grad());
  auto whole = baukit::make_tuned_lens(*model, 128);
  std::vector<double> losses;
  const auto done = baukit::train_tuned_lens(*model, *whole, windows,
                                             baukit::TunedLensTrainOptions(options).checkpoint_dir(dir / "whole"),
                                             [&](const auto& p) { losses.push_back(p.loss); });
  CHECK(done.step == 6);
  CHECK(done.tokens == 6 * 64);
  REQUIRE(losses.size() == 6);
  CHECK(losses.back() < losses.front());
  std::vector<bool> after;
  for (const auto& p : model->module().parameters()) after.push_back(p.requires_grad());
  CHECK(after == requires_grad);  // the model's parameters are frozen during training only
  // The same run killed after step 3 (its last checkpoint: step 2), then resumed: the same lens.
  auto killed = baukit::make_tuned_lens(*model, 128);
  struct Killed {};
  CHECK_THROWS_AS(baukit::train_tuned_lens(*model, *killed, windows,
                                           baukit::TunedLensTrainOptions(options).checkpoint_dir(dir / "killed"),
                                           [](const auto& p) {
                                             if (p.step == 3) throw Killed{};
                                           }),
                  Killed);
  CHECK(read_bytes(dir / "killed" / "latest") == "step-000002\n");
  auto resumed = baukit::make_tuned_lens(*model, 128);
  bool was_resumed = false;
  baukit::train_tuned_lens(*model, *resumed, windows,
                           baukit::TunedLensTrainOptions(options).checkpoint_dir(dir / "killed"),
                           [&](const auto& p) { was_resumed = p.resumed; });
  CHECK(was_resumed);
  for (std::size_t i = 0; i < whole->parameters().size(); ++i)
    CHECK(max_difference(whole->parameters()[i], resumed->parameters()[i]) < 1e-6);
  // The last checkpoint is a tuned lens in the published format, alone in its folder.
  CHECK(read_bytes(dir / "whole" / "latest") == "step-000006\n");
  CHECK(!fs::exists(dir / "whole" / "step-000004"));
  const auto saved = baukit::load_tuned_lens(dir / "whole" / "step-000006");
  CHECK(torch::equal(saved->parameters()[3], whole->parameters()[3]));
  // On held-out windows the trained lens is closer to the final distribution than the logit lens.
  std::string held;
  for (const auto& h : corpus.held_out) held += h.prompt.substr(2) + h.answer + ". ";
  const auto test = baukit::token_windows(tokenizer.encode(held), 16);
  const auto logit = baukit::mean_kl_per_layer(*model, test);
  const auto tuned = baukit::mean_kl_per_layer(*model, test, whole.ptr());
  REQUIRE(logit.size() == 6);
  double logit_sum = 0, tuned_sum = 0;
  for (std::size_t l = 0; l + 1 < logit.size(); ++l) {
    logit_sum += logit[l];
    tuned_sum += tuned[l];
  }
  INFO("logit " << logit_sum << " tuned " << tuned_sum);
  CHECK(tuned_sum < logit_sum);
  CHECK(logit.back() == Approx(0).margin(1e-4));
}

TEST_CASE("The lens over a corpus: every measure and interval equals a direct computation window by window",
          "[lens][evaluation]") {
  auto model = baukit::models::from_pretrained(kDefaultModel);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  const auto lens = baukit::load_tuned_lens(kDefaultModel / "tuned-lens");
  const auto corpus_path = kDefaultModel / "held-out.txt";
  const int64_t window = 12, windows = 5;
  baukit::io::CorpusReader corpus(corpus_path, tokenizer, baukit::io::CorpusOptions().window(window));
  const auto evaluation = baukit::evaluate_lens(
      *model, corpus,
      baukit::LensEvalOptions()
          .learned_lenses({lens.ptr()})
          .tally(baukit::stats::TallyOptions().batch_size(2).max_windows(windows).progress(false)));
  REQUIRE(evaluation.window_count() == windows);
  CHECK(evaluation.tokens() == windows * (window - 1));
  CHECK(evaluation.views == std::vector<std::string>{"lens", "delta_lens", "tuned_lens"});
  // Directly: per window, per view and layer, the five measures' means over its first window - 1 positions.
  torch::NoGradGuard no_grad;
  baukit::io::CorpusReader again(corpus_path, tokenizer, baukit::io::CorpusOptions().window(window));
  auto decoder = baukit::make_decoder(*model, /*softmax=*/false);
  const int64_t layers = model->num_layers(), scored = window - 1;
  std::vector<torch::Tensor> per_window;
  auto rank_low = torch::zeros({windows, 3, layers}, torch::kFloat64), rank_high = torch::zeros_like(rank_low);
  for (int64_t w = 0; w < windows; ++w) {
    const auto ids = *again.next();
    torch::Tensor logits;
    const auto stream = baukit::residual_stream(*model, ids, false, nullptr, &logits).slice(1, 0, scored);
    const auto final_log = torch::log_softmax(logits[0].slice(0, 0, scored), -1);
    const auto next = torch::tensor(std::vector<int64_t>(ids.begin() + 1, ids.end()), torch::kInt64).unsqueeze(1);
    auto means = torch::zeros({3, layers, 5}, torch::kFloat64);
    for (int64_t v = 0; v < 3; ++v)
      for (int64_t l = 0; l < layers; ++l) {
        const auto h = stream[l + 1];
        const auto x = v == 0 ? h : v == 1 ? h - stream[l] : (l + 1 < layers ? lens->translate(h, l) : h);
        const auto log_p = torch::log_softmax(decoder->forward(x), -1);
        const auto kl = (final_log.exp() * (final_log - log_p)).sum(-1);
        const auto entropy = -(log_p.exp() * log_p).sum(-1);
        const auto cross = -log_p.gather(1, next).squeeze(1);
        const auto agree = (log_p.argmax(-1) == final_log.argmax(-1)).to(torch::kFloat32);
        const auto rank = (log_p > log_p.gather(1, next)).sum(-1).to(torch::kFloat32) + 1;
        means[v][l] = torch::stack({kl, entropy, cross, agree, rank}).mean(1).to(torch::kFloat64);
        // The default model's unused tokens (49,856 of 50,257) share one embedding row: their logits tie, and a next
        // token among them has a rank that float rounding of the product (which differs with the batch and the
        // kernel) can move by thousands. The rank is bounded by counting logits above it by 1e-4 and below it by 1e-4.
        const auto target = log_p.gather(1, next);
        rank_low[w][v][l] = ((log_p > target + 1e-4).sum(-1).to(torch::kFloat64) + 1).mean();
        rank_high[w][v][l] = ((log_p > target - 1e-4).sum(-1).to(torch::kFloat64)).mean();
      }
    per_window.push_back(means);
  }
  const auto all = torch::stack(per_window);  // [windows, views, layers, measures]
  const auto mean = all.mean(0), half = 1.96 * all.std(0) / std::sqrt(static_cast<double>(windows));
  for (int64_t v = 0; v < 3; ++v)
    for (int64_t l = 0; l < layers; ++l)
      for (int64_t m = 0; m < 5; ++m) {
        const auto& key = baukit::eval_measures()[static_cast<std::size_t>(m)].key;
        INFO(evaluation.views[static_cast<std::size_t>(v)] << " layer " << l << " " << key);
        const auto want = mean[v][l][m].item<double>(), want_half = half[v][l][m].item<double>();
        const auto got = evaluation.mean(evaluation.views[static_cast<std::size_t>(v)], l, key);
        if (key == "next_token_rank") {  // within the bounds the ties allow (see above)
          CHECK(got >= rank_low.select(1, v).select(1, l).mean().item<double>() - 1e-6);
          CHECK(got <= rank_high.select(1, v).select(1, l).mean().item<double>() + 1e-6);
          continue;
        }
        CHECK(got == Approx(want).epsilon(1e-4).margin(1e-5));
        CHECK(evaluation.ci95(evaluation.views[static_cast<std::size_t>(v)], l, key) ==
              Approx(want_half).epsilon(1e-3).margin(1e-5));
      }
  // The last layer's logit lens is the model's output.
  CHECK(evaluation.mean("lens", layers - 1, "kl_to_final") < 1e-5);
  CHECK(evaluation.mean("lens", layers - 1, "top1_agreement") == 1.0);
  // The JSON carries the same numbers, and the page draws them.
  const auto json = baukit::to_json(evaluation, "held-out");
  CHECK(json["views"]["tuned_lens"]["kl_to_final"]["mean"][0].get<double>() ==
        Approx(evaluation.mean("tuned_lens", 0, "kl_to_final")));
  const auto page = baukit::lens_evaluation_page_html({json});
  CHECK(count(page, "<svg class=\"chart\"") == 5);
  CHECK(count(page, "<polyline class=\"curve\"") == 15);  // 3 views x 5 measures
  CHECK(count(page, "<polygon class=\"band\"") == 15);
  CHECK_THROWS_WITH(evaluation.mean("jacobian_lens", 0, "kl_to_final"), Catch::Contains("no view 'jacobian_lens'"));
  CHECK_THROWS_WITH(evaluation.mean("lens", 0, "perplexity"), Catch::Contains("no measure 'perplexity'"));
}

TEST_CASE("baukit-lens eval: JSON and a page of curves, runs compared in Chromium, bad input named",
          "[lens][evaluation][browser][command]") {
  const auto dir = scratch("lens-eval");
  const auto corpus = kDefaultModel / "held-out.txt";
  const auto eval = [&](const std::string& args) {
    return run(fmt::format("{} eval --threads 1 {}", quoted(BAUKIT_LENS_EXE), args));
  };
  const auto a = dir / "a.json", b = dir / "b.json";
  auto result = eval(fmt::format("--corpus {} --window 16 --json {} --out {} --label logit", quoted(corpus.string()),
                                 quoted(a.string()), quoted((dir / "a.html").string())));
  INFO(result.output);
  REQUIRE(result.status == 0);
  result = eval(fmt::format("--corpus {} --window 16 --tokens 200 --tuned-lens {} --json {} --out {} --label tuned",
                            quoted(corpus.string()), quoted((kDefaultModel / "tuned-lens").string()),
                            quoted(b.string()), quoted((dir / "b.html").string())));
  REQUIRE(result.status == 0);
  const auto first = read_json(a), second = read_json(b);
  CHECK(first["format"] == "baukit.lens_evaluation/1");
  CHECK(first["windows"].get<int64_t>() >= 20);
  CHECK(second["windows"] == 13);  // ceil(200 / 16)
  CHECK(first["views"].size() == 2);
  CHECK(second["views"].contains("tuned_lens"));
  const auto kl = [](const nlohmann::json& run, const char* view) {
    return run["views"][view]["kl_to_final"]["mean"].get<std::vector<double>>();
  };
  for (std::size_t l = 0; l + 1 < 6; ++l) CHECK(kl(second, "tuned_lens")[l] < kl(second, "lens")[l]);
  // Both runs on one page, drawn by Chromium.
  const auto page = dir / "compare.html";
  result = eval(
      fmt::format("--compare {} --compare {} --out {}", quoted(a.string()), quoted(b.string()), quoted(page.string())));
  REQUIRE(result.status == 0);
  const auto dom = dump_dom(page, "", fs::path(BAUKIT_BINARY_DIR) / "lens-eval-screenshot.png");
  CHECK(count(dom, "class=\"chart\"") == 5);
  CHECK(count(dom, "class=\"curve\"") == 5 * (2 + 3));
  CHECK(dom.find("tuned lens — tuned, layer 0: ") != std::string::npos);  // a point's hover
  CHECK(dom.find("logit lens — logit") != std::string::npos);
  // Bad input: each named.
  fails_with(fmt::format("{} eval --out {}", quoted(BAUKIT_LENS_EXE), quoted((dir / "x.html").string())),
             "give --corpus");
  fails_with(fmt::format("{} eval --compare {} --out {}", quoted(BAUKIT_LENS_EXE),
                         quoted((kDefaultModel / "config.json").string()), quoted((dir / "x.html").string())),
             "config.json: not a lens evaluation");
  fails_with(fmt::format("{} eval --corpus {} --window 100 --out {}", quoted(BAUKIT_LENS_EXE), quoted(corpus.string()),
                         quoted((dir / "x.html").string())),
             "--window 100: the model takes at most 64 positions");
  fails_with(fmt::format("{} eval --corpus {} --window 16 --tokens 16 --nproc 2 --out {}", quoted(BAUKIT_LENS_EXE),
                         quoted(corpus.string()), quoted((dir / "x.html").string())),
             "fewer than the 2 processes");
  CHECK(!fs::exists(dir / "x.html"));
}
