// Specification of the tokenizers: GPT-2's files, tokenizer.json of today's models, the pipeline's components.
#include <fmt/format.h>

#include <atomic>
#include <baukit/tokenizer.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

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

// ---- tokenizer.json: the real vocabularies of today's models against Hugging Face's references ----

namespace {

const fs::path kVocabularies = fs::path(BAUKIT_BINARY_DIR) / "tokenizers" / "vocabularies";

/// A vocabulary laid out by the tokenizers_setup fixture; fails (never skips) when it is missing.
baukit::Tokenizer vocabulary(const std::string& folder) {
  const auto dir = kVocabularies / folder;
  if (!fs::exists(dir))
    FAIL(dir.string() << " is missing: run `ctest -R tokenizers_setup` (npm ci and node setup.mjs in "
                      << (fs::path(BAUKIT_BINARY_DIR) / "tokenizers").string() << ", from tests/data/tokenizers)");
  return baukit::Tokenizer::from_pretrained(dir);
}

struct VectorCounts {
  std::size_t strings = 0, mismatches = 0, round_trips = 0, nfc_round_trips = 0, pieces = 0;
};

/// Checks every committed vector of `name` and returns the counts.
VectorCounts check_vectors(const baukit::Tokenizer& tokenizer, const std::string& name) {
  const auto data = read_json(kData / "tokenizers" / (name + ".json"));
  VectorCounts counts;
  for (const auto& vector : data["vectors"]) {
    const auto text = vector["text"].get<std::string>();
    const auto ids = vector["ids"].get<std::vector<int64_t>>();
    const auto plain = vector["plain"].get<std::vector<int64_t>>();
    ++counts.strings;
    const auto got = tokenizer.encode(text, baukit::EncodeOptions{true, true});
    const auto got_plain = tokenizer.encode(text, baukit::EncodeOptions{false, false});
    if (got != ids || got_plain != plain) {
      ++counts.mismatches;
      UNSCOPED_INFO(name << ": mismatch on " << nlohmann::json(text).dump());
    }
    const auto decoded = tokenizer.decode(plain);
    CHECK(decoded == vector["decoded"].get<std::string>());
    counts.round_trips += decoded == text;
    counts.nfc_round_trips += decoded == baukit::tokenizer::unicode::nfc(text);
  }
  for (const auto& piece : data["pieces"]) {
    CHECK(tokenizer.decode(piece[0].get<int64_t>()) == piece[1].get<std::string>());
    ++counts.pieces;
  }
  return counts;
}

}  // namespace

TEST_CASE("tokenizer.json of Llama 3, Qwen 3, Gemma 3 and Mistral: exact ids on every committed vector",
          "[tokenizer][vocabularies]") {
  // name, folder, what decode(encode(s)) gives for every string where the format allows: s itself, or its NFC
  // (Qwen normalises); Mistral's Metaspace conversion loses the leading space of a piece after an added token.
  enum class RoundTrip { exact, nfc, partial };
  const std::vector<std::tuple<std::string, std::string, RoundTrip>> vocabularies = {
      {"llama3", "llama3", RoundTrip::exact},
      {"qwen3", "qwen3", RoundTrip::nfc},
      {"gemma3", "gemma3", RoundTrip::exact},
      {"mistral", "mistral", RoundTrip::exact},
      {"mistral-metaspace", "mistral-metaspace", RoundTrip::partial},
      {"gpt2", "gpt2/json", RoundTrip::exact}};
  for (const auto& [name, folder, round_trip] : vocabularies) {
    SECTION(name) {
      const auto tokenizer = vocabulary(folder);
      const auto counts = check_vectors(tokenizer, name);
      CHECK(counts.strings >= 1000);
      CHECK(counts.mismatches == 0);
      if (round_trip == RoundTrip::exact) CHECK(counts.round_trips == counts.strings);
      if (round_trip == RoundTrip::nfc) CHECK(counts.nfc_round_trips == counts.strings);
      WARN(name << ": " << counts.strings << " strings exact, " << counts.round_trips << " round trips ("
                << counts.nfc_round_trips << " to NFC), " << counts.pieces << " single-token decodes");
    }
  }
}

