/// @file baukit/lens.hpp
/// @brief The logit lens: `lens/stream.hpp` (the residual stream), `lens/decoder.hpp`, `lens/lens.hpp` (decoding
/// and the cells' statistics), `lens/json.hpp`, the learned lenses (`lens/learned.hpp`, `lens/tuned_lens.hpp`,
/// `lens/tuned_lens_training.hpp`, `lens/jacobian_lens.hpp`), the lens over generated text (`lens/generation.hpp`), lenses compared cell by cell (`lens/comparison.hpp`), the lens over a corpus
/// (`lens/evaluation.hpp`, its page `lens/evaluation_page.hpp`); the page is `lens/page.hpp`. This header includes them
/// all.
#pragma once

#include <baukit/lens/comparison.hpp>
#include <baukit/lens/decoder.hpp>
#include <baukit/lens/evaluation.hpp>
#include <baukit/lens/evaluation_page.hpp>
#include <baukit/lens/generation.hpp>
#include <baukit/lens/jacobian_lens.hpp>
#include <baukit/lens/json.hpp>
#include <baukit/lens/learned.hpp>
#include <baukit/lens/lens.hpp>
#include <baukit/lens/statistics.hpp>
#include <baukit/lens/stream.hpp>
#include <baukit/lens/tuned_lens.hpp>
#include <baukit/lens/tuned_lens_training.hpp>
