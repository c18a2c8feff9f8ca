/// @file baukit/stats.hpp
/// @brief Running statistics over batches, mergeable and saved as safetensors (after Python baukit's
/// `runningstats`): `stats/moments.hpp` (Mean, Variance, Covariance, SecondMoment), `stats/counts.hpp` (Bincount,
/// Histogram), `stats/topk.hpp` (TopK), `stats/quantile.hpp` (Quantile); what they share is `stats/stat.hpp`.
/// `stats/tally.hpp` computes one of a layer over a corpus (`io/corpus.hpp`). This header includes them all.
#pragma once

#include <baukit/io/corpus.hpp>
#include <baukit/stats/counts.hpp>
#include <baukit/stats/moments.hpp>
#include <baukit/stats/quantile.hpp>
#include <baukit/stats/stat.hpp>
#include <baukit/stats/tally.hpp>
#include <baukit/stats/topk.hpp>
