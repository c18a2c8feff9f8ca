/// @file bpe.hpp
/// @brief The `BPE` model with the Hugging Face tokenizers library's semantics: merges by rank, `byte_fallback`
/// (`<0x..>` tokens), `ignore_merges` (Llama 3), `unk_token` and `fuse_unk`; over GPT-2's byte-level alphabet or
/// over Unicode characters (SentencePiece-style vocabularies: Gemma, Mistral).
#pragma once

#include <fmt/format.h>

#include <array>
#include <baukit/tokenizer/byte_level.hpp>
#include <baukit/tokenizer/unicode.hpp>
#include <baukit/tokenizer/word_cache.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace baukit::tokenizer {

/// How a `BpeModel` starts and ends a word.
struct BpeOptions {
  bool byte_level = false;        ///< words arrive as bytes, the vocabulary is written in GPT-2's byte characters
  bool byte_fallback = false;     ///< a character outside the vocabulary becomes its `<0x..>` byte tokens
  bool ignore_merges = false;     ///< a word that is itself a token is that token, whatever the merges say
  bool fuse_unk = false;          ///< adjacent unknown characters become one `unk` token
  std::optional<int32_t> unk_id;  ///< the id of `unk_token`; without it unknown characters are dropped
};

/// One merge rule: the pair of tokens and the token they make.
struct MergeRule {
  int32_t left;    ///< the left token's id
  int32_t right;   ///< the right token's id
  int32_t merged;  ///< the id of their concatenation
};

