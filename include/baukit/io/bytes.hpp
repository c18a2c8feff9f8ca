/// @file bytes.hpp
/// @brief What every binary format reader shares: little-endian integers, overflow-checked size arithmetic, and
/// tensors over the bytes of a mapped file (zero-copy where aligned).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace baukit::io::detail {

/// The unsigned little-endian integer of `width` bytes at `bytes[at]` (the caller checks the range).
inline std::uint64_t read_le(std::string_view bytes, std::uint64_t at, int width) {
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

/// `a * b`, or nullopt on overflow.
template <class T>
std::optional<T> checked_mul(T a, T b) {
  T product{};
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

/// `a + b`, or nullopt on overflow.
template <class T>
std::optional<T> checked_add(T a, T b) {
  T sum{};
  if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

/// Makes a tensor over `bytes` (owned by `owner`): a view when aligned, else a copy.
inline torch::Tensor tensor_over(const char* bytes, const std::vector<int64_t>& shape, torch::ScalarType dtype,
                                 std::shared_ptr<const void> owner) {
  const auto element = static_cast<std::uintptr_t>(c10::elementSize(dtype));
  const auto options = torch::TensorOptions().dtype(dtype);
  if (reinterpret_cast<std::uintptr_t>(bytes) % element == 0) {
    return torch::from_blob(
        const_cast<char*>(bytes), shape, [owner](void*) mutable { owner.reset(); }, options);
  }
  torch::Tensor copy = torch::empty(shape, options);
  if (copy.nbytes() > 0) std::memcpy(copy.data_ptr(), bytes, copy.nbytes());  // an empty tensor has no buffer
  return copy;
}

}  // namespace baukit::io::detail
