/// @file baukit.hpp
/// @brief The umbrella header: everything baukit-cpp offers.
#pragma once

#include <baukit/decoder.hpp>
#include <baukit/generate.hpp>
#include <baukit/hook.hpp>
#include <baukit/io/atomic_file.hpp>
#include <baukit/io/checkpoint.hpp>
#include <baukit/io/safetensors.hpp>
#include <baukit/io/torch_bin.hpp>
#include <baukit/kernels/linear.hpp>
#include <baukit/lens.hpp>
#include <baukit/lens_page.hpp>
#include <baukit/models/auto.hpp>
#include <baukit/models/blas.hpp>  // forwarding: the old baukit::models names of the kernels
#include <baukit/models/causal_lm.hpp>
#include <baukit/models/gemma.hpp>
#include <baukit/models/gpt2.hpp>
#include <baukit/models/gpt_neox.hpp>
#include <baukit/models/gptj.hpp>
#include <baukit/models/llama.hpp>
#include <baukit/models/onednn_linear.hpp>  // forwarding
#include <baukit/models/parity.hpp>
#include <baukit/models/skinny_matmul.hpp>  // forwarding
#include <baukit/modules.hpp>
#include <baukit/show.hpp>
#include <baukit/stats.hpp>
#include <baukit/tokenizer.hpp>
#include <baukit/trace.hpp>
