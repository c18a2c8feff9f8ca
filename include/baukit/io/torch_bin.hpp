/// @file torch_bin.hpp
/// @brief Reading `pytorch_model.bin` (torch.save's zip format) without executing anything: a zip directory
/// reader (stored entries, ZIP64) and a restricted unpickler that knows only the opcodes and globals a state
/// dict uses. Tensors view the memory-mapped records (zero-copy where aligned).
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/error.hpp>
#include <baukit/io/mapped_file.hpp>
#include <baukit/io/safetensors.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace baukit::io {

/// One stored record of a zip archive.
struct ZipRecord {
  std::string name;          ///< Path inside the archive.
  std::uint64_t offset = 0;  ///< Start of the record's bytes in the file.
  std::uint64_t size = 0;    ///< Number of bytes.
};

namespace detail {

inline std::uint64_t read_le(std::string_view bytes, std::uint64_t at, int width) {
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

}  // namespace detail

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

namespace detail {

/// A value on the restricted unpickler's stack.
struct PickleValue {
  enum class Kind { none, boolean, integer, real, string, tuple, list, dict, global, storage, tensor, mark };
  Kind kind = Kind::none;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;                                                         // string; global "module.name"
  std::shared_ptr<std::vector<PickleValue>> items;                          // tuple, list
  std::shared_ptr<std::vector<std::pair<PickleValue, PickleValue>>> pairs;  // dict
  torch::Tensor tensor;                                                     // storage (1-D, its dtype), tensor