TEST_CASE("GPT-2 gives the same ids through vocab.json + merges.txt and through tokenizer.json",
          "[tokenizer][vocabularies]") {
  const auto files = vocabulary("gpt2");
  const auto json = vocabulary("gpt2/json");
  CHECK(files.vocab_size() == json.vocab_size());
  const auto counts = check_vectors(files, "gpt2");
  CHECK(counts.mismatches == 0);
  const auto old_vectors = read_json(kData / "tokenizer" / "vectors.json");  // kept: a range-for over ["vectors"]
  for (const auto& vector : old_vectors["vectors"]) {                        // of a temporary would dangle
    const auto text = vector["text"].get<std::string>();
    CHECK(json.encode(text) == vector["ids"].get<std::vector<int64_t>>());
    CHECK(json.encode(text, true) == files.encode(text, true));
  }
}

TEST_CASE("Special tokens, BOS and padded vocabularies in the real files", "[tokenizer][vocabularies]") {
  const auto gemma = vocabulary("gemma3");
  CHECK(gemma.prefix_ids() == std::vector<int64_t>{2});  // <bos>, from tokenizer_config.json's add_bos_token
  CHECK(gemma.encode("Hello").front() == 2);
  CHECK(gemma.encode("<start_of_turn>", true) == std::vector<int64_t>{2, 105});
  CHECK(gemma.encode("<start_of_turn>", false).size() > 2);  // text, not the control token
  const auto llama = vocabulary("llama3");
  CHECK(llama.prefix_ids().empty());  // this file's post-processor adds no BOS
  CHECK(llama.encode("12345", baukit::EncodeOptions{false, false}).size() == 2);  // \p{N}{1,3}: 123 45
  const auto qwen = vocabulary("qwen3");
  CHECK(qwen.encode("12345", baukit::EncodeOptions{false, false}).size() == 5);  // single digits
  CHECK(qwen.encode("e\xCC\x81") == qwen.encode("\xC3\xA9"));                    // NFC
  CHECK(qwen.token_text(151900) == "<id 151900>");  // beyond the tokenizer, inside Qwen's 151,936 rows
  CHECK_THROWS_AS(qwen.decode(151900), std::out_of_range);
  const auto mistral = vocabulary("mistral");
  CHECK(mistral.encode("Hello") == std::vector<int64_t>{1, 22557});
  const auto byte_ids =
      mistral.encode("\xF0\xA0\x9C\x8E", baukit::EncodeOptions{false, false});  // a rare CJK character
  CHECK(mistral.token_as_written(byte_ids.back()).rfind("<0x", 0) == 0);        // byte fallback
  CHECK(mistral.decode(byte_ids.back()) == "\xEF\xBF\xBD");
}

TEST_CASE("The word cache lives across calls, stays bounded and is safe to share between threads",
          "[tokenizer][vocabularies]") {
  const auto tokenizer = vocabulary("llama3");
  const auto data = read_json(kData / "tokenizers" / "llama3.json");
  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> expected;
  for (const auto& vector : data["vectors"]) {
    texts.push_back(vector["text"].get<std::string>());
    expected.push_back(vector["plain"].get<std::vector<int64_t>>());
  }
  (void)tokenizer.encode("Hello world");
  const auto after_one = tokenizer.cached_words();
  CHECK(after_one > 0);
  (void)tokenizer.encode("Hello world");
  CHECK(tokenizer.cached_words() == after_one);  // the second call found them
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < texts.size() * 2; i += 3)
        if (tokenizer.encode(texts[i % texts.size()], baukit::EncodeOptions{false, false}) !=
            expected[i % texts.size()])
          ++wrong;
    });
  for (auto& thread : threads) thread.join();
  CHECK(wrong == 0);
  std::string many;
  for (int i = 0; i < 300'000; ++i) many += fmt::format(" w{}x", i);
  (void)tokenizer.encode(many);
  CHECK(tokenizer.cached_words() <= (1u << 17) + 16);
}

// ---- the components, with the Rust library's documented behaviour ----

