/// @file tokenizer.hpp
/// @brief GPT-2's byte-level BPE tokenizer, reading a checkpoint's `vocab.json`, `merges.txt` and (where present)
/// `added_tokens.json`; token for token equal to the reference encoder.
///
/// @code
/// auto tok = baukit::Tokenizer::from_pretrained("gpt2-xl");
/// std::vector<int64_t> ids = tok.encode("Hello world");   // {15496, 995}
/// std::string text = tok.decode(ids);                     // "Hello world"
/// @endcode
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
/// PCRE2's 8-bit (UTF-8) interface.
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <baukit/io/regular_file.hpp>
#include <baukit/text/utf8.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace baukit {

/// Thrown when the tokenizer's files are missing or malformed; the message names the file (and line).
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// GPT-2's tokenizer: its pre-tokenizer regex (through PCRE2, with Unicode properties), its byte-to-unicode
/// mapping, and BPE by merge rank. Thread-safe: `encode` and `decode` may run concurrently.
class Tokenizer {
 public:
  /// GPT-2's pre-tokenizer pattern.
  static constexpr std::string_view kPattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  /// Reads `vocab.json`, `merges.txt` and, if present, `added_tokens.json` from `directory`.
  static Tokenizer from_pretrained(const std::filesystem::path& directory) {
    const auto added = directory / "added_tokens.json";
    return Tokenizer(directory / "vocab.json", directory / "merges.txt",
                     std::filesystem::exists(added) ? added : std::filesystem::path());
  }

  /// Reads the given files; `added_tokens` may be empty.
  Tokenizer(const std::filesystem::path& vocab, const std::filesystem::path& merges,
            const std::filesystem::path& added_tokens = {}) {
    read_vocab(vocab);
    if (!added_tokens.empty()) read_added_tokens(added_tokens);
    read_merges(merges);
    compile_pattern();
  }