  static PickleValue of(Kind kind) {
    PickleValue v;
    v.kind = kind;
    return v;
  }
};

}  // namespace detail

/// Unpickles torch.save's `data.pkl` for a state dict: only the opcodes of pickle protocols 2-4 that build
/// dicts, lists, tuples, numbers and strings, and only the globals `collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the `torch.*Storage` types. Nothing
/// is ever executed. `storage(key, dtype, numel)` returns the 1-D tensor of the record `data/<key>`.
template <class StorageLoader>
std::vector<std::pair<std::string, torch::Tensor>> unpickle_state_dict(std::string_view pickle,
                                                                       const std::filesystem::path& path,
                                                                       StorageLoader&& storage) {
  using detail::PickleValue;
  using Kind = PickleValue::Kind;
  auto fail = [&](const std::string& why) -> void { throw CheckpointError(CheckpointErrorKind::pickle, path, why); };
  std::vector<PickleValue> stack;
  std::vector<std::size_t> marks;
  std::map<std::uint64_t, PickleValue> memo;
  std::size_t at = 0;
  auto need = [&](std::size_t count) {
    if (count > pickle.size() - at) fail(fmt::format("data.pkl ends inside an opcode at byte {}", at));
  };
  auto pop = [&]() {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back()))
      fail(fmt::format("stack underflow at byte {}", at));
    PickleValue v = std::move(stack.back());
    stack.pop_back();
    return v;
  };
  auto pop_mark = [&]() {
    if (marks.empty()) fail(fmt::format("no MARK before byte {}", at));
    std::vector<PickleValue> items(std::make_move_iterator(stack.begin() + static_cast<std::ptrdiff_t>(marks.back())),
                                   std::make_move_iterator(stack.end()));
    stack.resize(marks.back());
    marks.pop_back();
    return items;
  };
  auto make_tuple = [](std::vector<PickleValue> items) {
    PickleValue v = PickleValue::of(Kind::tuple);
    v.items = std::make_shared<std::vector<PickleValue>>(std::move(items));
    return v;
  };
  auto int_list = [&](const PickleValue& v, const char* what) {
    if (v.kind != Kind::tuple) fail(fmt::format("_rebuild_tensor_v2: {} is not a tuple", what));
    std::vector<int64_t> out;
    for (const auto& item : *v.items) {
      if (item.kind != Kind::integer || item.integer < 0)
        fail(fmt::format("_rebuild_tensor_v2: {} holds a non-integer or negative value", what));
      out.push_back(item.integer);
    }
    return out;
  };
  auto set_item = [&](PickleValue& dict, PickleValue key, PickleValue value) {
    if (dict.kind != Kind::dict) fail("SETITEM(S) on something that is not a dict");
    dict.pairs->emplace_back(std::move(key), std::move(value));
  };
  static const std::map<std::string, torch::ScalarType> storage_types = {
      {"torch.FloatStorage", torch::kFloat32},     {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.DoubleStorage", torch::kFloat64},
      {"torch.LongStorage", torch::kInt64},        {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},       {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},        {"torch.BoolStorage", torch::kBool}};

  while (true) {
    need(1);
    const auto op = static_cast<unsigned char>(pickle[at++]);
    auto read_uint = [&](int width) {
      need(static_cast<std::size_t>(width));
      auto v = detail::read_le(pickle, at, width);
      at += static_cast<std::size_t>(width);
      return v;
    };
    auto read_text = [&](std::uint64_t length) {
      need(length);
      std::string s(pickle.substr(at, length));
      at += length;
      return s;
    };
    switch (op) {
      case 0x80:
        read_uint(1);
        break;  // PROTO
      case 0x95:
        read_uint(8);
        break;     // FRAME
      case '.': {  // STOP
        PickleValue result = pop();
        if (result.kind != Kind::dict) fail("the pickle's result is not a dict of tensors (a state dict)");
        std::vector<std::pair<std::string, torch::Tensor>> tensors;
        for (auto& [key, value] : *result.pairs) {
          if (key.kind != Kind::string) fail("a state dict key is not a string");
          if (value.kind != Kind::tensor) fail(fmt::format("state dict entry '{}' is not a tensor", key.text));
          tensors.emplace_back(key.text, value.tensor);
        }
        return tensors;
      }
      case '(':
        marks.push_back(stack.size());
        break;     // MARK
      case '}': {  // EMPTY_DICT
        PickleValue v = PickleValue::of(Kind::dict);
        v.pairs = std::make_shared<std::vector<std::pair<PickleValue, PickleValue>>>();
        stack.push_back(std::move(v));
        break;
      }
      case ']': {  // EMPTY_LIST
        PickleValue v = PickleValue::of(Kind::list);
        v.items = std::make_shared<std::vector<PickleValue>>();
        stack.push_back(std::move(v));
        break;
      }
      case ')':
        stack.push_back(make_tuple({}));
        break;  // EMPTY_TUPLE
      case 't':
        stack.push_back(make_tuple(pop_mark()));
        break;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<PickleValue> items(op - 0x84);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        stack.push_back(make_tuple(std::move(items)));
        break;
      }
      case 'N':
        stack.push_back(PickleValue::of(Kind::none));
        break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PickleValue v = PickleValue::of(Kind::boolean);
        v.integer = op == 0x88;
        stack.push_back(std::move(v));
        break;
      }
      case 'K':
      case 'M':
      case 'J': {  // BININT1, BININT2, BININT
        PickleValue v = PickleValue::of(Kind::integer);
        const auto raw = read_uint(op == 'K' ? 1 : op == 'M' ? 2 : 4);
        v.integer = op == 'J' ? static_cast<std::int32_t>(raw) : static_cast<std::int64_t>(raw);
        stack.push_back(std::move(v));
        break;
      }
      case 0x8a: {  // LONG1
        const auto length = read_uint(1);
        if (length > 8) fail("LONG1 wider than 64 bits");
        std::uint64_t raw = length ? read_uint(static_cast<int>(length)) : 0;
        if (length && length < 8 && (raw >> (8 * length - 1)) & 1)
          raw |= ~std::uint64_t{0} << (8 * length);  // sign-extend
        PickleValue v = PickleValue::of(Kind::integer);
        v.integer = static_cast<std::int64_t>(raw);
        stack.push_back(std::move(v));
        break;
      }
      case 'G': {  // BINFLOAT (big-endian)
        need(8);
        std::uint64_t raw = 0;
        for (int i = 0; i < 8; ++i) raw = (raw << 8) | static_cast<unsigned char>(pickle[at + i]);
        at += 8;
        PickleValue v = PickleValue::of(Kind::real);
        std::memcpy(&v.real, &raw, 8);
        stack.push_back(std::move(v));
        break;
      }
      case 'X':
      case 0x8c:
      case 'U':
      case 'T': {  // BINUNICODE, SHORT_BINUNICODE, SHORT_BINSTRING, BINSTRING
        PickleValue v = PickleValue::of(Kind::string);
        v.text = read_text(read_uint(op == 0x8c || op == 'U' ? 1 : 4));
        stack.push_back(std::move(v));
        break;
      }
      case 'q':
      case 'r':
        memo[read_uint(op == 'q' ? 1 : 4)] =
            stack.empty() ? (fail("BINPUT on an empty stack"), PickleValue{}) : stack.back();
        break;
      case 0x94:
        memo[memo.size()] = stack.empty() ? (fail("MEMOIZE on an empty stack"), PickleValue{}) : stack.back();
        break;
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        auto it = memo.find(read_uint(op == 'h' ? 1 : 4));
        if (it == memo.end()) fail(fmt::format("memo lookup of an unset slot at byte {}", at));
        stack.push_back(it->second);
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        auto line = [&] {
          const auto end = pickle.find('\n', at);
          if (end == std::string_view::npos) fail("GLOBAL without a newline");
          std::string s(pickle.substr(at, end - at));
          at = end + 1;
          return s;
        };
        const std::string module = line(), name = line(), global = module + "." + name;
        if (global != "collections.OrderedDict" && global != "torch._utils._rebuild_tensor_v2" &&
            global != "torch._utils._rebuild_parameter" && !storage_types.count(global))
          fail(
              fmt::format("the pickle asks for the global '{}', which is outside the allowed set (OrderedDict, "
                          "_rebuild_tensor_v2, _rebuild_parameter, torch.*Storage); refusing to load it",
                          global));
        PickleValue v = PickleValue::of(Kind::global);
        v.text = global;
        stack.push_back(std::move(v));
        break;
      }
      case 'Q': {  // BINPERSID: ('storage', type, key, location, numel)
        PickleValue id = pop();
        if (id.kind != Kind::tuple || id.items->size() != 5 || (*id.items)[0].text != "storage" ||
            (*id.items)[1].kind != Kind::global || !storage_types.count((*id.items)[1].text) ||
            (*id.items)[2].kind != Kind::string || (*id.items)[4].kind != Kind::integer || (*id.items)[4].integer < 0)
          fail("a persistent id is not a ('storage', type, key, location, numel) tuple");
        PickleValue v = PickleValue::of(Kind::storage);
        v.tensor = storage((*id.items)[2].text, storage_types.at((*id.items)[1].text), (*id.items)[4].integer);
        stack.push_back(std::move(v));
        break;
      }
      case 'R': {  // REDUCE
        PickleValue args = pop(), callable = pop();
        if (callable.kind != Kind::global || args.kind != Kind::tuple)
          fail("REDUCE of something that is not an allowed global");
        auto& a = *args.items;
        if (callable.text == "collections.OrderedDict") {
          if (!a.empty()) fail("OrderedDict called with arguments");
          PickleValue v = PickleValue::of(Kind::dict);
          v.pairs = std::make_shared<std::vector<std::pair<PickleValue, PickleValue>>>();
          stack.push_back(std::move(v));
        } else if (callable.text == "torch._utils._rebuild_tensor_v2") {
          if (a.size() < 4 || a[0].kind != Kind::storage || a[1].kind != Kind::integer || a[1].integer < 0)
            fail("_rebuild_tensor_v2 called with arguments other than (storage, offset, size, stride, ...)");
          const auto size = int_list(a[2], "size"), stride = int_list(a[3], "stride");
          if (size.size() != stride.size()) fail("_rebuild_tensor_v2: size and stride differ in length");
          std::int64_t last = a[1].integer, numel = 1;
          for (std::size_t d = 0; d < size.size(); ++d) {
            numel *= size[d];
            if (size[d] > 0) last += (size[d] - 1) * stride[d];
          }
          if (numel > 0 && last >= a[0].tensor.numel())
            fail(fmt::format("_rebuild_tensor_v2: the view reaches element {} of a {}-element storage", last,
                             a[0].tensor.numel()));
          PickleValue v = PickleValue::of(Kind::tensor);
          v.tensor = numel == 0 ? torch::empty(size, a[0].tensor.options())
                                : a[0].tensor.as_strided(size, stride, a[1].integer);
          stack.push_back(std::move(v));
        } else if (callable.text == "torch._utils._rebuild_parameter") {
          if (a.empty() || a[0].kind != Kind::tensor) fail("_rebuild_parameter called without a tensor");
          stack.push_back(a[0]);
        } else {
          fail(fmt::format("REDUCE of '{}', which is not callable here", callable.text));
        }
        break;
      }
      case 's': {  // SETITEM
        PickleValue value = pop(), key = pop();
        if (stack.empty()) fail("SETITEM without a dict");
        set_item(stack.back(), std::move(key), std::move(value));
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        if (stack.empty()) fail("SETITEMS without a dict");
        for (std::size_t i = 0; i < items.size(); i += 2)
          set_item(stack.back(), std::move(items[i]), std::move(items[i + 1]));
        break;
      }
      case 'a': {  // APPEND
        PickleValue value = pop();
        if (stack.empty() || stack.back().kind != Kind::list) fail("APPEND to something that is not a list");
        stack.back().items->push_back(std::move(value));
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        if (stack.empty() || stack.back().kind != Kind::list) fail("APPENDS to something that is not a list");
        for (auto& item : items) stack.back().items->push_back(std::move(item));
        break;
      }
      case 'b': {  // BUILD: state for a dict (e.g. _metadata) is ignored
        pop();
        if (stack.empty() || (stack.back().kind != Kind::dict && stack.back().kind != Kind::tensor))
          fail("BUILD on something other than a dict or tensor");
        break;
      }
      default:
        fail(fmt::format("opcode 0x{:02x} at byte {} is not allowed in a state dict pickle", op, at - 1));
    }
    if (stack.size() > (1u << 24)) fail("the pickle's stack grows beyond any state dict");
  }
}