namespace {

std::vector<std::string> split(const baukit::tokenizer::PreTokenizer& pre_tokenizer, const std::string& text) {
  std::vector<baukit::tokenizer::Piece> pieces{{text, true}};
  pre_tokenizer.pre_tokenize(pieces);
  std::vector<std::string> out;
  for (const auto& piece : pieces) out.push_back(piece.text);
  return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("Split's five behaviours and invert, as the Rust library documents them", "[tokenizer]") {
  using baukit::tokenizer::SplitBehavior;
  using baukit::tokenizer::SplitPreTokenizer;
  const std::string text = "the-final--countdown";
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::removed, false), text) == Strings{"the", "final", "countdown"});
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::isolated, false), text) ==
        Strings{"the", "-", "final", "-", "-", "countdown"});
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::merged_with_previous, false), text) ==
        Strings{"the-", "final-", "-", "countdown"});
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::merged_with_next, false), text) ==
        Strings{"the", "-final", "-", "-countdown"});
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::contiguous, false), text) ==
        Strings{"the", "-", "final", "--", "countdown"});
  CHECK(split(SplitPreTokenizer("-", SplitBehavior::removed, true), text) == Strings{"-", "-", "-"});
  const auto regex = std::make_shared<const baukit::tokenizer::Regex>(R"(\p{N}{1,3})");
  CHECK(split(SplitPreTokenizer(regex, SplitBehavior::isolated, false), "ab12345c") == Strings{"ab", "123", "45", "c"});
}

TEST_CASE("Digits, Metaspace and ByteLevel pre-tokenizers", "[tokenizer]") {
  using namespace baukit::tokenizer;  // NOLINT
  CHECK(split(DigitsPreTokenizer(true), "Call 123 please") == Strings{"Call ", "1", "2", "3", " please"});
  CHECK(split(DigitsPreTokenizer(false), "Call 123 please") == Strings{"Call ", "123", " please"});
  const std::string bar = "\xE2\x96\x81";
  CHECK(split(MetaspacePreTokenizer(bar, PrependScheme::always, true), "Hey friend!") ==
        Strings{bar + "Hey", bar + "friend!"});
  CHECK(split(MetaspacePreTokenizer(bar, PrependScheme::never, false), "Hey friend!") ==
        Strings{"Hey" + bar + "friend!"});
  CHECK(split(ByteLevelPreTokenizer(true, true), "Hello world") == Strings{" Hello", " world"});
  CHECK(split(ByteLevelPreTokenizer(false, false), "Hello world") == Strings{"Hello world"});
}

TEST_CASE("A pattern's whitespace class (backslash s) is Unicode's White_Space (Oniguruma's), not PCRE2's wider set",
          "[tokenizer]") {
  const baukit::tokenizer::Regex space(R"(\s+)");
  std::vector<std::pair<std::size_t, std::size_t>> found;
  space.for_each_match(
      "a\xE1\xA0\x8E"
      "b\xE3\x80\x80"
      "c",
      [&](std::size_t start, std::size_t end) { found.emplace_back(start, end); });
  // U+180E (Mongolian vowel separator) is not White_Space since Unicode 6.3; U+3000 is.
  CHECK(found == std::vector<std::pair<std::size_t, std::size_t>>{{5, 8}});
  CHECK_THROWS_WITH(baukit::tokenizer::Regex("(?<=a+)b"), Catch::Contains("does not compile"));
}

TEST_CASE("Decoders: Metaspace drops the first token's replacements, ByteFallback, Strip", "[tokenizer]") {
  using namespace baukit::tokenizer;  // NOLINT
  const std::string bar = "\xE2\x96\x81";
  Strings tokens{bar + "Hey", bar + "friend" + bar};
  MetaspaceDecoder(bar, true).decode_chain(tokens);
  CHECK(tokens == Strings{"Hey", " friend "});
  tokens = {bar + bar + "x"};
  MetaspaceDecoder(bar, true).decode_chain(tokens);
  CHECK(tokens == Strings{"x"});  // every replacement of the first token, as the Rust library does
  tokens = {"<0xE6>", "<0x9D>", "<0xB1>", "a", "<0xE6>", "<0x9D>"};
  ByteFallbackDecoder().decode_chain(tokens);
  CHECK(tokens ==
        Strings{"\xE6\x9D\xB1", "a", "\xEF\xBF\xBD", "\xEF\xBF\xBD"});  // an incomplete run: one U+FFFD per byte
  tokens = {"  a  "};
  StripDecoder(" ", 1, 2).decode_chain(tokens);
  CHECK(tokens == Strings{" a"});
}

