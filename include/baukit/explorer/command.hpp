/// @file explorer/command.hpp
/// @brief `baukit-lens serve`: loads the model once and serves the explorer (`explorer/server.hpp`) until
/// interrupted. Prints the page's address, access token included, on standard output. Needs CLI11 and, for the
/// server, cpp-httplib (`BAUKIT_WITH_HTTPLIB`); without it the command says so.
#pragma once

#include <fmt/format.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <baukit/lens/command_support.hpp>
#include <baukit/lens/jacobian_lens.hpp>
#include <baukit/lens/tuned_lens.hpp>
#include <baukit/models/auto.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#ifdef BAUKIT_WITH_HTTPLIB
#include <baukit/explorer/server.hpp>
#endif

namespace baukit::explorer {

/// Runs `baukit-lens serve` on `argc`, `argv` (`argv[0]` is "serve"); returns the exit status once SIGINT or
/// SIGTERM stops the server, or 1 after printing an error.
inline int serve_command(int argc, char** argv, const LensCommandOptions& options = {}) {
  namespace fs = std::filesystem;
  const auto program = options.program() + " serve";
  CLI::App app{"The lens explorer: a local server with the model loaded once; open the printed address", program};
  fs::path model_dir = options.default_model(), tokenizer_dir, tuned_lens_dir, jacobian_lens_file;
  std::string host = "127.0.0.1", device_name = "cpu";
  int port = 0, threads = 2;
  Limits limits;
  std::size_t max_prompt_bytes = limits.max_prompt_bytes();
  int64_t max_generate = limits.max_generate();
  double max_seconds = limits.max_seconds();
  app.add_option("--model", model_dir, "Checkpoint directory (Hugging Face layout); default: the embedded model")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tokenizer", tokenizer_dir, "Folder with tokenizer.json, or vocab.json and merges.txt")
      ->check(CLI::ExistingDirectory);
  app.add_option("--host", host,
                 "Address to listen on; anything but loopback lets other machines reach the model (a warning says so)")
      ->capture_default_str();
  app.add_option("--port", port, "Port (0: a free one)")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--max-generate", max_generate, "Most tokens a request may generate")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-prompt-bytes", max_prompt_bytes, "Longest prompt, in bytes")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "Seconds a request may take, waiting included")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--tuned-lens", tuned_lens_dir, "A tuned lens folder: adds its view")->check(CLI::ExistingDirectory);
  app.add_option("--jacobian-lens", jacobian_lens_file, "A Jacobian lens file: adds its view")
      ->check(CLI::ExistingFile);
  app.add_option("--device", device_name, "cpu, or cuda where this libtorch has CUDA")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads for the model")->check(CLI::Range(1, 1024))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
#ifndef BAUKIT_WITH_HTTPLIB
    throw std::runtime_error("this build has no cpp-httplib (Debian: libcpp-httplib-dev), so no server");
#else
    // SIGINT and SIGTERM are taken by sigwait below and by no other thread: blocked before any thread starts (the
    // model's loading starts libtorch's), and so blocked in all. A signal during the load stops the server at once.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    struct RestoreMask {  // a library caller's signal mask as it was, however this ends
      sigset_t mask;
      ~RestoreMask() { pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
    } restore{};
    pthread_sigmask(SIG_BLOCK, &stop_signals, &restore.mask);
    if (!app.count("--model") && !fs::exists(model_dir / "config.json"))
      throw std::invalid_argument(
          fmt::format("no --model given, and the default model is not at {}", model_dir.string()));
    baukit::detail::check_command_device(device_name);
    torch::set_num_threads(threads);
    baukit::detail::note_blas_kernels();
    const auto start = std::chrono::steady_clock::now();
    auto tokenizer = baukit::detail::load_command_tokenizer(model_dir, tokenizer_dir);
    auto model = models::from_pretrained(model_dir, device_name == "cuda" ? torch::kCUDA : torch::kCPU, false);
    set_requires_grad(false, model->module());
    const auto learned = baukit::detail::load_command_lenses(tuned_lens_dir, jacobian_lens_file);
    for (const auto& lens : learned) lens->check_fits(model->num_layers(), model_width(*model));
    std::cerr << fmt::format("loaded {} ({} layers) in {:.2f} s\n", model_dir.string(), model->num_layers(),
                             baukit::detail::seconds_since(start));
    Session session(model, std::move(tokenizer), model_dir.filename().string(), learned,
                    limits.max_generate(max_generate).max_prompt_bytes(max_prompt_bytes).max_seconds(max_seconds));
    Server server(session, ServerOptions().host(host).port(port));
    server.start();
    if (host != "127.0.0.1" && host != "::1" && host != "localhost")
      std::cerr << fmt::format(
          "warning: listening on {} rather than loopback: anyone who can reach this address and has the token can "
          "run the model\n",
          host);
    std::cout << fmt::format("serving {} at {}", model_dir.string(), server.url()) << std::endl;
    int received = 0;
    sigwait(&stop_signals, &received);
    std::cerr << fmt::format("stopping on signal {}\n", received);
    server.stop();
#endif
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace baukit::explorer
