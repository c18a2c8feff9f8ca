// What the documentation's code blocks may use without declaring it. They are compiled, never run, so the names
// are only declared (the object file is not linked).
#pragma once

#include <baukit/baukit.hpp>
#include <baukit/distributed.hpp>
#include <baukit/lens/command.hpp>
#ifdef BAUKIT_WITH_HTTPLIB
#include <baukit/explorer/server.hpp>
#endif
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace io = baukit::io;
using namespace baukit::models;  // the family guide names GPTJConfig, LensLayout, KVCache, ... as a family file does

namespace snippet_names {
extern baukit::models::GPT2LMHeadModel model;   // a model: `*model` is a module and a CausalLM
extern const baukit::Tokenizer tok, tokenizer;  // a tokenizer
extern torch::Tensor ids, input_ids;            // [batch, tokens] token ids
extern torch::Tensor x, weight, bias, hidden_states, activations, hidden;
extern std::vector<torch::Tensor> batches;
extern const baukit::distributed::Environment env;  // this process's place in a job
extern baukit::stats::Variance local_variance;      // a statistic of this rank's share
extern baukit::LensEvaluation evaluation;           // a lens evaluation (evaluate_lens)
extern int64_t width;
extern std::string text, page_html, prompt, pickle_bytes;
extern std::filesystem::path dir, directory;
extern baukit::io::Unpickler::StorageLoader load_storage;
extern baukit::models::ConfigFile file;
extern baukit::models::FamilyLoader my_loader;  // a family's loader (register_family)
extern int argc;
extern char** argv;
}  // namespace snippet_names
using namespace snippet_names;