  /// Token ids of `text` (valid UTF-8; throws `std::invalid_argument` naming the byte offset otherwise). Special
  /// tokens (`<|endoftext|>`, added tokens) are recognised only when `allow_special`; otherwise they are text.
  [[nodiscard]] std::vector<int64_t> encode(std::string_view text, bool allow_special = false) const {
    if (auto bad = utf8::first_invalid(text))
      throw std::invalid_argument(fmt::format("tokenizer: the text is not valid UTF-8 (byte {} is 0x{:02x})", *bad,
                                              static_cast<unsigned char>(text[*bad])));
    std::vector<int64_t> ids;
    WordCache cache;
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(pattern_.get(), nullptr), &pcre2_match_data_free);
    std::size_t at = 0;
    while (at < text.size()) {
      std::size_t end = text.size();
      const std::string* special = nullptr;
      if (allow_special) {
        for (const auto& [content, id] : specials_) {  // longest first
          const auto found = text.find(content, at);
          if (found != std::string_view::npos && found < end) {
            end = found;
            special = &content;
          }
        }
      }
      encode_ordinary(text.substr(at, end - at), ids, cache, match.get());
      if (!special) break;
      ids.push_back(special_ids_.at(*special));
      at = end + special->size();
    }
    return ids;
  }

  /// The text of `ids`; bytes that do not form valid UTF-8 become U+FFFD, as Hugging Face's `decode` does.
  /// Throws `std::out_of_range` naming an id outside the vocabulary.
  [[nodiscard]] std::string decode(const std::vector<int64_t>& ids) const {
    std::string bytes;
    for (const auto id : ids) bytes += token_bytes(id);
    return utf8::replace_invalid(bytes);
  }

  /// The text of one token, with U+FFFD for a partial UTF-8 character (what the lens shows).
  [[nodiscard]] std::string decode(int64_t id) const { return utf8::replace_invalid(token_bytes(id)); }

  /// The text of one token as the lens shows it: like `decode(id)`, but an id the vocabulary lacks (a model's
  /// padded embedding rows: Pythia has 50,304 for 50,277 tokens) is the visible placeholder `<id N>`.
  [[nodiscard]] std::string token_text(int64_t id) const {
    if (id < 0 || id >= vocab_size() || !known_[static_cast<std::size_t>(id)]) return fmt::format("<id {}>", id);
    return decode(id);
  }

  /// The raw bytes of one token.
  [[nodiscard]] const std::string& token_bytes(int64_t id) const {
    if (id < 0 || id >= static_cast<int64_t>(id_to_bytes_.size()) || !known_[static_cast<std::size_t>(id)])
      throw std::out_of_range(
          fmt::format("tokenizer: token id {} is not in the vocabulary (0..{})", id, id_to_bytes_.size() - 1));
    return id_to_bytes_[static_cast<std::size_t>(id)];
  }

  /// One more than the largest token id.
  [[nodiscard]] int64_t vocab_size() const { return static_cast<int64_t>(id_to_bytes_.size()); }

  /// Throws `TokenizerError` if an id of `ids` (an encoded prompt) is beyond a model's `model_vocab_size`
  /// embedding rows, naming the file, the token as written there, its id and the size: a tokenizer of another
  /// model would otherwise fail deep in the forward.
  void check_ids_fit(const std::vector<int64_t>& ids, int64_t model_vocab_size) const {
    for (const auto id : ids) {
      if (id < model_vocab_size) continue;
      const auto index = static_cast<std::size_t>(id);
      const bool known = id >= 0 && id < vocab_size() && known_[index];
      throw TokenizerError(
          fmt::format("{}: token '{}' has the id {}, beyond the model's vocab_size of {} "
                      "(config.json): the tokenizer belongs to another model",
                      known ? sources_[source_of_[index]].string() : std::string("tokenizer"),
                      known ? token_as_written(id) : std::string("?"), id, model_vocab_size));
    }
  }

  /// The id of a special token such as `<|endoftext|>`, if the vocabulary has it.
  [[nodiscard]] std::optional<int64_t> special_token(const std::string& content) const {
    auto it = special_ids_.find(content);
    if (it == special_ids_.end()) return std::nullopt;
    return it->second;
  }

 private:
  using WordCache = std::unordered_map<std::string_view, std::vector<int32_t>>;

  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  static std::array<char32_t, 256> byte_to_unicode() {
    std::array<char32_t, 256> table{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      table[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return table;
  }

  static std::string read_text_file(const std::filesystem::path& path) {
    std::string text;
    if (const auto error = io::RegularFile(path).read_all(text, io::kMaxTextFileBytes); !error.empty())
      throw TokenizerError(fmt::format("{}: {}", path.string(), error));
    return text;
  }

  /// Reads a JSON object of token -> integer id by nlohmann's SAX interface: the pairs in file order, without a
  /// document tree (a 50k-entry vocab.json parses in half the time).
  class TokenMapReader : public nlohmann::json_sax<nlohmann::json> {
   public:
    std::vector<std::pair<std::string, int64_t>> entries;  ///< (token, id) in file order
    std::string error;                                     ///< why the file was refused, if it was

    bool null() override { return refuse_value(); }
    bool boolean(bool /*value*/) override { return refuse_value(); }
    bool number_integer(number_integer_t value) override { return add(value); }
    bool number_unsigned(number_unsigned_t value) override {
      return value > static_cast<number_unsigned_t>(std::numeric_limits<int64_t>::max())
                 ? refuse_value()
                 : add(static_cast<int64_t>(value));
    }
    bool number_float(number_float_t /*value*/, const string_t& /*text*/) override { return refuse_value(); }
    bool string(string_t& /*value*/) override { return refuse_value(); }
    bool binary(binary_t& /*value*/) override { return refuse_value(); }
    bool start_object(std::size_t /*elements*/) override {
      if (depth_ != 0) return refuse_value();
      depth_ = 1;
      return true;
    }
    bool end_object() override {
      --depth_;
      return true;
    }
    bool start_array(std::size_t /*elements*/) override { return refuse_value(); }
    bool end_array() override { return true; }
    bool key(string_t& token) override {
      key_ = std::move(token);
      return true;
    }
    bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                     const nlohmann::detail::exception& e) override {
      error = std::string("not valid JSON: ") + e.what();
      return false;
    }

   private:
    bool add(int64_t id) {
      if (depth_ != 1) return refuse_value();
      entries.emplace_back(std::move(key_), id);
      return true;
    }
    bool refuse_value() {
      error = depth_ == 1 ? fmt::format("token '{}' has a non-integer id", key_) : "not a JSON object of token -> id";
      return false;
    }
    int depth_ = 0;
    std::string key_;
  };

  /// A JSON object of token -> id (vocab.json, added_tokens.json), its pairs in file order.
  static std::vector<std::pair<std::string, int64_t>> read_token_map(const std::filesystem::path& path) {
    const auto text = read_text_file(path);
    TokenMapReader reader;
    if (!nlohmann::json::sax_parse(text, &reader) || !reader.error.empty())
      throw TokenizerError(fmt::format("{}: {}", path.string(),
                                       reader.error.empty() ? "not a JSON object of token -> id" : reader.error));
    return std::move(reader.entries);
  }

  void set_token(const std::filesystem::path& path, const std::string& token, int64_t id, std::string bytes) {
    if (id < 0 || id > 10'000'000)
      throw TokenizerError(fmt::format("{}: token '{}' has the id {}, out of range", path.string(), token, id));
    const auto index = static_cast<std::size_t>(id);
    if (index >= id_to_bytes_.size()) {
      id_to_bytes_.resize(index + 1);
      known_.resize(index + 1, false);
    }
    if (known_[index]) throw TokenizerError(fmt::format("{}: id {} is given to two tokens", path.string(), id));
    id_to_bytes_[index] = std::move(bytes);
    known_[index] = true;
    if (sources_.empty() || sources_.back() != path) sources_.push_back(path);
    if (source_of_.size() <= index) source_of_.resize(index + 1, 0);
    source_of_[index] = static_cast<std::uint8_t>(sources_.size() - 1);
  }

  /// The token of `id` as its file writes it (byte-level tokens in their unicode form), for messages.
  [[nodiscard]] std::string token_as_written(int64_t id) const {
    for (const auto& [token, token_id] : token_ids_)
      if (token_id == id) return token;
    for (const auto& [token, token_id] : special_ids_)
      if (token_id == id) return token;
    return decode(id);
  }

  void read_vocab(const std::filesystem::path& path) {
    const auto vocab = read_token_map(path);
    if (vocab.empty()) throw TokenizerError(fmt::format("{}: not a JSON object of token -> id", path.string()));
    // The byte-to-unicode characters are below U+0144: a table maps them back to bytes (-1: not one of them).
    std::array<int16_t, 0x144> unicode_to_byte;
    unicode_to_byte.fill(-1);
    const auto table = byte_to_unicode();
    for (int b = 0; b < 256; ++b) unicode_to_byte[table[static_cast<std::size_t>(b)]] = static_cast<int16_t>(b);
    token_ids_.reserve(vocab.size());
    for (const auto& [token, value] : vocab) {
      // Token strings are sequences of the byte-to-unicode characters; map them back to bytes.
      std::string bytes;
      bool byte_level = true;
      for (std::size_t at = 0; at < token.size();) {
        const int length = utf8::sequence_at(token, at);
        char32_t cp = static_cast<unsigned char>(token[at]);
        if (length == 2)
          cp = ((cp & 0x1F) << 6) | (static_cast<unsigned char>(token[at + 1]) & 0x3F);
        else if (length > 2)
          byte_level = false;
        if (length <= 0 || cp >= unicode_to_byte.size() || unicode_to_byte[cp] < 0) byte_level = false;
        if (!byte_level) break;
        bytes += static_cast<char>(unicode_to_byte[cp]);
        at += static_cast<std::size_t>(length);
      }
      if (token_ids_.count(token) || special_ids_.count(token))
        throw TokenizerError(fmt::format("{}: token '{}' appears twice", path.string(), token));
      if (byte_level) {
        set_token(path, token, value, std::move(bytes));
        token_ids_.emplace(token, static_cast<int32_t>(value));
      } else {
        add_special(path, token, value);  // e.g. <|endoftext|> is byte-level too; other literal tokens land here
      }
    }
    if (token_ids_.count("<|endoftext|>")) special_ids_.emplace("<|endoftext|>", token_ids_.at("<|endoftext|>"));
    for (int b = 0; b < 256; ++b) {
      std::string key;
      utf8::append(key, table[static_cast<std::size_t>(b)]);
      auto it = token_ids_.find(key);
      if (it == token_ids_.end())
        throw TokenizerError(fmt::format("{}: the byte token for 0x{:02x} is missing", path.string(), b));
      byte_ids_[static_cast<std::size_t>(b)] = it->second;
    }
    sort_specials();
  }

  void add_special(const std::filesystem::path& path, const std::string& content, int64_t id) {
    set_token(path, content, id, content);
    special_ids_[content] = id;
  }

  void read_added_tokens(const std::filesystem::path& path) {
    for (const auto& [content, id] : read_token_map(path)) {
      if (special_ids_.count(content) && special_ids_.at(content) == id) continue;
      add_special(path, content, id);
    }
    sort_specials();
  }

  void sort_specials() {
    specials_.assign(special_ids_.begin(), special_ids_.end());
    std::sort(specials_.begin(), specials_.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  void read_merges(const std::filesystem::path& path) {
    const std::string text = read_text_file(path);
    std::size_t line_number = 0, at = 0;
    int32_t rank = 0;
    std::string joined;
    merges_.reserve(token_ids_.size());
    while (at < text.size()) {
      auto end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + at, end - at);
      at = end + 1;
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
      const auto space = line.find(' ');
      if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
          line.find(' ', space + 1) != std::string_view::npos)
        throw TokenizerError(fmt::format("{}:{}: expected two tokens separated by one space, got '{}'", path.string(),
                                         line_number, line));
      const auto left = line.substr(0, space), right = line.substr(space + 1);
      joined.assign(left).append(right);
      const auto a = token_ids_.find(left), b = token_ids_.find(right), merged = token_ids_.find(joined);
      if (a == token_ids_.end() || b == token_ids_.end() || merged == token_ids_.end())
        throw TokenizerError(
            fmt::format("{}:{}: merge '{}' names a token that is not in vocab.json", path.string(), line_number, line));
      merges_.emplace(pair_key(a->second, b->second), Merge{rank++, merged->second});
    }
  }

  void compile_pattern() {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern.data()), kPattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code) throw std::logic_error("tokenizer: PCRE2 cannot compile GPT-2's pattern");
    pattern_.reset(code, &pcre2_code_free);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  /// Encodes text holding no special tokens.
  void encode_ordinary(std::string_view text, std::vector<int64_t>& ids, WordCache& cache,
                       pcre2_match_data* match) const {
    PCRE2_SIZE at = 0;
    // The text was validated, so matching may skip PCRE2's own UTF check.
    while (at < text.size()) {
      const int found = pcre2_match(pattern_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                    PCRE2_NO_UTF_CHECK, match, nullptr);
      if (found < 0) throw std::logic_error(fmt::format("tokenizer: PCRE2 matching failed with code {}", found));
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match);
      if (span[1] <= at)
        throw std::logic_error("tokenizer: the pattern matched nothing");  // cannot happen: \s+ or a class matches
      const std::string_view word = text.substr(span[0], span[1] - span[0]);
      auto cached = cache.find(word);
      if (cached == cache.end()) cached = cache.emplace(word, bpe(word)).first;
      ids.insert(ids.end(), cached->second.begin(), cached->second.end());
      at = span[1];
    }
  }

  /// BPE of one pre-token: merges the lowest-ranked adjacent pair until none is left, with a heap over a linked
  /// list, so a very long word costs O(n log n).
  std::vector<int32_t> bpe(std::string_view word) const {
    const auto n = word.size();
    std::vector<int32_t> symbol(n);
    std::vector<int64_t> prev(n), next(n);
    for (std::size_t i = 0; i < n; ++i) {
      symbol[i] = byte_ids_[static_cast<unsigned char>(word[i])];
      prev[i] = static_cast<int64_t>(i) - 1;
      next[i] = i + 1 < n ? static_cast<int64_t>(i + 1) : -1;
    }
    struct Candidate {
      int32_t rank;
      int64_t left;
      int32_t left_symbol, right_symbol;
      bool operator>(const Candidate& other) const { return std::tie(rank, left) > std::tie(other.rank, other.left); }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto push = [&](int64_t left) {
      if (left < 0 || next[static_cast<std::size_t>(left)] < 0) return;
      const auto right = next[static_cast<std::size_t>(left)];
      auto it = merges_.find(pair_key(symbol[static_cast<std::size_t>(left)], symbol[static_cast<std::size_t>(right)]));
      if (it != merges_.end())
        heap.push(
            {it->second.rank, left, symbol[static_cast<std::size_t>(left)], symbol[static_cast<std::size_t>(right)]});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int64_t>(i));
    while (!heap.empty()) {
      const Candidate top = heap.top();
      heap.pop();
      const auto left = static_cast<std::size_t>(top.left);
      const auto right = next[left];
      // Skip stale entries: either side merged since this candidate was pushed.
      if (right < 0 || symbol[left] != top.left_symbol || symbol[static_cast<std::size_t>(right)] != top.right_symbol ||
          symbol[left] < 0)
        continue;
      symbol[left] = merges_.at(pair_key(top.left_symbol, top.right_symbol)).merged;
      symbol[static_cast<std::size_t>(right)] = -1;
      next[left] = next[static_cast<std::size_t>(right)];
      if (next[left] >= 0) prev[static_cast<std::size_t>(next[left])] = static_cast<int64_t>(left);
      push(prev[left]);
      push(static_cast<int64_t>(left));
    }
    std::vector<int32_t> out;
    for (int64_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)])
      out.push_back(symbol[static_cast<std::size_t>(i)]);
    return out;
  }

  std::vector<std::string> id_to_bytes_;
  std::vector<bool> known_;
  // For messages: the files read, and the file each id came from.
  std::vector<std::filesystem::path> sources_;
  std::vector<std::uint8_t> source_of_;
  /// Hashes `std::string` and `std::string_view` alike, so that lookups need no temporary string.
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_ids_;
  std::unordered_map<std::string, int64_t> special_ids_;
  std::vector<std::pair<std::string, int64_t>> specials_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::shared_ptr<pcre2_code> pattern_;
};

}  // namespace baukit
