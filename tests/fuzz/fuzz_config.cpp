// Fuzzes config.json (both families and the family detection) and a sharded checkpoint's index: each input is
// accepted with consistent settings or rejected with a CheckpointError naming the file.
#include <baukit/models/auto.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = fuzz::text(data, size);
  const auto dir = fuzz::scratch() / "checkpoint";
  std::filesystem::create_directories(dir);
  const auto config = fuzz::write("checkpoint/config.json", bytes);
  try {
    const auto gpt2 = baukit::models::GPT2Config::from_pretrained(dir);
    if (gpt2.n_embd <= 0 || gpt2.n_head <= 0 || gpt2.n_embd % gpt2.n_head != 0 || gpt2.n_layer <= 0) __builtin_trap();
  } catch (const baukit::io::CheckpointError& e) {
    if (std::string_view(e.what()).find(config.string()) == std::string_view::npos) __builtin_trap();
  }
  try {
    const auto gptj = baukit::models::GPTJConfig::from_pretrained(dir);
    if (gptj.n_embd <= 0 || gptj.n_head <= 0 || gptj.n_embd % gptj.n_head != 0) __builtin_trap();
  } catch (const baukit::io::CheckpointError&) {
  }
  // The same bytes as a sharded checkpoint's index: shard names must stay inside the folder.
  std::filesystem::remove(config);
  const auto index = fuzz::write("checkpoint/model.safetensors.index.json", bytes);
  try {
    std::set<std::string> names;
    for (const auto& shard : baukit::io::detail::shard_files(index, &names))
      if (shard.parent_path() != dir) __builtin_trap();
  } catch (const baukit::io::CheckpointError&) {
  }
  std::filesystem::remove(index);
  return 0;
}
