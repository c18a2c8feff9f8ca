/// @file lens/evaluation_command.hpp
/// @brief `baukit-lens eval`: the lens over a corpus (`evaluate_lens`) from the command line — JSON and a page of
/// per-layer curves, earlier runs overlaid with `--compare`, as one process, as `--nproc N` processes on this
/// machine, or as one rank of a job that torchrun, `srun` or `mpirun` started (their variables say which).
///
/// @code
/// // baukit-lens eval --corpus held-out.txt --window 16 --json eval.json --out eval.html
/// const int status = baukit::lens_evaluation_command(argc, argv);  // argv[0] is "eval"
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <baukit/distributed.hpp>
#include <baukit/io/checkpoint.hpp>
#include <baukit/lens/command_support.hpp>
#include <baukit/lens/evaluation.hpp>
#include <baukit/lens/evaluation_page.hpp>
#include <baukit/lens/jacobian_lens.hpp>
#include <baukit/lens/tuned_lens.hpp>
#include <baukit/models/auto.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace baukit {

namespace detail {

/// `args` without the option `name` and its value (`--nproc 4` or `--nproc=4`): a rank's command line.
inline std::vector<std::string> without_option(const std::vector<std::string>& args, const std::string& name) {
  std::vector<std::string> kept;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name) {
      ++i;
      continue;
    }
    if (args[i].rfind(name + "=", 0) == 0) continue;
    kept.push_back(args[i]);
  }
  return kept;
}

}  // namespace detail

