/// @file safetensors.hpp
/// @brief Reading and writing safetensors files: memory-mapped, zero-copy where aligned, validated as strictly
/// as the reference reader (header bound, JSON, dtypes, shapes, contiguous in-bounds offsets, file size).
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <algorithm>
#include <baukit/io/atomic_file.hpp>
#include <baukit/io/bytes.hpp>
#include <baukit/io/error.hpp>
#include <baukit/io/mapped_file.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::io {

/// One tensor's entry in a safetensors header.
struct TensorEntry {
  std::string name;            ///< The tensor's name.
  torch::ScalarType dtype;     ///< Element type.
  std::vector<int64_t> shape;  ///< Shape.
  std::uint64_t begin = 0;     ///< First byte, relative to the data section.
  std::uint64_t end = 0;       ///< One past the last byte, relative to the data section.
};

namespace detail {

inline std::optional<torch::ScalarType> dtype_from_safetensors(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
      {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  auto it = types.find(name);
  if (it == types.end()) return std::nullopt;
  return it->second;
}

inline std::string dtype_to_safetensors(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64:
      return "F64";
    case torch::kFloat32:
      return "F32";
    case torch::kFloat16:
      return "F16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kInt64:
      return "I64";
    case torch::kInt32:
      return "I32";
    case torch::kInt16:
      return "I16";
    case torch::kInt8:
      return "I8";
    case torch::kUInt8:
      return "U8";
    case torch::kBool:
      return "BOOL";
    default:
      throw std::invalid_argument(fmt::format("safetensors cannot store dtype {}", c10::toString(type)));
  }
}

}  // namespace detail

/// The largest header the reference reader accepts.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

