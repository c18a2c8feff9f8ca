/// @file torch_bin.hpp
/// @brief Reading `pytorch_model.bin` (torch.save's zip format) without executing anything: the archive's
/// directory (`zip.hpp`), its `data.pkl` through the restricted `Unpickler` (`pickle.hpp`), and tensors viewing the
/// memory-mapped records (zero-copy where aligned).
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/bytes.hpp>
#include <baukit/io/error.hpp>
#include <baukit/io/mapped_file.hpp>
#include <baukit/io/pickle.hpp>
#include <baukit/io/zip.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::io {

/// The restricted unpickler over the torch.save zip archive held in `file` (named `path` in errors), its storages
/// read from the archive's records: tensors view `file` where aligned and keep `owner` (what holds those bytes)
/// alive. The folder inside the archive may have any name. `read` runs it (`state_dict()` or `object()`).
template <typename Read>
auto read_torch_archive(std::string_view file, const std::filesystem::path& path, std::shared_ptr<const void> owner,
                        Read&& read) {
  if (file.size() >= 2 && file.substr(0, 2) != "PK")
    throw CheckpointError(
        CheckpointErrorKind::archive, path,
        "not a zip archive: legacy (pre-1.6) torch.save files are not supported; re-save with torch.save");
  const auto records = read_zip_directory(file, path);
  const ZipRecord* pickle = nullptr;
  for (const auto& [name, record] : records) {
    const auto slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") {
      if (pickle) throw CheckpointError(CheckpointErrorKind::archive, path, "more than one data.pkl");
      pickle = &record;
    }
  }
  if (!pickle)
    throw CheckpointError(CheckpointErrorKind::archive, path, "no <folder>/data.pkl record: not a torch.save archive");
  const std::string prefix = pickle->name.substr(0, pickle->name.find('/'));
  auto storage = [&](const std::string& key, torch::ScalarType dtype, std::int64_t numel) {
    auto it = records.find(prefix + "/data/" + key);
    if (it == records.end())
      throw CheckpointError(CheckpointErrorKind::archive, path,
                            fmt::format("the pickle names storage '{}', which has no record", key));
    const auto bytes = detail::checked_mul<std::uint64_t>(static_cast<std::uint64_t>(numel), c10::elementSize(dtype));
    if (!bytes || *bytes > it->second.size)
      throw CheckpointError(CheckpointErrorKind::size, path,
                            fmt::format("storage '{}' needs {} elements of {} but its record holds {} bytes", key,
                                        numel, c10::toString(dtype), it->second.size));
    return detail::tensor_over(file.data() + it->second.offset, {numel}, dtype, owner);
  };
  Unpickler unpickler(file.substr(pickle->offset, pickle->size), path, storage);
  return read(unpickler);
}

/// Reads the state dict of the torch.save zip archive held in `file`; see `read_torch_archive`.
inline std::vector<std::pair<std::string, torch::Tensor>> read_torch_bin(std::string_view file,
                                                                         const std::filesystem::path& path,
                                                                         std::shared_ptr<const void> owner) {
  return read_torch_archive(file, path, std::move(owner), [](Unpickler& u) { return u.state_dict(); });
}

/// Reads the state dict of a torch.save zip archive (`pytorch_model.bin`), memory-mapped; tensors view the
/// mapping where aligned.
inline std::vector<std::pair<std::string, torch::Tensor>> load_torch_bin(const std::filesystem::path& path) {
  auto file = MappedFile::open(path);
  return read_torch_bin(file->bytes(), path, file);
}

/// Reads whatever a torch.save zip archive holds (a dict of metadata and tensors, say), memory-mapped, through the
/// restricted unpickler: the same opcodes and globals as a state dict, nothing executed.
inline PickleObject load_torch_pickle(const std::filesystem::path& path) {
  auto file = MappedFile::open(path);
  return read_torch_archive(file->bytes(), path, file, [](Unpickler& u) { return u.object(); });
}

}  // namespace baukit::io