TEST_CASE("Added tokens: leftmost-longest, single_word, lstrip and rstrip", "[tokenizer]") {
  using namespace baukit::tokenizer;  // NOLINT
  std::vector<AddedToken> tokens(4);
  tokens[0].content = "<a>";
  tokens[0].id = 10;
  tokens[1].content = "<a><b>";
  tokens[1].id = 11;
  tokens[2].content = "[x]";
  tokens[2].id = 12;
  tokens[2].single_word = true;
  tokens[3].content = "<s>";
  tokens[3].id = 13;
  tokens[3].lstrip = tokens[3].rstrip = true;
  tokens[3].special = true;
  const AddedTokenMatcher matcher(tokens);
  auto ids = [&](const std::string& text, bool allow_special) {
    std::vector<std::string> out;
    for (const auto& s : matcher.split(text, allow_special))
      out.push_back(s.id >= 0 ? std::to_string(s.id) : text.substr(s.begin, s.end - s.begin));
    return out;
  };
  CHECK(ids("q<a><b>r<a>", false) == Strings{"q", "11", "r", "10"});
  CHECK(ids("a[x] b[x]c [x]", false) == Strings{"a[x] b[x]c ", "12"});
  CHECK(ids("a  <s>  b", true) == Strings{"a", "13", "b"});
  CHECK(ids("a  <s>  b", false) == Strings{"a  <s>  b"});  // special: text unless allowed
}

TEST_CASE("BPE: byte fallback, unk and fuse_unk, ignore_merges", "[tokenizer]") {
  using namespace baukit::tokenizer;  // NOLINT
  std::vector<std::string> written(300);
  written[0] = "<unk>";
  for (int b = 0; b < 256; ++b) written[static_cast<std::size_t>(1 + b)] = fmt::format("<0x{:02X}>", b);
  written[257] = "a";
  written[258] = "b";
  written[259] = "ab";
  written[260] = "abab";
  const std::vector<MergeRule> merges{{257, 258, 259}};
  auto encode = [&](BpeOptions options, const std::string& word) {
    std::vector<int64_t> ids;
    BpeModel(written, merges, options).encode(word, ids);
    return ids;
  };
  BpeOptions fallback;
  fallback.byte_fallback = true;
  CHECK(encode(fallback, "ab\xC3\xA9") == std::vector<int64_t>{259, 1 + 0xC3, 1 + 0xA9});
  BpeOptions unk;
  unk.unk_id = 0;
  CHECK(encode(unk, "a\xC3\xA9\xC3\xA9") == std::vector<int64_t>{257, 0, 0});
  unk.fuse_unk = true;
  CHECK(encode(unk, "a\xC3\xA9\xC3\xA9") == std::vector<int64_t>{257, 0});
  CHECK(encode(BpeOptions{}, "a\xC3\xA9") == std::vector<int64_t>{257});  // no unk token: dropped, as in Rust
  BpeOptions ignore;
  ignore.ignore_merges = true;
  CHECK(encode(ignore, "abab") == std::vector<int64_t>{260});
  CHECK(encode(BpeOptions{}, "abab") == std::vector<int64_t>{259, 259});
}

// ---- malformed tokenizer.json ----