/// Runs `baukit-lens eval` on `argc`, `argv` (`argv[0]` is "eval"; the options: `baukit-lens eval --help`).
/// Returns the exit status: 0, or 1 after printing the error (every rank prints its own).
inline int lens_evaluation_command(int argc, char** argv, const LensCommandOptions& options = {}) {
  namespace fs = std::filesystem;
  CLI::App app{
      "The lens over a corpus: per layer, for the logit lens, the delta lens and learned lenses, the mean "
      "with a 95% interval of KL(final || layer), entropy, cross-entropy against the next token, top-1 "
      "agreement with the final layer and the next token's rank",
      options.program() + " eval"};
  fs::path model_dir = options.default_model(), tokenizer_dir, corpus_path, out = "eval.html", json_out, tuned_lens_dir,
           jacobian_lens_file, checkpoint_dir, file_store;
  std::vector<fs::path> compare;
  std::string format = "auto", text_field = "text", label, device_name = "cpu";
  int64_t tokens = 0, window = 0, batch_size = 1, checkpoint_every = 256;
  int nproc = 1, threads = 2, timeout_s = 300;
  app.add_option("--model", model_dir, "Checkpoint directory (Hugging Face layout); default: the embedded model")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tokenizer", tokenizer_dir, "Folder with the tokenizer; default: the model's folder")
      ->check(CLI::ExistingDirectory);
  app.add_option("--corpus", corpus_path, "Plain text (documents between blank lines) or JSON lines")
      ->check(CLI::ExistingFile);
  app.add_option("--format", format, "The corpus's format")
      ->check(CLI::IsMember({"auto", "text", "jsonl"}))
      ->capture_default_str();
  app.add_option("--text-field", text_field, "The field of a JSON line with its text")->capture_default_str();
  app.add_option("--tokens", tokens, "Evaluate the corpus's first N tokens (whole windows); default: all of it")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 50));
  app.add_option("--window", window, "Tokens per window; default: the model's positions, at most 128")
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--batch-size", batch_size,
                 "Windows per forward (1: the same numbers whatever the number of processes)")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--tuned-lens", tuned_lens_dir, "A tuned lens folder: adds its view")->check(CLI::ExistingDirectory);
  app.add_option("--jacobian-lens", jacobian_lens_file, "A Jacobian lens file: adds its view")
      ->check(CLI::ExistingFile);
  app.add_option("--out", out, "The HTML page to write")->capture_default_str();
  app.add_option("--json", json_out, "Also write the numbers as JSON (for --compare later)");
  app.add_option("--label", label, "The run's name on the page; default: the model's and the corpus's");
  app.add_option("--compare", compare, "Earlier runs' JSON to draw with this one (or alone, without --corpus)")
      ->check(CLI::ExistingFile);
  app.add_option("--nproc", nproc, "Processes on this machine, each taking every N-th window")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--checkpoint-dir", checkpoint_dir, "Each rank's partial results, resumed from when present");
  app.add_option("--checkpoint-every", checkpoint_every, "Windows between checkpoints")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--file-store", file_store, "Meet the other ranks through this file instead of MASTER_ADDR:PORT");
  app.add_option("--timeout", timeout_s, "Seconds to wait for another rank before stopping with an error")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--device", device_name, "cpu, or cuda where this libtorch has CUDA")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads per process")->check(CLI::Range(1, 1024))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  detail::CommandProgress progress;
  int64_t rank = 0;
  try {
    if (corpus_path.empty() && compare.empty())
      throw std::invalid_argument("give --corpus (a run to make), --compare (runs to draw), or both");
    const auto env = distributed::Environment::from_variables();
    if (nproc > 1 && env.launcher != "none")
      throw std::invalid_argument(fmt::format("--nproc: this process is already rank {} of {} (started by {})",
                                              env.rank, env.world_size, env.launcher));
    if (nproc > 1) {  // start the ranks, each this command without --nproc
      if (corpus_path.empty()) throw std::invalid_argument("--nproc needs --corpus");
      std::vector<std::string> args{"eval"};
      for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
      return distributed::launch_local(nproc, fs::read_symlink("/proc/self/exe").string(),
                                       detail::without_option(args, "--nproc"));
    }
    rank = env.rank;
    const bool writes = env.rank == 0;  // rank 0 writes the outputs; every rank computes its share
    // Earlier runs, and the outputs opened before any work, so a bad file or an unwritable path fails at once.
    std::vector<nlohmann::json> runs;
    if (writes)
      for (const auto& path : compare) {
        auto run = io::read_json_file(path);
        check_lens_evaluation_json(run, path.string());
        if (run.value("label", "").empty()) run["label"] = path.stem().string();
        runs.push_back(std::move(run));
      }
    std::optional<detail::CommandOutputs> outputs;
    if (writes) outputs.emplace(out, json_out);
    if (!corpus_path.empty()) {
      if (!app.count("--model") && !fs::exists(model_dir / "config.json"))
        throw std::invalid_argument(
            fmt::format("no --model given, and the default model is not at {}", model_dir.string()));
      auto group = distributed::ProcessGroup::connect(
          env, distributed::GroupOptions().timeout(std::chrono::seconds(timeout_s)).file_store(file_store));
      torch::set_num_threads(threads);
      if (writes) detail::note_blas_kernels();
      detail::check_command_device(device_name);
      const torch::Device device(device_name == "cuda" ? torch::Device(torch::kCUDA, static_cast<int>(env.local_rank))
                                                       : torch::Device(torch::kCPU));
      if (writes) progress.step(fmt::format("loading {} ...", model_dir.string()));
      const auto tokenizer = detail::load_command_tokenizer(model_dir, tokenizer_dir);
      auto model = models::from_pretrained(model_dir, device);
      set_requires_grad(false, model->module());
      const auto learned = detail::load_command_lenses(tuned_lens_dir, jacobian_lens_file);
      if (window == 0) window = std::min<int64_t>(128, model->max_positions());
      if (window > model->max_positions())
        throw std::invalid_argument(
            fmt::format("--window {}: the model takes at most {} positions", window, model->max_positions()));
      const auto corpus_format = format == "text"    ? io::CorpusFormat::plain_text
                                 : format == "jsonl" ? io::CorpusFormat::json_lines
                                                     : io::CorpusFormat::automatic;
      io::CorpusReader corpus(corpus_path, tokenizer,
                              io::CorpusOptions()
                                  .window(window)
                                  .format(corpus_format)
                                  .text_field(text_field)
                                  .rank(env.rank)
                                  .world_size(env.world_size));
      // --tokens: the corpus's first ceil(N / window) windows, of which this rank takes every world_size-th.
      int64_t max_windows = 0;
      if (tokens > 0) {
        const int64_t all = (tokens + window - 1) / window;
        if (all < env.world_size)
          throw std::invalid_argument(fmt::format("--tokens {}: {} windows of {} tokens, fewer than the {} processes",
                                                  tokens, all, window, env.world_size));
        max_windows = (all - env.rank + env.world_size - 1) / env.world_size;
      }
      if (writes)
        progress.step(fmt::format("loaded {} ({} layers); {} process{}", model_dir.string(), model->num_layers(),
                                  env.world_size, env.world_size > 1 ? "es" : ""),
                      true);
      const auto started = std::chrono::steady_clock::now();
      auto evaluation =
          evaluate_lens(*model, corpus,
                        LensEvalOptions().learned_lenses(learned).tally(stats::TallyOptions()
                                                                            .batch_size(batch_size)
                                                                            .max_windows(max_windows)
                                                                            .checkpoint_dir(checkpoint_dir)
                                                                            .checkpoint_every(checkpoint_every)
                                                                            .progress(writes)));
      evaluation.windows = distributed::reduce(evaluation.windows, group);
      if (writes) {
        auto json = to_json(evaluation, label.empty() ? fmt::format("{} on {}", model_dir.filename().string(),
                                                                    corpus_path.filename().string())
                                                      : label);
        json["model"] = model_dir.string();
        json["corpus"] = corpus_path.string();
        json["processes"] = env.world_size;
        json["seconds"]["total"] = detail::seconds_since(started);
        runs.insert(runs.begin(), json);
        if (auto* json_stream = outputs->json()) *json_stream << json.dump() << '\n';
        auto& notes = outputs->notes();  // (standard error when the JSON goes to standard output)
        notes << fmt::format("{} windows of {} tokens ({} scored) in {:.2f} s; logit lens KL(final || layer):",
                             evaluation.window_count(), window, evaluation.tokens(), detail::seconds_since(started));
        for (int64_t l = 0; l < evaluation.layers; ++l)
          notes << fmt::format(" {:.3f}", evaluation.mean("lens", l, "kl_to_final"));
        notes << "\n";
      }
      group.barrier();  // the others wait for rank 0's reduction before they leave
    }
    if (writes) {
      outputs->page() << lens_evaluation_page_html(runs, "Lens evaluation");
      outputs->commit();
    }
  } catch (const std::exception& e) {
    progress.step("", false);
    std::cerr << options.program() << " eval: error" << (rank > 0 ? fmt::format(" (rank {})", rank) : "") << ": "
              << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace baukit
