/// @file word_cache.hpp
/// @brief The tokenizer's memory of words already encoded: bounded, shared by every call and every thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace baukit::tokenizer {

/// Words (pieces) and their token ids. Sharded by hash, each shard behind a reader-writer lock, so threads
/// encoding at once rarely wait; once full it stops learning (as the Rust library's cache does), so memory stays
/// bounded however much text goes through.
class WordCache {
 public:
  /// Words longer than this are not cached (they rarely repeat).
  static constexpr std::size_t kMaxWordBytes = 64;

  /// Keeps at most `capacity` words.
  explicit WordCache(std::size_t capacity = 1 << 17) : per_shard_(capacity / kShards + 1) {}

  /// The ids of `word`, if cached: appended to `out`.
  bool append_cached(std::string_view word, std::vector<int64_t>& out) const {
    if (word.size() > kMaxWordBytes) return false;
    const auto hash = std::hash<std::string_view>{}(word);
    const Shard& shard = shards_[hash % kShards];
    std::shared_lock lock(shard.mutex);
    const auto found = shard.words.find(word);
    if (found == shard.words.end()) return false;
    out.insert(out.end(), found->second.begin(), found->second.end());
    return true;
  }

  /// Remembers `ids` for `word` while there is room.
  void insert(std::string_view word, const int64_t* ids, std::size_t count) {
    if (word.size() > kMaxWordBytes) return;
    const auto hash = std::hash<std::string_view>{}(word);
    Shard& shard = shards_[hash % kShards];
    std::unique_lock lock(shard.mutex);
    if (shard.words.size() >= per_shard_) return;
    shard.words.try_emplace(std::string(word), ids, ids + count);
  }

  /// How many words are cached.
  [[nodiscard]] std::size_t size() const {
    std::size_t total = 0;
    for (const auto& shard : shards_) {
      std::shared_lock lock(shard.mutex);
      total += shard.words.size();
    }
    return total;
  }

 private:
  static constexpr std::size_t kShards = 16;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };
  struct Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> words;
  };
  std::size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace baukit::tokenizer