TEST_CASE("A malformed tokenizer.json is refused naming the file and the JSON path", "[tokenizer][errors]") {
  const auto dir = scratch("tokenizer-json");
  const nlohmann::json good = {
      {"model",
       {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}, {"unk_token", nullptr}}},
      {"added_tokens", nlohmann::json::array({{{"id", 3}, {"content", "<s>"}, {"special", true}}})}};
  REQUIRE(good.dump().size() > 0);
  auto refused = [&](const std::string& name, const std::string& text) {
    const auto path = dir / (name + ".json");
    write_bytes(path, text);
    try {
      (void)baukit::Tokenizer::from_tokenizer_json(path);
    } catch (const baukit::TokenizerError& e) {
      CHECK_THAT(e.what(), Catch::Contains(path.string()));
      return std::string(e.what());
    }
    FAIL(name << " was accepted");
    return std::string();
  };
  {
    const auto path = dir / "good.json";
    write_bytes(path, good.dump());
    const auto tokenizer = baukit::Tokenizer::from_tokenizer_json(path);
    CHECK(tokenizer.encode("ab<s>", true) == std::vector<int64_t>{2, 3});
  }
  auto with = [&](const nlohmann::json::json_pointer& pointer, const nlohmann::json& value) {
    auto changed = good;
    changed[pointer] = value;
    return changed.dump();
  };
  using ptr = nlohmann::json::json_pointer;
  CHECK_THAT(refused("truncated", good.dump().substr(0, 40)), Catch::Contains("not valid JSON"));
  CHECK_THAT(refused("unigram", with(ptr("/model/type"), "Unigram")),
             Catch::Contains("model.type \"Unigram\" is not supported"));
  CHECK_THAT(refused("vocab-type", with(ptr("/model/vocab/a"), "zero")),
             Catch::Contains("model.vocab: token 'a' has the id \"zero\""));
  CHECK_THAT(refused("merge-unknown", with(ptr("/model/merges"), {"a c"})),
             Catch::Contains("model.merges[0] \"a c\" names a token that is not in model.vocab ('c')"));
  CHECK_THAT(refused("merge-form", with(ptr("/model/merges"), {"abc"})),
             Catch::Contains("model.merges[0] \"abc\" is not two tokens"));
  CHECK_THAT(refused("duplicate-id", with(ptr("/model/vocab/b"), 0)), Catch::Contains("id 0 is given to two tokens"));
  CHECK_THAT(refused("duplicate-token", R"({"model": {"vocab": {"a": 0, "a": 1}, "merges": []}})"),
             Catch::Contains("model.vocab has the token 'a' twice"));
  CHECK_THAT(refused("added-clash", with(ptr("/added_tokens/0/content"), "a")),
             Catch::Contains("added_tokens[0] gives 'a' the id 3, but model.vocab has it as 0"));
  CHECK_THAT(
      refused("bad-regex", with(ptr("/pre_tokenizer"),
                                {{"type", "Split"}, {"pattern", {{"Regex", "(?<=a+)b"}}}, {"behavior", "Isolated"}})),
      Catch::Contains("pre_tokenizer.pattern.Regex \"(?<=a+)b\": the regex does not compile"));
  CHECK_THAT(
      refused("bad-behavior", with(ptr("/pre_tokenizer"),
                                   {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}})),
      Catch::Contains("pre_tokenizer.behavior \"Sideways\" is not one of"));
  CHECK_THAT(refused("normalizer", with(ptr("/normalizer"), {{"type", "Lowercase"}})),
             Catch::Contains("normalizer.type \"Lowercase\" is not supported"));
  CHECK_THAT(refused("dropout", with(ptr("/model/dropout"), 0.1)), Catch::Contains("model.dropout is 0.1"));
  CHECK_THAT(refused("byte-level-missing", with(ptr("/pre_tokenizer"), {{"type", "ByteLevel"}})),
             Catch::Contains("lacks the byte-level token of byte 0x00"));
  CHECK_THAT(refused("not-object", "[1, 2]"), Catch::Contains("not a JSON object"));
  CHECK_THAT(refused("deep", std::string(100, '[') + std::string(100, ']')), Catch::Contains("not valid JSON"));

  // A FIFO is refused at once, not waited on; a file over 1 GiB is refused before it is read.
  const auto fifo = dir / "fifo.json";
  make_fifo(fifo);
  FifoWatchdog watchdog({fifo});
  CHECK_THROWS_WITH(baukit::Tokenizer::from_tokenizer_json(fifo), Catch::Contains("fifo.json"));
  const auto huge = dir / "huge.json";
  { std::ofstream(huge) << "{"; }
  fs::resize_file(huge, (std::uintmax_t{1} << 30) + 1);  // sparse
  CHECK_THROWS_WITH(baukit::Tokenizer::from_tokenizer_json(huge), Catch::Contains("huge.json"));
  fs::remove(huge);
}
