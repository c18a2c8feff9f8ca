/// @file lens/command.hpp
/// @brief `baukit-lens` as a library call: `lens_command(argc, argv)` parses `baukit-lens`'s command line and runs
/// it, so a program that registers its own family (`register_family`) gets the same command for it. Needs CLI11
/// (header-only; `find_package(CLI11)` and link `CLI11::CLI11`), which the rest of the library does not.
///
/// @code
/// // At namespace scope: the family, registered before main runs (see docs/adding-a-model-family.md).
/// static const bool registered = baukit::models::register_family("my_family", my_loader);
/// // In main: baukit-lens's options and output, for every registered family.
/// const int status = baukit::lens_command(argc, argv, baukit::LensCommandOptions().program("my-lens"));
/// @endcode
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <baukit/explorer/command.hpp>
#include <baukit/lens/command_support.hpp>
#include <baukit/lens/evaluation_command.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

namespace baukit {

/// Runs `baukit-lens` on `argc`, `argv` (its options: `--help`, or the README; `eval ...` runs
/// `lens_evaluation_command`, `serve ...` the explorer's `explorer::serve_command`), for any family `from_pretrained`
/// knows, those the program registered included. Returns the exit status: 0, or 1 after printing the error.
inline int lens_command(int argc, char** argv, const LensCommandOptions& options = {}) {
  namespace fs = std::filesystem;
  if (argc > 1 && std::string(argv[1]) == "eval") return lens_evaluation_command(argc - 1, argv + 1, options);
  if (argc > 1 && std::string(argv[1]) == "serve") return explorer::serve_command(argc - 1, argv + 1, options);
  CLI::App app{
      "The logit lens: decode every layer's hidden state through the final norm and unembedding, as an HTML grid",
      options.program()};
  fs::path model_dir = options.default_model(), tokenizer_dir, out = "lens.html", json_out, prompt_file;
  std::string prompt = ". The Space Needle is located in", device_name = "cpu", target;
  int64_t topk = 5;
  int threads = 2;
  bool deltas = false, attention_rows = false, truncate = false;
  app.add_option("--model", model_dir, "Checkpoint directory (Hugging Face layout); default: the embedded model")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tokenizer", tokenizer_dir,
                 "Folder with tokenizer.json (and tokenizer_config.json), or GPT-2's vocab.json and merges.txt; "
                 "default: the model's folder")
      ->check(CLI::ExistingDirectory);
  auto* prompt_option = app.add_option("--prompt", prompt, "The prompt")->capture_default_str();
  app.add_option("--prompt-file", prompt_file, "Read the prompt from a file (UTF-8), or from standard input for -")
      ->excludes(prompt_option);
  app.add_option("--topk", topk, "Tokens per cell in the hover")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_flag("--deltas", deltas, "Open the page on the delta lens (each layer's change)");
  app.add_flag("--attention-rows", attention_rows, "Add rows for the stream after each attention, before the MLP");
  app.add_option("--target", target, "A token (e.g. \" Seattle\") whose rank every cell reports");
  int64_t generate = 0;
  app.add_option("--generate", generate,
                 "Continue the prompt by this many tokens (greedy, with the key/value cache) and show the lens over "
                 "prompt and continuation")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_flag("--truncate", truncate,
               "Keep the last tokens of a prompt longer than the model takes, instead of failing");
  app.add_option("--out", out, "The HTML page to write")->capture_default_str();
  app.add_option("--json", json_out, "Also write every number the page shows as JSON");
  app.add_option("--device", device_name, "cpu, or cuda where this libtorch has CUDA")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads")->check(CLI::Range(1, 1024))->capture_default_str();
  fs::path tuned_lens_dir, jacobian_lens_file;
  app.add_option("--tuned-lens", tuned_lens_dir,
                 "A tuned lens folder (config.json and params.pt, as tuned-lens saves them): adds its view")
      ->check(CLI::ExistingDirectory);
  app.add_option("--jacobian-lens", jacobian_lens_file,
                 "A Jacobian lens file (torch.save of J per layer): adds its view")
      ->check(CLI::ExistingFile);
  bool timings = false;
  app.add_flag("--timings", timings, "Print the seconds of each phase (load, forward, decode, page) as a JSON line");
  app.footer(fmt::format(
      "{0} eval --help: the lens over a corpus (per-layer means with 95% intervals)\n{0} serve --help: the explorer, "
      "a local server with the model loaded once",
      options.program()));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  detail::CommandProgress progress;
  try {
    if (!app.count("--model") && !fs::exists(model_dir / "config.json"))
      throw std::invalid_argument(fmt::format(
          "no --model given, and the default model is not at {} (baukit-lens's embedded model is installed in "
          "<prefix>/share/baukit/models/default beside <prefix>/bin/baukit-lens; or set BAUKIT_DEFAULT_MODEL)",
          model_dir.string()));
    if (app.count("--target") && target.empty())
      throw std::invalid_argument("--target: the token is empty; give one token, e.g. \" Seattle\"");
    if (!prompt_file.empty()) prompt = detail::read_prompt_file(prompt_file);
    detail::CommandOutputs outputs(out, json_out);
    torch::set_num_threads(threads);
    detail::note_blas_kernels();
    detail::check_command_device(device_name);
    const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);

