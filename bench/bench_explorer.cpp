// The explorer's per-request latency against a fresh baukit-lens process, in one run:
//   build/bench/bench-explorer [--model DIR] [--lens build/tools/baukit-lens] [--runs N]
// Starts `baukit-lens serve` on the model (one load), then times the same prompts both ways: a POST /api/lens to
// the server (the answer's JSON included) and `baukit-lens --prompt ... --out FILE` as a new process (start-up,
// load, forward, decode, page), each the median of --runs after one warm-up. Prints both and their ratio, without
// and with 10 generated tokens.
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>
#include <regex>

#include "common.hpp"

namespace {

namespace fs = std::filesystem;

// `baukit-lens serve` as a child; returns its pid and the address line it prints.
std::pair<pid_t, std::string> start_server(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  char ch = 0;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  ::close(out[0]);
  return {pid, line};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Explorer latency benchmark: a request to baukit-lens serve against a fresh baukit-lens process"};
  fs::path dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default",
           lens_exe = fs::path(BAUKIT_BINARY_DIR) / "tools" / "baukit-lens";
  int runs = 5;
  app.add_option("--model", dir, "Checkpoint directory; default: the embedded model")->check(CLI::ExistingDirectory);
  app.add_option("--lens", lens_exe, "The baukit-lens program")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs per measurement (the median is printed)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const auto [pid, line] = start_server({lens_exe.string(), "serve", "--model", dir.string(), "--threads", "2"});
  std::smatch match;
  if (!std::regex_search(line, match, std::regex(R"(http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]+))"))) {
    fmt::print(stderr, "bench-explorer: the server printed '{}', not its address\n", line);
    return 1;
  }
  httplib::Client client("127.0.0.1", std::stoi(match[1]));
  client.set_read_timeout(600, 0);
  const httplib::Headers token{{"X-Baukit-Token", match[2]}};
  const std::string prompt = ". The Space Needle is located in";
  const auto page = fs::temp_directory_path() / fmt::format("bench-explorer-{}.html", ::getpid());
  fmt::print("model {}; prompt '{}'; median of {} runs each, 2 threads\n", dir.string(), prompt, runs);
  fmt::print("{:<26} {:>12} {:>14} {:>9}\n", "request", "server (s)", "fresh run (s)", "ratio");
  int status = 0;
  for (const int generate : {0, 10}) {
    const auto body = nlohmann::json{{"prompt", prompt}, {"generate", generate}}.dump();
    std::size_t answer_bytes = 0;
    const double served = bench::median_seconds(
        [&] {
          auto answer = client.Post("/api/lens", token, body, "application/json");
          if (!answer || answer->status != 200)
            throw std::runtime_error(answer ? answer->body : std::string("no answer from the server"));
          answer_bytes = answer->body.size();
        },
        runs);
    std::vector<std::string> fresh_args = {lens_exe.string(),
                                           "--model",
                                           dir.string(),
                                           "--prompt",
                                           prompt,
                                           "--threads",
                                           "2",
                                           "--out",
                                           page.string(),
                                           "--generate",
                                           std::to_string(generate)};
    const double fresh = bench::median_seconds(
        [&] {
          const auto child = bench::run_child(fresh_args);
          if (child.status != 0) status = 1;
        },
        runs);
    fmt::print("{:<26} {:>12.3f} {:>14.3f} {:>8.1f}x   (answer {:.0f} KB)\n",
               fmt::format("lens, {} generated", generate), served, fresh, fresh / served, answer_bytes / 1e3);
  }
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  fs::remove(page);
  if (status) fmt::print(stderr, "bench-explorer: a fresh baukit-lens run failed\n");
  return status;
}
