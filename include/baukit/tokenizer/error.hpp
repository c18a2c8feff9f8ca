/// @file error.hpp
/// @brief The tokenizer's error type.
#pragma once

#include <stdexcept>

namespace baukit {

/// Thrown when the tokenizer's files are missing or malformed; the message names the file and the line or the
/// JSON path.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace baukit
