/// @file pickle.hpp
/// @brief `Unpickler`: a restricted unpickler for torch.save's `data.pkl` of a state dict. It knows only the
/// opcodes and globals a state dict uses and never executes anything; containers nest at most
/// `kMaxPickleDepth` deep and are destroyed without recursion, so no input can overflow the stack.
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/io/bytes.hpp>
#include <baukit/io/error.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baukit::io {

/// The deepest nesting of tuples, lists and dicts the unpickler accepts. A state dict nests three deep (the dict,
/// `_rebuild_tensor_v2`'s argument tuple, its size tuple; `_metadata` one more).
inline constexpr int kMaxPickleDepth = 100;

namespace detail {

struct PickleContainer;

/// A value on the restricted unpickler's stack.
struct PickleValue {
  enum class Kind { none, boolean, integer, real, string, tuple, list, dict, global, storage, tensor };
  Kind kind = Kind::none;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;                        // string; global "module.name"
  std::shared_ptr<PickleContainer> items;  // tuple, list, dict
  torch::Tensor tensor;                    // storage (1-D, its dtype), tensor

  static PickleValue of(Kind kind);
  /// Levels of containers in this value (0 for a scalar).
  [[nodiscard]] int depth() const;
};

/// The contents of a tuple, list or dict, shared by every copy of the value (the memo holds copies).
struct PickleContainer {
  std::vector<PickleValue> items;                          // tuple, list
  std::vector<std::pair<PickleValue, PickleValue>> pairs;  // dict
  int depth = 1;                                           // levels of containers, this one included
  bool nested = false;  // placed inside another container: frozen from then on, so `depth` stays true

  PickleContainer() = default;
  PickleContainer(const PickleContainer&) = delete;
  PickleContainer& operator=(const PickleContainer&) = delete;
  // Children are released through a work list rather than by recursion, however deep they nest.
  ~PickleContainer() {
    std::vector<std::shared_ptr<PickleContainer>> pending;
    auto release = [&](PickleContainer& container) {
      for (auto& item : container.items)
        if (item.items) pending.push_back(std::move(item.items));
      for (auto& [key, value] : container.pairs) {
        if (key.items) pending.push_back(std::move(key.items));
        if (value.items) pending.push_back(std::move(value.items));
      }
    };
    release(*this);
    while (!pending.empty()) {
      auto container = std::move(pending.back());
      pending.pop_back();
      if (container.use_count() == 1) release(*container);
    }  // each container dies here with its children already taken
  }
};

inline PickleValue PickleValue::of(Kind kind) {
  PickleValue v;
  v.kind = kind;
  if (kind == Kind::tuple || kind == Kind::list || kind == Kind::dict) v.items = std::make_shared<PickleContainer>();
  return v;
}

inline int PickleValue::depth() const {
  return items ? items->depth : 0;
}

}  // namespace detail

/// What the restricted unpickler builds: a number, string, tuple, list, dict (its `pairs`, in order) or tensor, for
/// files that hold more than a state dict (a Jacobian lens's `{"J": {layer: tensor}, "n_prompts": ...}`).
using PickleObject = detail::PickleValue;

/// Unpickles torch.save's `data.pkl` for a state dict: only the opcodes of pickle protocols 2-4 that build
/// dicts, lists, tuples, numbers and strings, and only the globals `collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, `torch.jit._pickle.restore_type_tag`
/// (libtorch's `pickle_save` tags typed dicts) and the `torch.*Storage` types. Nothing
/// is ever executed. Errors are `CheckpointError` (pickle) naming the file and the byte offset.
///
/// @code
/// auto tensors = baukit::io::Unpickler(pickle_bytes, "pytorch_model.bin", load_storage).state_dict();
/// @endcode
class Unpickler {
 public:
  /// Returns the 1-D tensor of `numel` elements of `dtype` held in the record `data/<key>`.
  using StorageLoader = std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

  /// An unpickler over `pickle` (named `path` in errors), loading storages through `storage`.
  Unpickler(std::string_view pickle, std::filesystem::path path, StorageLoader storage)
      : pickle_(pickle), path_(std::move(path)), storage_(std::move(storage)) {}

  /// Runs the pickle to its STOP; the result must be a dict of tensors, returned in order.
  std::vector<std::pair<std::string, torch::Tensor>> state_dict() { return tensors_of(object()); }