/// Reads the state dict of the torch.save zip archive held in `file` (named `path` in errors); tensors view
/// `file` where aligned and keep `owner` (what holds those bytes) alive. The folder inside the archive may have any
/// name.
inline std::vector<std::pair<std::string, torch::Tensor>> read_torch_bin(std::string_view file,
                                                                         const std::filesystem::path& path,
                                                                         std::shared_ptr<const void> owner) {
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
    const auto bytes = detail::checked_mul(static_cast<std::uint64_t>(numel), c10::elementSize(dtype));
    if (!bytes || *bytes > it->second.size)
      throw CheckpointError(CheckpointErrorKind::size, path,
                            fmt::format("storage '{}' needs {} elements of {} but its record holds {} bytes", key,
                                        numel, c10::toString(dtype), it->second.size));
    return detail::tensor_over(file.data() + it->second.offset, {numel}, dtype, owner);
  };
  return unpickle_state_dict(file.substr(pickle->offset, pickle->size), path, storage);
}

/// Reads the state dict of a torch.save zip archive (`pytorch_model.bin`), memory-mapped; tensors view the
/// mapping where aligned.
inline std::vector<std::pair<std::string, torch::Tensor>> load_torch_bin(const std::filesystem::path& path) {
  auto file = MappedFile::open(path);
  return read_torch_bin(file->bytes(), path, file);
}

}  // namespace baukit::io
