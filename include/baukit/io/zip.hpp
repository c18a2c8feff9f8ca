/// @file zip.hpp
/// @brief The directory of a zip archive as torch.save writes it (stored records, ZIP64), every offset and size
/// checked against the file.
#pragma once

#include <fmt/format.h>

#include <baukit/io/bytes.hpp>
#include <baukit/io/error.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

namespace baukit::io {

/// One stored record of a zip archive.
struct ZipRecord {
  std::string name;          ///< Path inside the archive.
  std::uint64_t offset = 0;  ///< Start of the record's bytes in the file.
  std::uint64_t size = 0;    ///< Number of bytes.
};

/// Lists the records of the zip archive `file` (named `path` in errors). Only stored (uncompressed) records are
/// accepted, as torch.save writes them; every offset and size is checked against the file.
inline std::map<std::string, ZipRecord> read_zip_directory(std::string_view file, const std::filesystem::path& path) {
  using Kind = CheckpointErrorKind;
  auto fail = [&](const std::string& why) -> void { throw CheckpointError(Kind::archive, path, why); };
  auto need = [&](std::uint64_t at, std::uint64_t count, const char* what) {
    if (at > file.size() || count > file.size() - at)
      fail(fmt::format("{} at byte {} lies outside the {}-byte file", what, at, file.size()));
  };
  auto u16 = [&](std::uint64_t at) { return detail::read_le(file, at, 2); };
  auto u32 = [&](std::uint64_t at) { return detail::read_le(file, at, 4); };
  auto u64 = [&](std::uint64_t at) { return detail::read_le(file, at, 8); };

  if (file.size() < 22) fail("too short for a zip archive");
  std::uint64_t eocd = file.size() - 22;
  const std::uint64_t lowest = file.size() > 22 + 65535 ? file.size() - 22 - 65535 : 0;
  while (u32(eocd) != 0x06054b50) {
    if (eocd == lowest) fail("no end-of-central-directory record: not a zip archive (or truncated)");
    --eocd;
  }
  std::uint64_t entries = u16(eocd + 10), directory_size = u32(eocd + 12), directory = u32(eocd + 16);
  if ((entries == 0xffff || directory == 0xffffffff || directory_size == 0xffffffff) && eocd >= 20 &&
      u32(eocd - 20) == 0x07064b50) {
    const std::uint64_t zip64 = u64(eocd - 20 + 8);
    need(zip64, 56, "the ZIP64 end-of-central-directory record");
    if (u32(zip64) != 0x06064b50) fail("bad ZIP64 end-of-central-directory signature");
    entries = u64(zip64 + 32);
    directory_size = u64(zip64 + 40);
    directory = u64(zip64 + 48);
  }
  need(directory, directory_size, "the central directory");

  std::map<std::string, ZipRecord> records;
  std::uint64_t at = directory;
  for (std::uint64_t i = 0; i < entries; ++i) {
    need(at, 46, "a central directory entry");
    if (u32(at) != 0x02014b50) fail(fmt::format("bad central directory entry signature at byte {}", at));
    const auto method = u16(at + 10);
    std::uint64_t compressed = u32(at + 20), size = u32(at + 24);
    const auto name_length = u16(at + 28), extra_length = u16(at + 30), comment_length = u16(at + 32);
    std::uint64_t local = u32(at + 42);
    need(at + 46, name_length + extra_length + comment_length, "a central directory entry's name");
    std::string name(file.substr(at + 46, name_length));
    // ZIP64 extra field: the 64-bit values of whichever fields are saturated, in this order.
    for (std::uint64_t extra = at + 46 + name_length, stop = extra + extra_length; extra + 4 <= stop;) {
      const auto id = u16(extra), length = u16(extra + 2);
      std::uint64_t field = extra + 4;
      if (id == 0x0001) {
        auto take = [&](std::uint64_t& value) {
          if (value != 0xffffffff) return;
          if (field + 8 > extra + 4 + length) fail(fmt::format("record '{}': short ZIP64 extra field", name));
          value = u64(field);
          field += 8;
        };
        take(size);
        take(compressed);
        take(local);
      }
      extra += 4 + length;
    }
    if (method != 0)
      fail(fmt::format("record '{}' is compressed (method {}); torch.save stores records uncompressed", name, method));
    if (compressed != size) fail(fmt::format("record '{}': stored sizes differ ({} vs {})", name, compressed, size));
    need(local, 30, fmt::format("record '{}''s local header", name).c_str());
    if (u32(local) != 0x04034b50) fail(fmt::format("record '{}': bad local header signature at byte {}", name, local));
    const std::uint64_t data = local + 30 + u16(local + 26) + u16(local + 28);
    need(data, size, fmt::format("record '{}''s data", name).c_str());
    records[name] = ZipRecord{name, data, size};
    at += 46 + name_length + extra_length + comment_length;
  }
  return records;
}

}  // namespace baukit::io