/// Byte-pair encoding of single words (pieces), with a cache shared by all calls and threads.
class BpeModel {
 public:
  /// The vocabulary as written (`written[id]`; empty strings for ids it lacks) and the merges by rank.
  BpeModel(const std::vector<std::string>& written, const std::vector<MergeRule>& merges, BpeOptions options)
      : options_(options) {
    symbols_.reserve(written.size());
    for (std::size_t id = 0; id < written.size(); ++id) {
      if (written[id].empty()) continue;
      if (options_.byte_level) {
        // Tokens outside the byte alphabet (added tokens) cannot arise from bytes: keep them as written.
        auto bytes = byte_level::to_bytes(written[id]);
        symbols_.emplace(bytes ? std::move(*bytes) : written[id], static_cast<int32_t>(id));
      } else {
        symbols_.emplace(written[id], static_cast<int32_t>(id));
      }
    }
    byte_ids_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      const auto key = options_.byte_level ? std::string(1, static_cast<char>(b)) : fmt::format("<0x{:02X}>", b);
      if (const auto found = symbols_.find(key); found != symbols_.end())
        byte_ids_[static_cast<std::size_t>(b)] = found->second;
    }
    merges_.build(merges);
  }

  /// The byte whose token is missing from a byte-level vocabulary, if one is.
  [[nodiscard]] std::optional<int> missing_byte() const {
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[static_cast<std::size_t>(b)] < 0) return b;
    return std::nullopt;
  }

  /// Appends the ids of `word` (bytes for a byte-level model, else valid UTF-8) to `out`.
  void encode(std::string_view word, std::vector<int64_t>& out) const {
    if (word.empty() || cache_.append_cached(word, out)) return;
    const auto begin = out.size();
    if (options_.ignore_merges) {
      if (const auto found = symbols_.find(word); found != symbols_.end()) {
        out.push_back(found->second);
        cache_.insert(word, out.data() + begin, 1);
        return;
      }
    }
    std::vector<int32_t> symbols = initial_symbols(word);
    merge(symbols);
    out.insert(out.end(), symbols.begin(), symbols.end());
    cache_.insert(word, out.data() + begin, out.size() - begin);
  }

  /// Words cached so far.
  [[nodiscard]] std::size_t cached_words() const { return cache_.size(); }

 private:
  /// The merges by pair, in an open-addressing table (hundreds of thousands of rules: one allocation, and a
  /// lookup is one or two cache lines).
  class MergeTable {
   public:
    /// One slot: a pair of token ids and what merging them gives.
    struct Entry {
      uint64_t key = kEmpty;  ///< the pair, or kEmpty
      int32_t rank = 0;       ///< lower merges first
      int32_t merged = 0;     ///< the token the pair makes
    };
    void build(const std::vector<MergeRule>& rules) {
      std::size_t capacity = 16;
      while (capacity < rules.size() * 2) capacity *= 2;
      entries_.assign(capacity, Entry{});
      mask_ = capacity - 1;
      int32_t rank = 0;
      for (const auto& rule : rules) {
        const auto key = pair_key(rule.left, rule.right);
        auto slot = hash(key) & mask_;
        while (entries_[slot].key != kEmpty && entries_[slot].key != key) slot = (slot + 1) & mask_;
        if (entries_[slot].key == kEmpty) entries_[slot] = {key, rank, rule.merged};  // the first rule of a pair wins
        ++rank;
      }
    }
    [[nodiscard]] const Entry* find(int32_t left, int32_t right) const {
      if (entries_.empty()) return nullptr;
      const auto key = pair_key(left, right);
      for (auto slot = hash(key) & mask_;; slot = (slot + 1) & mask_) {
        if (entries_[slot].key == key) return &entries_[slot];
        if (entries_[slot].key == kEmpty) return nullptr;
      }
    }

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    static uint64_t hash(uint64_t key) {  // a 64-bit mix (splitmix64's finaliser)
      key ^= key >> 30;
      key *= 0xbf58476d1ce4e5b9ULL;
      key ^= key >> 27;
      key *= 0x94d049bb133111ebULL;
      return key ^ (key >> 31);
    }
    std::vector<Entry> entries_;
    std::size_t mask_ = 0;
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  /// A word's symbols before merging: its bytes, or its characters with byte fallback and `unk`.
  [[nodiscard]] std::vector<int32_t> initial_symbols(std::string_view word) const {
    std::vector<int32_t> symbols;
    symbols.reserve(word.size());
    if (options_.byte_level) {
      for (const char b : word) symbols.push_back(byte_ids_[static_cast<unsigned char>(b)]);
      return symbols;
    }
    bool previous_unknown = false;
    for (std::size_t at = 0; at < word.size();) {
      const auto length = unicode::code_point_at(word, at).length;
      const auto character = word.substr(at, length);
      at += length;
      if (const auto found = symbols_.find(character); found != symbols_.end()) {
        symbols.push_back(found->second);
        previous_unknown = false;
        continue;
      }
      if (options_.byte_fallback) {
        bool all = true;
        for (const char b : character) all &= byte_ids_[static_cast<unsigned char>(b)] >= 0;
        if (all) {
          for (const char b : character) symbols.push_back(byte_ids_[static_cast<unsigned char>(b)]);
          previous_unknown = false;
          continue;
        }
      }
      if (!options_.unk_id) continue;  // the Rust library drops it too
      if (!(options_.fuse_unk && previous_unknown)) symbols.push_back(*options_.unk_id);
      previous_unknown = true;
    }
    return symbols;
  }

  /// Merges the lowest-ranked adjacent pair until none is left (ties: leftmost first), with a heap over a linked
  /// list, so a long word costs O(n log n).
  void merge(std::vector<int32_t>& symbol) const {
    const auto n = static_cast<int64_t>(symbol.size());
    if (n < 2) return;
    std::vector<int64_t> prev(static_cast<std::size_t>(n)), next(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      prev[static_cast<std::size_t>(i)] = i - 1;
      next[static_cast<std::size_t>(i)] = i + 1 < n ? i + 1 : -1;
    }
    struct Candidate {
      int32_t rank;
      int64_t left;
      int32_t left_symbol, right_symbol, merged;
      bool operator>(const Candidate& other) const { return std::tie(rank, left) > std::tie(other.rank, other.left); }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto at = [&](int64_t i) -> int32_t& { return symbol[static_cast<std::size_t>(i)]; };
    auto push = [&](int64_t left) {
      if (left < 0) return;
      const auto right = next[static_cast<std::size_t>(left)];
      if (right < 0) return;
      if (const auto* found = merges_.find(at(left), at(right)))
        heap.push({found->rank, left, at(left), at(right), found->merged});
    };
    for (int64_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate top = heap.top();
      heap.pop();
      const auto right = next[static_cast<std::size_t>(top.left)];
      // Skip stale entries: either side merged since this candidate was pushed.
      if (right < 0 || at(top.left) != top.left_symbol || at(right) != top.right_symbol) continue;
      at(top.left) = top.merged;
      at(right) = -1;
      next[static_cast<std::size_t>(top.left)] = next[static_cast<std::size_t>(right)];
      if (next[static_cast<std::size_t>(top.left)] >= 0)
        prev[static_cast<std::size_t>(next[static_cast<std::size_t>(top.left)])] = top.left;
      push(prev[static_cast<std::size_t>(top.left)]);
      push(top.left);
    }
    std::size_t kept = 0;
    for (int64_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)]) symbol[kept++] = at(i);
    symbol.resize(kept);
  }

  BpeOptions options_;
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> symbols_;  ///< bytes (byte-level) or text -> id
  std::array<int32_t, 256> byte_ids_{};  ///< each byte's token (byte-level) or `<0x..>` token, -1 if none
  MergeTable merges_;
  mutable WordCache cache_;
};

}  // namespace baukit::tokenizer
