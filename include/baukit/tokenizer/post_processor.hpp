/// @file post_processor.hpp
/// @brief What `encode` puts around a text's ids when special tokens are added: the `TemplateProcessing`
/// post-processor's single-sequence template (Gemma's and Mistral's BOS), composed through `Sequence`;
/// `ByteLevel` adds nothing to ids.
#pragma once

#include <cstdint>
#include <vector>

namespace baukit::tokenizer {

/// The ids before and after a single sequence.
struct Template {
  std::vector<int64_t> before;  ///< e.g. BOS
  std::vector<int64_t> after;   ///< e.g. EOS

  /// This template applied around `inner` (as `Sequence` applies its steps in order).
  [[nodiscard]] Template around(const Template& inner) const {
    Template out{before, inner.after};
    out.before.insert(out.before.end(), inner.before.begin(), inner.before.end());
    out.after.insert(out.after.end(), after.begin(), after.end());
    return out;
  }
};

}  // namespace baukit::tokenizer
