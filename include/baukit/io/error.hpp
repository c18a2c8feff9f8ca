/// @file error.hpp
/// @brief `CheckpointError`: every failure to read a checkpoint, with a category tests and callers can check.
#pragma once

#include <fmt/format.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace baukit::io {

/// What went wrong while reading a checkpoint.
enum class CheckpointErrorKind {
  io,          ///< The file could not be opened, mapped or read.
  truncated,   ///< The file ends before the data it announces.
  header,      ///< A malformed safetensors header (length, JSON, types of fields, duplicate names).
  dtype,       ///< An unknown or unsupported element type.
  offsets,     ///< Data offsets out of range, overlapping, or leaving gaps.
  size,        ///< A byte count that does not match the shape, or a file size that does not match the header.
  archive,     ///< A malformed zip archive (torch.save format).
  pickle,      ///< A pickle that is malformed or asks for something outside the allowed set.
  config,      ///< A missing, malformed or unsupported `config.json` setting.
  missing,     ///< Tensors the model needs that the checkpoint lacks.
  unexpected,  ///< Tensors in the checkpoint that the model does not have.
  shape,       ///< Tensors whose shape differs from the model's.
  non_finite,  ///< Weights holding NaN or infinity.
};

/// The name of a `CheckpointErrorKind`, as it appears in messages.
inline const char* to_string(CheckpointErrorKind kind) {
  switch (kind) {
    case CheckpointErrorKind::io:
      return "io";
    case CheckpointErrorKind::truncated:
      return "truncated";
    case CheckpointErrorKind::header:
      return "header";
    case CheckpointErrorKind::dtype:
      return "dtype";
    case CheckpointErrorKind::offsets:
      return "offsets";
    case CheckpointErrorKind::size:
      return "size";
    case CheckpointErrorKind::archive:
      return "archive";
    case CheckpointErrorKind::pickle:
      return "pickle";
    case CheckpointErrorKind::config:
      return "config";
    case CheckpointErrorKind::missing:
      return "missing";
    case CheckpointErrorKind::unexpected:
      return "unexpected";
    case CheckpointErrorKind::shape:
      return "shape";
    case CheckpointErrorKind::non_finite:
      return "non_finite";
  }
  return "unknown";
}

/// A checkpoint could not be read; `what()` names the file (and tensor, where there is one) and the cause.
class CheckpointError : public std::runtime_error {
 public:
  /// An error of `kind` in `file`, described by `message`.
  CheckpointError(CheckpointErrorKind kind, const std::filesystem::path& file, const std::string& message)
      : std::runtime_error(fmt::format("{}: {} [{}]", file.string(), message, to_string(kind))), kind_(kind) {}

  /// The category of the failure.
  [[nodiscard]] CheckpointErrorKind kind() const noexcept { return kind_; }

 private:
  CheckpointErrorKind kind_;
};

}  // namespace baukit::io