  /// Runs the pickle to its STOP and returns what it built, whatever it is (within the allowed opcodes and globals).
  PickleObject object() {
    while (true) {
      need(1);
      const auto op = static_cast<unsigned char>(pickle_[at_++]);
      if (op == '.') return pop();
      step(op);
      if (stack_.size() > (1u << 24)) fail("the pickle's stack grows beyond any state dict");
    }
  }

 private:
  using Value = detail::PickleValue;
  using Kind = Value::Kind;

  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointError(CheckpointErrorKind::pickle, path_, why);
  }
  void need(std::size_t count) const {
    if (count > pickle_.size() - at_) fail(fmt::format("data.pkl ends inside an opcode at byte {}", at_));
  }
  std::uint64_t read_uint(int width) {
    need(static_cast<std::size_t>(width));
    const auto v = detail::read_le(pickle_, at_, width);
    at_ += static_cast<std::size_t>(width);
    return v;
  }
  std::string read_text(std::uint64_t length) {
    need(length);
    std::string s(pickle_.substr(at_, length));
    at_ += length;
    return s;
  }
  std::string read_line() {
    const auto end = pickle_.find('\n', at_);
    if (end == std::string_view::npos) fail("GLOBAL without a newline");
    std::string s(pickle_.substr(at_, end - at_));
    at_ = end + 1;
    return s;
  }
  void push(Value v) { stack_.push_back(std::move(v)); }
  Value pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail(fmt::format("stack underflow at byte {}", at_));
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top(const char* what) {
    if (stack_.empty()) fail(fmt::format("{} on an empty stack at byte {}", what, at_));
    return stack_.back();
  }
  std::vector<Value> pop_mark() {
    if (marks_.empty()) fail(fmt::format("no MARK before byte {}", at_));
    std::vector<Value> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back())),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }

  /// Puts `child` inside `parent` (a container being built): checks the nesting bound, freezes the child.
  void adopt(Value& parent, Value& child) {
    if (!child.items) return;
    if (child.items == parent.items) fail(fmt::format("a container is put inside itself at byte {}", at_));
    child.items->nested = true;
    parent.items->depth = std::max(parent.items->depth, child.depth() + 1);
    if (parent.items->depth > kMaxPickleDepth)
      fail(fmt::format("containers nest more than {} deep at byte {}; a state dict nests 3 or 4 deep", kMaxPickleDepth,
                       at_));
  }
  /// The container on top of the stack, to be extended by `what`: a list or dict not yet placed elsewhere.
  Value& extendable(Kind kind, const char* what) {
    Value& target = top(what);
    if (target.kind != kind)
      fail(fmt::format("{} on something that is not a {} at byte {}", what, kind == Kind::list ? "list" : "dict", at_));
    if (target.items->nested)
      fail(fmt::format("{} changes a container already placed inside another, at byte {}", what, at_));
    return target;
  }
  void append(Value value) {
    Value& list = extendable(Kind::list, "APPEND(S)");
    adopt(list, value);
    list.items->items.push_back(std::move(value));
  }
  void set_item(Value key, Value value) {
    Value& dict = extendable(Kind::dict, "SETITEM(S)");
    adopt(dict, key);
    adopt(dict, value);
    dict.items->pairs.emplace_back(std::move(key), std::move(value));
  }
  Value make_tuple(std::vector<Value> items) {
    Value v = Value::of(Kind::tuple);
    for (auto& item : items) adopt(v, item);
    v.items->items = std::move(items);
    return v;
  }
  std::vector<int64_t> int_list(const Value& v, const char* what) const {
    if (v.kind != Kind::tuple) fail(fmt::format("_rebuild_tensor_v2: {} is not a tuple", what));
    std::vector<int64_t> out;
    for (const auto& item : v.items->items) {
      if (item.kind != Kind::integer || item.integer < 0)
        fail(fmt::format("_rebuild_tensor_v2: {} holds a non-integer or negative value", what));
      out.push_back(item.integer);
    }
    return out;
  }
  static const std::map<std::string, torch::ScalarType>& storage_types() {
    static const std::map<std::string, torch::ScalarType> types = {
        {"torch.FloatStorage", torch::kFloat32},     {"torch.HalfStorage", torch::kFloat16},
        {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.DoubleStorage", torch::kFloat64},
        {"torch.LongStorage", torch::kInt64},        {"torch.IntStorage", torch::kInt32},
        {"torch.ShortStorage", torch::kInt16},       {"torch.CharStorage", torch::kInt8},
        {"torch.ByteStorage", torch::kUInt8},        {"torch.BoolStorage", torch::kBool}};
    return types;
  }

  std::vector<std::pair<std::string, torch::Tensor>> tensors_of(const Value& result) const {
    if (result.kind != Kind::dict) fail("the pickle's result is not a dict of tensors (a state dict)");
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (auto& [key, value] : result.items->pairs) {
      if (key.kind != Kind::string) fail("a state dict key is not a string");
      if (value.kind != Kind::tensor) fail(fmt::format("state dict entry '{}' is not a tensor", key.text));
      tensors.emplace_back(key.text, value.tensor);
    }
    return tensors;
  }

  void global() {  // GLOBAL "module\nname\n"
    const std::string module = read_line(), name = read_line(), global = module + "." + name;
    if (global != "collections.OrderedDict" && global != "torch._utils._rebuild_tensor_v2" &&
        global != "torch._utils._rebuild_parameter" && global != "torch.jit._pickle.restore_type_tag" &&
        !storage_types().count(global))
      fail(
          fmt::format("the pickle asks for the global '{}', which is outside the allowed set (OrderedDict, "
                      "_rebuild_tensor_v2, _rebuild_parameter, restore_type_tag, torch.*Storage); refusing to load it",
                      global));
    Value v = Value::of(Kind::global);
    v.text = global;
    push(std::move(v));
  }

  void persistent_id() {  // BINPERSID: ('storage', type, key, location, numel)
    const Value id = pop();
    const auto* items = id.kind == Kind::tuple ? &id.items->items : nullptr;
    if (!items || items->size() != 5 || (*items)[0].text != "storage" || (*items)[1].kind != Kind::global ||
        !storage_types().count((*items)[1].text) || (*items)[2].kind != Kind::string ||
        (*items)[4].kind != Kind::integer || (*items)[4].integer < 0)
      fail("a persistent id is not a ('storage', type, key, location, numel) tuple");
    Value v = Value::of(Kind::storage);
    v.tensor = storage_((*items)[2].text, storage_types().at((*items)[1].text), (*items)[4].integer);
    push(std::move(v));
  }

  Value rebuild_tensor(const std::vector<Value>& a) {
    if (a.size() < 4 || a[0].kind != Kind::storage || a[1].kind != Kind::integer || a[1].integer < 0)
      fail("_rebuild_tensor_v2 called with arguments other than (storage, offset, size, stride, ...)");
    const auto size = int_list(a[2], "size"), stride = int_list(a[3], "stride");
    if (size.size() != stride.size()) fail("_rebuild_tensor_v2: size and stride differ in length");
    bool empty = false;
    for (const auto s : size) empty = empty || s == 0;
    Value v = Value::of(Kind::tensor);
    if (empty) {
      v.tensor = torch::empty(size, a[0].tensor.options());
      return v;
    }
    // The last element the view reaches, in checked arithmetic: sizes and strides near 2^63 overflow otherwise.
    std::optional<std::int64_t> last = a[1].integer;
    for (std::size_t d = 0; d < size.size() && last; ++d) {
      const auto reach = detail::checked_mul<std::int64_t>(size[d] - 1, stride[d]);
      last = reach ? detail::checked_add<std::int64_t>(*last, *reach) : std::nullopt;
    }
    if (!last || *last >= a[0].tensor.numel())
      fail(fmt::format("_rebuild_tensor_v2: the view reaches {} of a {}-element storage",
                       last ? fmt::format("element {}", *last) : std::string("beyond element 2^63"),
                       a[0].tensor.numel()));
    v.tensor = a[0].tensor.as_strided(size, stride, a[1].integer);
    return v;
  }

  void reduce() {  // REDUCE
    Value args = pop(), callable = pop();
    if (callable.kind != Kind::global || args.kind != Kind::tuple)
      fail("REDUCE of something that is not an allowed global");
    const auto& a = args.items->items;
    if (callable.text == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict called with arguments");
      push(Value::of(Kind::dict));
    } else if (callable.text == "torch._utils._rebuild_tensor_v2") {
      push(rebuild_tensor(a));
    } else if (callable.text == "torch.jit._pickle.restore_type_tag") {
      // libtorch's pickle_save tags a typed dict or list with its type ("Dict[str, Tensor]"): the value itself.
      if (a.size() != 2 || a[1].kind != Kind::string)
        fail("restore_type_tag called with arguments other than (value, type)");
      push(a[0]);
    } else if (callable.text == "torch._utils._rebuild_parameter") {
      if (a.empty() || a[0].kind != Kind::tensor) fail("_rebuild_parameter called without a tensor");
      push(a[0]);
    } else {
      fail(fmt::format("REDUCE of '{}', which is not callable here", callable.text));
    }
  }

  void step(unsigned char op) {
    switch (op) {
      case 0x80:  // PROTO
        read_uint(1);
        break;
      case 0x95:  // FRAME
        read_uint(8);
        break;
      case '(':  // MARK
        marks_.push_back(stack_.size());
        break;
      case '}':  // EMPTY_DICT
        push(Value::of(Kind::dict));
        break;
      case ']':  // EMPTY_LIST
        push(Value::of(Kind::list));
        break;
      case ')':  // EMPTY_TUPLE
        push(Value::of(Kind::tuple));
        break;
      case 't':  // TUPLE
        push(make_tuple(pop_mark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<Value> items(op - 0x84);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case 'N':
        push(Value::of(Kind::none));
        break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        Value v = Value::of(Kind::boolean);
        v.integer = op == 0x88;
        push(std::move(v));
        break;
      }
      case 'K':
      case 'M':
      case 'J': {  // BININT1, BININT2, BININT
        Value v = Value::of(Kind::integer);
        const auto raw = read_uint(op == 'K' ? 1 : op == 'M' ? 2 : 4);
        v.integer = op == 'J' ? static_cast<std::int32_t>(raw) : static_cast<std::int64_t>(raw);
        push(std::move(v));
        break;
      }
      case 0x8a: {  // LONG1
        const auto length = read_uint(1);
        if (length > 8) fail("LONG1 wider than 64 bits");
        std::uint64_t raw = length ? read_uint(static_cast<int>(length)) : 0;
        if (length && length < 8 && (raw >> (8 * length - 1)) & 1)
          raw |= ~std::uint64_t{0} << (8 * length);  // sign-extend
        Value v = Value::of(Kind::integer);
        v.integer = static_cast<std::int64_t>(raw);
        push(std::move(v));
        break;
      }
      case 'G': {  // BINFLOAT (big-endian)
        need(8);
        std::uint64_t raw = 0;
        for (int i = 0; i < 8; ++i) raw = (raw << 8) | static_cast<unsigned char>(pickle_[at_ + i]);
        at_ += 8;
        Value v = Value::of(Kind::real);
        std::memcpy(&v.real, &raw, 8);
        push(std::move(v));
        break;
      }
      case 'X':
      case 0x8c:
      case 'U':
      case 'T': {  // BINUNICODE, SHORT_BINUNICODE, SHORT_BINSTRING, BINSTRING
        Value v = Value::of(Kind::string);
        v.text = read_text(read_uint(op == 0x8c || op == 'U' ? 1 : 4));
        push(std::move(v));
        break;
      }
      case 'q':
      case 'r': {  // BINPUT, LONG_BINPUT
        const auto slot = read_uint(op == 'q' ? 1 : 4);
        memo_[slot] = top("BINPUT");
        break;
      }
      case 0x94:  // MEMOIZE
        memo_[memo_.size()] = top("MEMOIZE");
        break;
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        auto it = memo_.find(read_uint(op == 'h' ? 1 : 4));
        if (it == memo_.end()) fail(fmt::format("memo lookup of an unset slot at byte {}", at_));
        push(it->second);
        break;
      }
      case 'c':
        global();
        break;
      case 'Q':
        persistent_id();
        break;
      case 'R':
        reduce();
        break;
      case 's': {  // SETITEM
        Value value = pop(), key = pop();
        set_item(std::move(key), std::move(value));
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        for (std::size_t i = 0; i < items.size(); i += 2) set_item(std::move(items[i]), std::move(items[i + 1]));
        break;
      }
      case 'a':  // APPEND
        append(pop());
        break;
      case 'e':  // APPENDS
        for (auto& item : pop_mark()) append(std::move(item));
        break;
      case 'b': {  // BUILD: state for a dict (e.g. _metadata) is ignored
        pop();
        const Value& target = top("BUILD");
        if (target.kind != Kind::dict && target.kind != Kind::tensor)
          fail("BUILD on something other than a dict or tensor");
        break;
      }
      default:
        fail(fmt::format("opcode 0x{:02x} at byte {} is not allowed in a state dict pickle", op, at_ - 1));
    }
  }

  std::string_view pickle_;
  std::filesystem::path path_;
  StorageLoader storage_;
  std::size_t at_ = 0;
  std::vector<Value> stack_;
  std::vector<std::size_t> marks_;
  std::map<std::uint64_t, Value> memo_;
};

}  // namespace baukit::io