    nlohmann::ordered_json phases;
    auto start = std::chrono::steady_clock::now();
    progress.step(fmt::format("loading {} ...", model_dir.string()));
    // tokenizer.json, or vocab.json and merges.txt, from --tokenizer (or the model); added tokens (GPT-J's) from the
    // model's folder first.
    const auto tokenizer = detail::load_command_tokenizer(model_dir, tokenizer_dir);
    // No NaN scan here (it would read all the weights before the forward does): a non-finite stream or output is
    // caught by the lens, and then a scanning load names the weights at fault.
    auto model = baukit::models::from_pretrained(model_dir, device, /*check_finite=*/false);
    baukit::set_requires_grad(false, model->module());
    const auto learned = detail::load_command_lenses(tuned_lens_dir, jacobian_lens_file);
    if (!learned.empty() && attention_rows)
      throw std::invalid_argument("--attention-rows: learned lenses translate block outputs only; leave one out");
    for (const auto& lens : learned) lens->check_fits(model->num_layers(), baukit::model_width(*model));
    phases["load"] = detail::seconds_since(start);
    progress.step(fmt::format("loaded {} ({} layers) in {:.2f} s", model_dir.string(), model->num_layers(),
                              detail::seconds_since(start)),
                  true);

    auto ids = tokenizer.encode(prompt);
    const std::string prompt_flag = prompt_file.empty() ? "--prompt" : "--prompt-file";
    if (ids.empty()) throw std::invalid_argument(prompt_flag + ": the prompt is empty");
    if (generate >= model->max_positions())
      throw std::invalid_argument(fmt::format("--generate: {} tokens, but the model takes at most {} positions in all",
                                              generate, model->max_positions()));
    const int64_t room = model->max_positions() - generate;  // positions left for the prompt
    if (static_cast<int64_t>(ids.size()) > room) {
      const auto why = generate ? fmt::format(" with {} generated", generate) : std::string();
      if (!truncate)
        throw std::invalid_argument(
            fmt::format("{}: {} tokens, but the model takes at most {}{} (pass --truncate to keep the last {})",
                        prompt_flag, ids.size(), room, why, room));
      ids.erase(ids.begin(), ids.end() - room);
    }
    int64_t target_id = -1;
    if (!target.empty()) {
      const auto target_ids = tokenizer.encode(target, baukit::EncodeOptions{false, false});  // no BOS
      if (target_ids.size() != 1)
        throw std::invalid_argument(fmt::format(
            "--target: '{}' is {} tokens; give exactly one token (mind the leading space)", target, target_ids.size()));
      target_id = target_ids.front();
    }
    tokenizer.check_ids_fit(ids, model->vocab_size());
    if (target_id >= 0) tokenizer.check_ids_fit({target_id}, model->vocab_size());

    start = std::chrono::steady_clock::now();
    const auto options =
        baukit::LensOptions().topk(topk).target(target_id).attention_rows(attention_rows).learned_lenses(learned);
    baukit::LensResult result;
    try {
      int64_t generated = 0;
      const baukit::LensProgress on_rows = [&](int64_t done, int64_t total) {
        if (!phases.contains("forward")) {
          phases["forward"] = detail::seconds_since(start);
          if (generate > 0)
            progress.step(fmt::format("generated {} tokens in {:.2f} s", generated, detail::seconds_since(start)),
                          true);
        }
        progress.step(fmt::format("decoding rows {}/{}", done, total));
      };
      if (generate > 0)
        result = baukit::generate_lens(
            *model, ids, generate, options, {},
            [&](int64_t done, int64_t total) {
              generated = done;
              progress.step(fmt::format("generating tokens {}/{}", done, total));
            },
            on_rows);
      else
        result = baukit::logit_lens(*model, ids, options, on_rows);
    } catch (const baukit::NonFiniteError&) {
      (void)baukit::models::from_pretrained(model_dir, torch::kCPU, /*check_finite=*/true);  // throws naming them
      throw;  // the weights are finite: an overflow
    }
    phases["decode"] = detail::seconds_since(start) - phases["forward"].get<double>();
    progress.step(fmt::format("decoded {} tokens x {} rows in {:.2f} s", result.ids.size(), result.lens.rows.size(),
                              detail::seconds_since(start)),
                  true);

    start = std::chrono::steady_clock::now();
    outputs.page() << baukit::lens_page_html(
        result, tokenizer,
        baukit::LensPageOptions().deltas(deltas).title("Logit lens: " + model_dir.filename().string()));
    if (auto* json_stream = outputs.json()) {
      auto json = baukit::to_json(result, tokenizer);
      json["model"] = model_dir.string();
      *json_stream << json.dump() << '\n';
    }
    outputs.commit();
    phases["page"] = detail::seconds_since(start);
    if (timings) outputs.notes() << "timings: " << phases.dump() << "\n";
  } catch (const std::exception& e) {
    progress.step("", false);
    std::cerr << options.program() << ": error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace baukit
