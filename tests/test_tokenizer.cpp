// Specification of the GPT-2 tokenizer.
#include <baukit/tokenizer.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp

const baukit::Tokenizer& gpt2() {
  static const baukit::Tokenizer tokenizer = baukit::Tokenizer::from_pretrained(kData / "fixtures" / "gpt2-tiny");
  return tokenizer;
}

}  // namespace

TEST_CASE("The known GPT-2 vectors encode exactly", "[tokenizer]") {
  CHECK(gpt2().encode("Hello world") == std::vector<int64_t>{15496, 995});
  CHECK(gpt2().encode(" Hello world") == std::vector<int64_t>{18435, 995});
  CHECK(gpt2().encode("Hello, my name is also") == std::vector<int64_t>{15496, 11, 616, 1438, 318, 635});
}

TEST_CASE("Encoding equals gpt-tokenizer's r50k_base on every committed vector, and single tokens decode alike",
          "[tokenizer]") {
  const auto vectors = read_json(kData / "tokenizer" / "vectors.json")["vectors"];
  REQUIRE(vectors.size() >= 500);
  std::size_t mismatches = 0;
  for (const auto& vector : vectors) {
    const auto text = vector["text"].get<std::string>();
    const auto expected = vector["ids"].get<std::vector<int64_t>>();
    const auto ids = gpt2().encode(text);
    if (ids != expected) {
      ++mismatches;
      UNSCOPED_INFO("mismatch on " << nlohmann::json(text).dump());
    }
    CHECK(gpt2().decode(ids) == text);  // round trip
    const auto pieces = vector["pieces"].get<std::vector<std::string>>();
    for (std::size_t i = 0; i < expected.size(); ++i) CHECK(gpt2().decode(expected[i]) == pieces[i]);
  }
  CHECK(mismatches == 0);
}

TEST_CASE("The fixture prompts encode to their recorded ids", "[tokenizer]") {
  for (const auto& prompt : read_json(kData / "fixtures" / "prompts.json"))
    CHECK(gpt2().encode(prompt["text"].get<std::string>()) == prompt["ids"].get<std::vector<int64_t>>());
}

TEST_CASE("Special tokens are recognised only when allowed", "[tokenizer]") {
  CHECK(gpt2().encode("a<|endoftext|>b", true) == std::vector<int64_t>{64, 50256, 65});
  CHECK(gpt2().encode("a<|endoftext|>b", false) == std::vector<int64_t>{64, 27, 91, 437, 1659, 5239, 91, 29, 65});
  CHECK(gpt2().decode(50256) == "<|endoftext|>");
  CHECK(gpt2().special_token("<|endoftext|>") == 50256);
}

TEST_CASE("Added tokens (GPT-J's added_tokens.json) extend the vocabulary", "[tokenizer]") {
  const auto fixtures = kData / "fixtures";
  baukit::Tokenizer gptj(fixtures / "gpt2-tiny" / "vocab.json", fixtures / "gpt2-tiny" / "merges.txt",
                         fixtures / "gptj-tiny-f16-bin" / "added_tokens.json");
  CHECK(gptj.vocab_size() == 50400);
  CHECK(gptj.decode(50257) == "<|extratoken_1|>");
  CHECK(gptj.encode("x<|extratoken_1|>", true) == std::vector<int64_t>{87, 50257});
  CHECK(gptj.encode("x<|extratoken_1|>", false).size() > 2);
}

TEST_CASE("Decoding a partial UTF-8 character gives U+FFFD, as Hugging Face's decode does", "[tokenizer]") {
  // "東" is three bytes; GPT-2 splits it into byte tokens.
  const auto ids = gpt2().encode("東");
  REQUIRE(ids.size() > 1);
  CHECK(gpt2().decode(ids) == "東");
  CHECK(gpt2().decode(ids[0]) == "\xEF\xBF\xBD");
  CHECK(baukit::utf8::replace_invalid("a\xE6\x9D") == "a\xEF\xBF\xBD");            // one maximal subpart
  CHECK(baukit::utf8::replace_invalid("\x80\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // two lone continuation bytes
  CHECK(baukit::utf8::replace_invalid("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
}

TEST_CASE("Edge inputs: empty, invalid UTF-8, out-of-range ids, 10 MB", "[tokenizer][robustness]") {
  CHECK(gpt2().encode("").empty());
  CHECK(gpt2().decode(std::vector<int64_t>{}).empty());
  CHECK_THROWS_WITH(gpt2().encode("ok\xC3("), Catch::Contains("not valid UTF-8") && Catch::Contains("byte 2"));
  CHECK_THROWS_WITH(gpt2().decode(50257), Catch::Contains("50257"));
  CHECK_THROWS_AS(gpt2().decode(-1), std::out_of_range);

  std::string big;
  while (big.size() < 10'000'000) big += "The Space Needle is located in Seattle, Washington. 東京 🙂 1234567\n";
  const auto ids = gpt2().encode(big);
  CHECK(ids.size() > 1'000'000);
  CHECK(gpt2().decode(ids) == big);

  const std::string one_word(1'000'000, 'a');  // a single pre-token: BPE must not be quadratic
  CHECK(gpt2().decode(gpt2().encode(one_word)) == one_word);
}

TEST_CASE("Missing or malformed tokenizer files fail naming the file and line", "[tokenizer][errors]") {
  const auto dir = scratch("tokenizer");
  const auto vocab = kData / "fixtures" / "gpt2-tiny" / "vocab.json";
  CHECK_THROWS_WITH(baukit::Tokenizer(dir / "nope.json", dir / "merges.txt"),
                    Catch::Contains("nope.json") && Catch::Contains("cannot open"));
  std::ofstream(dir / "bad.json") << "{\"a\": 1,";
  CHECK_THROWS_WITH(baukit::Tokenizer(dir / "bad.json", dir / "merges.txt"),
                    Catch::Contains("bad.json") && Catch::Contains("JSON"));
  std::ofstream(dir / "twice.json") << R"({"a": 1, "b": 2, "a": 3})";
  CHECK_THROWS_WITH(baukit::Tokenizer(dir / "twice.json", dir / "merges.txt"),
                    Catch::Contains("twice.json") && Catch::Contains("token 'a' appears twice"));
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n\xC4\xA0 t\nthree parts here\n";
  CHECK_THROWS_WITH(baukit::Tokenizer(vocab, dir / "merges.txt"), Catch::Contains("merges.txt:3"));
  std::ofstream(dir / "unknown.txt") << "#version: 0.2\nzzzzzzzzzz q\n";
  CHECK_THROWS_WITH(baukit::Tokenizer(vocab, dir / "unknown.txt"),
                    Catch::Contains("unknown.txt:2") && Catch::Contains("not in vocab.json"));
}