/// Parses and validates the header of the safetensors bytes `file` (named `path` in errors). Returns the
/// entries in file order and the metadata. Every rule of the reference reader is checked.
inline std::vector<TensorEntry> parse_safetensors(std::string_view file, const std::filesystem::path& path,
                                                  std::map<std::string, std::string>* metadata = nullptr) {
  using Kind = CheckpointErrorKind;
  if (file.size() < 8)
    throw CheckpointError(Kind::truncated, path,
                          fmt::format("{} bytes: too short for a safetensors header", file.size()));
  const std::uint64_t header_size = detail::read_le(file, 0, 8);
  if (header_size > kMaxSafetensorsHeader)
    throw CheckpointError(Kind::header, path,
                          fmt::format("header length {} exceeds the limit of {}", header_size, kMaxSafetensorsHeader));
  if (header_size > file.size() - 8)
    throw CheckpointError(
        Kind::truncated, path,
        fmt::format("header length {} runs past the end of the {}-byte file", header_size, file.size()));
  const std::string_view header = file.substr(8, header_size);
  if (header.empty() || header.front() != '{')
    throw CheckpointError(Kind::header, path, "the header is not a JSON object");
  // The format pads the header with spaces (0x20), and the reference reader (serde_json) accepts only JSON
  // whitespace after the object; nlohmann's parser would stop at a NUL and ignore whatever follows it.
  if (const auto nul = header.find('\0'); nul != std::string_view::npos)
    throw CheckpointError(Kind::header, path,
                          fmt::format("the header holds a NUL byte at offset {}: the format pads the header with "
                                      "spaces (0x20), not NUL",
                                      8 + nul));

  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second &&
          duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(Kind::header, path, fmt::format("the header is not valid JSON: {}", e.what()));
  }
  if (!duplicate.empty())
    throw CheckpointError(Kind::header, path, fmt::format("tensor '{}' is listed twice", duplicate));
  if (!json.is_object()) throw CheckpointError(Kind::header, path, "the header is not a JSON object");

  const std::uint64_t data_size = file.size() - 8 - header_size;
  std::vector<TensorEntry> entries;
  for (const auto& [name, info] : json.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw CheckpointError(Kind::header, path, "__metadata__ is not an object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string())
          throw CheckpointError(Kind::header, path, fmt::format("__metadata__ value '{}' is not a string", key));
        if (metadata) (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    auto fail = [&](Kind kind, const std::string& why) {
      throw CheckpointError(kind, path, fmt::format("tensor '{}': {}", name, why));
    };
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      fail(Kind::header, "needs an object with dtype, shape and data_offsets");
    if (!info["dtype"].is_string()) fail(Kind::header, "dtype is not a string");
    const auto dtype = detail::dtype_from_safetensors(info["dtype"].get<std::string>());
    if (!dtype) fail(Kind::dtype, fmt::format("unknown or unsupported dtype '{}'", info["dtype"].get<std::string>()));
    TensorEntry entry{name, *dtype, {}, 0, 0};
    if (!info["shape"].is_array()) fail(Kind::header, "shape is not an array");
    std::uint64_t numel = 1;
    for (const auto& dim : info["shape"]) {
      if (!dim.is_number_unsigned())
        fail(Kind::header, fmt::format("shape holds {}, not a non-negative integer", dim.dump()));
      const auto size = dim.get<std::uint64_t>();
      auto product = detail::checked_mul<std::uint64_t>(numel, size);
      if (!product || size > static_cast<std::uint64_t>(INT64_MAX))
        fail(Kind::size, "the shape's element count overflows");
      numel = *product;
      entry.shape.push_back(static_cast<int64_t>(size));
    }
    const auto& offsets = info["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail(Kind::header, "data_offsets is not a pair of non-negative integers");
    entry.begin = offsets[0].get<std::uint64_t>();
    entry.end = offsets[1].get<std::uint64_t>();
    if (entry.end < entry.begin)
      fail(Kind::offsets, fmt::format("data_offsets [{}, {}] end before they begin", entry.begin, entry.end));
    const auto bytes = detail::checked_mul<std::uint64_t>(numel, c10::elementSize(*dtype));
    if (!bytes || *bytes != entry.end - entry.begin)
      fail(Kind::size,
           fmt::format("{} bytes at data_offsets [{}, {}], but shape [{}] of {} needs {}", entry.end - entry.begin,
                       entry.begin, entry.end, fmt::join(entry.shape, ", "), info["dtype"].get<std::string>(),
                       bytes ? std::to_string(*bytes) : std::string("more than 2^64")));
    entries.push_back(std::move(entry));
  }

  // The data section must be covered exactly: sorted by offset, each tensor starts where the previous ended.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  std::uint64_t expected = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* entry : by_offset) {
    if (entry->begin != expected) {
      // Blame a tensor whose offsets leave the file before the gap or overlap it causes elsewhere.
      for (const auto& listed : entries)
        if (listed.end > data_size)
          throw CheckpointError(Kind::offsets, path,
                                fmt::format("tensor '{}': data_offsets [{}, {}] run past the {}-byte data section",
                                            listed.name, listed.begin, listed.end, data_size));
      throw CheckpointError(Kind::offsets, path,
                            entry->begin < expected
                                ? fmt::format("tensor '{}' at [{}, {}] overlaps tensor '{}'", entry->name, entry->begin,
                                              entry->end, previous->name)
                                : fmt::format("tensor '{}' starts at {}, leaving a gap after byte {}", entry->name,
                                              entry->begin, expected));
    }
    expected = entry->end;
    previous = entry;
  }
  // Laid out without gaps or overlaps but longer than the file: the file was cut short (an interrupted download).
  if (expected > data_size) {
    const auto cut = *std::find_if(by_offset.begin(), by_offset.end(),
                                   [&](const TensorEntry* entry) { return entry->end > data_size; });
    throw CheckpointError(Kind::truncated, path,
                          fmt::format("the file is truncated: its data section ends at byte {}, inside tensor '{}' "
                                      "(data_offsets [{}, {}]), but the header lays out {} bytes",
                                      data_size, cut->name, cut->begin, cut->end, expected));
  }
  if (expected != data_size)
    throw CheckpointError(
        Kind::size, path,
        fmt::format("the tensors cover {} bytes, but the data section holds {}", expected, data_size));
  return entries;
}

/// A safetensors file, mapped and validated; tensors view the mapping (zero-copy) where aligned.
class SafetensorsFile {
 public:
  /// Maps and validates `path`.
  explicit SafetensorsFile(const std::filesystem::path& path) : file_(MappedFile::open(path)) {
    entries_ = parse_safetensors(file_->bytes(), path, &metadata_);
    data_ = file_->data() + 8 + detail::read_le(file_->bytes(), 0, 8);
  }

  /// The tensors' entries, in header order.
  [[nodiscard]] const std::vector<TensorEntry>& entries() const noexcept { return entries_; }
  /// The header's `__metadata__`.
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// The file's path.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return file_->path(); }

  /// The tensor of `entry`, viewing the mapping where aligned (the mapping lives as long as the tensor).
  [[nodiscard]] torch::Tensor tensor(const TensorEntry& entry) const {
    return detail::tensor_over(data_ + entry.begin, entry.shape, entry.dtype, file_);
  }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
  const char* data_ = nullptr;
};

/// Writes `tensors` (in the given order) in the safetensors format to `out`, with optional string metadata.
inline void write_safetensors(std::ostream& out, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const auto bytes = static_cast<std::uint64_t>(tensor.numel()) * tensor.element_size();
    header[name] = {{"dtype", detail::dtype_to_safetensors(tensor.scalar_type())},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  std::uint64_t size = text.size();
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  out.write(length, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, tensor] : tensors) {
    const torch::Tensor data = tensor.detach().to(torch::kCPU).contiguous();
    if (data.nbytes())  // an empty tensor has no buffer: nothing to write, and no pointer to write it from
      out.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(data.nbytes()));
  }
}

/// Writes `tensors` (in the given order) as a safetensors file, atomically, with optional string metadata.
inline void save_safetensors(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  write_file_atomically(path, [&](std::ostream& out) { write_safetensors(out, tensors, metadata); });
}

/// `tensors` in the safetensors format, in memory (to send them to another process).
inline std::string safetensors_bytes(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                     const std::map<std::string, std::string>& metadata = {}) {
  std::ostringstream out;
  write_safetensors(out, tensors, metadata);
  return std::move(out).str();
}

/// The tensors of safetensors `bytes` (validated as a file is; `name` names them in errors), copied out.
inline std::map<std::string, torch::Tensor> read_safetensors_bytes(const std::string& bytes,
                                                                   const std::filesystem::path& name = "<bytes>") {
  const auto entries = parse_safetensors(bytes, name);
  const char* data = bytes.data() + 8 + detail::read_le(bytes, 0, 8);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : entries)
    tensors.emplace(entry.name, detail::tensor_over(data + entry.begin, entry.shape, entry.dtype, nullptr).clone());
  return tensors;
}

}  // namespace baukit::io
