// Specification of running as many processes: where a process stands (the launchers' variables), jobs of 1, 2
// and 3 processes on loopback giving one result (a tally, and baukit-lens eval), a dead rank stopping the job instead
// of hanging it, and a rank killed mid-run resuming from its checkpoint to the result of one run.
#include <fmt/format.h>
#include <sys/wait.h>

#include <baukit/distributed.hpp>
#include <baukit/stats.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "support.hpp"

namespace {

using baukit::distributed::Environment;

Environment with(const std::map<std::string, std::string>& variables) {
  return Environment::from_variables([&](const std::string& name) -> std::optional<std::string> {
    const auto found = variables.find(name);
    if (found == variables.end()) return std::nullopt;
    return found->second;
  });
}

// A scratch folder holding a corpus of 12 documents of `sentences`, and the worker's jobs over it (each
// `launch_local` of `nproc` ranks, writing to its own folder).
class WorkerJobs {
 public:
  WorkerJobs(const std::string& name, const std::string& sentences) : dir_(baukit_tests::scratch(name)) {
    std::string text;
    for (int i = 0; i < 12; ++i) text += sentences + "\n\n";
    baukit_tests::write_bytes(dir_ / "corpus.txt", text);
  }
  // Runs a job (meeting at `port`, 0: a free one) and returns the folder it wrote to.
  std::filesystem::path run(const std::string& name, int nproc, const std::vector<std::string>& extra = {},
                            int port = 0) const {
    const auto out = dir_ / name;
    std::filesystem::create_directories(out);
    std::vector<std::string> args = {"--corpus", (dir_ / "corpus.txt").string(), "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    baukit::distributed::launch_local(nproc, BAUKIT_DISTRIBUTED_WORKER, args, port);
    return out;
  }

 private:
  std::filesystem::path dir_;
};

}  // namespace

TEST_CASE("Environment: rank, world size and rendezvous from torchrun's, Slurm's or Open MPI's variables",
          "[distributed]") {
  const auto alone = with({});
  CHECK(alone.launcher == "none");
  CHECK(alone.rank == 0);
  CHECK(alone.world_size == 1);
  CHECK(alone.master_addr == "127.0.0.1");
  CHECK(alone.master_port == 29500);

  const auto torchrun = with({{"RANK", "3"},
                              {"WORLD_SIZE", "8"},
                              {"LOCAL_RANK", "1"},
                              {"MASTER_ADDR", "node7"},
                              {"MASTER_PORT", "12345"},
                              {"SLURM_PROCID", "5"},
                              {"SLURM_NTASKS", "9"}});  // torchrun inside a Slurm allocation: torchrun's count
  CHECK(torchrun.launcher == "torchrun");
  CHECK(torchrun.rank == 3);
  CHECK(torchrun.world_size == 8);
  CHECK(torchrun.local_rank == 1);
  CHECK(torchrun.master_addr == "node7");
  CHECK(torchrun.master_port == 12345);
  CHECK(!torchrun.agent_store);
  CHECK(with({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}}).agent_store);

  const auto slurm = with(
      {{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "2"}, {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.4"}});
  CHECK(slurm.launcher == "slurm");
  CHECK(slurm.rank == 5);
  CHECK(slurm.world_size == 6);
  CHECK(slurm.local_rank == 2);
  CHECK(slurm.master_addr == "10.0.0.4");
  CHECK(with({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"MASTER_ADDR", "head"}}).master_addr == "head");

  const auto mpi = with({{"OMPI_COMM_WORLD_RANK", "1"},
                         {"OMPI_COMM_WORLD_SIZE", "2"},
                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                         {"MASTER_ADDR", "10.0.0.9"}});
  CHECK(mpi.launcher == "openmpi");
  CHECK(mpi.rank == 1);
  CHECK(mpi.world_size == 2);
  CHECK(mpi.master_addr == "10.0.0.9");
}

TEST_CASE("Environment: malformed or inconsistent variables are errors naming them", "[distributed]") {
  CHECK_THROWS_WITH(with({{"RANK", "two"}, {"WORLD_SIZE", "4"}}),
                    Catch::Contains("RANK=two: a non-negative integer was expected"));
  CHECK_THROWS_WITH(with({{"RANK", "4"}, {"WORLD_SIZE", "4"}}), Catch::Contains("RANK=4 does not fit WORLD_SIZE=4"));
  CHECK_THROWS_WITH(with({{"RANK", "0"}}), Catch::Contains("RANK is set but WORLD_SIZE is not"));
  CHECK_THROWS_WITH(with({{"SLURM_NTASKS", "4"}}), Catch::Contains("SLURM_NTASKS is set but SLURM_PROCID is not"));
  CHECK_THROWS_WITH(with({{"MASTER_PORT", "70000"}}), Catch::Contains("MASTER_PORT=70000 is not a port"));
  CHECK_THROWS_WITH(with({{"MASTER_PORT", "-1"}}), Catch::Contains("MASTER_PORT=-1: a non-negative integer"));
  CHECK_THROWS_WITH(with({{"MASTER_ADDR", ""}}), Catch::Contains("MASTER_ADDR is empty"));
  CHECK_THROWS_WITH(with({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "0"}}),
                    Catch::Contains("OMPI_COMM_WORLD_RANK=1 does not fit OMPI_COMM_WORLD_SIZE=0"));
}

TEST_CASE("A tally reduced over 1, 2 and 3 processes on loopback gives one result, and a dead rank stops the job",
          "[distributed]") {
  const WorkerJobs jobs(
      "distributed", "The Space Needle is located in Seattle. The Eiffel Tower is located in Paris. Rome is in Italy.");
  const auto run = [&](int nproc, const std::vector<std::string>& extra = {}) {
    return jobs.run(std::to_string(nproc), nproc, extra);
  };
  const auto one = run(1);
  const auto v1 = baukit::stats::Variance::load(one / "variance.safetensors");
  const auto t1 = baukit::stats::TopK::load(one / "topk.safetensors");
  REQUIRE(v1.count() > 16 * 10);
  for (const int nproc : {2, 3}) {
    INFO(nproc << " processes");
    const auto out = run(nproc);
    const auto v = baukit::stats::Variance::load(out / "variance.safetensors");
    CHECK(v.count() == v1.count());
    CHECK(((v.variance() - v1.variance()).abs().max() / v1.variance().abs().max()).item<double>() < 1e-9);
    CHECK(((v.mean() - v1.mean()).abs().max() / v1.mean().abs().max()).item<double>() < 1e-9);
    // The top values are the same; a reduced TopK numbers samples rank by rank.
    CHECK(torch::equal(baukit::stats::TopK::load(out / "topk.safetensors").topk().first, t1.topk().first));
  }
  // Under torchrun the agent serves the store and every rank is its client: a store served here stands for it.
  {
    const int port = baukit::distributed::free_loopback_port();
    c10d::TCPStoreOptions agent;
    agent.port = static_cast<std::uint16_t>(port);
    agent.isServer = true;
    agent.waitWorkers = false;
    const auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", agent);
    store->set("torchelastic/agent-key", std::vector<uint8_t>{1});  // the agent's own keys do not disturb ours
    ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
    std::filesystem::path out;
    const auto launched = [&] {
      try {
        out = jobs.run("agent", 2, {}, port);
        return std::string();
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
    }();
    ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
    REQUIRE(launched.empty());
    const auto v = baukit::stats::Variance::load(out / "variance.safetensors");
    CHECK(((v.variance() - v1.variance()).abs().max() / v1.variance().abs().max()).item<double>() < 1e-9);
  }
  // Rank 1 of 3 dies after the rendezvous: the others fail at the reduction, the launcher names rank 1.
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(run(3, {"--die-rank", "1"}), Catch::Contains("rank 1 of 3 exited with status 3"));
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(60));
  // A rank that leaves quietly (status 0, so the launcher stops nobody): the others fail by themselves in the
  // reduction, within the group's timeout (30 s in the worker), instead of waiting for it for ever.
  const auto left = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(run(2, {"--leave-rank", "1"}), Catch::Contains("rank 0 of 2 exited with status 1"));
  CHECK(std::chrono::steady_clock::now() - left < std::chrono::seconds(60));
}

TEST_CASE("A rank killed mid-run resumes from its checkpoint: the job's result is one run's, no window twice",
          "[distributed]") {
  namespace fs = std::filesystem;
  const WorkerJobs jobs(
      "distributed-resume",
      "The Colosseum is in Rome. Big Ben is located in London. The CN Tower is a landmark in Toronto.");
  const auto run = [&](const std::string& name, int nproc, const std::vector<std::string>& extra = {}) {
    return jobs.run(name, nproc, extra);
  };
  const auto whole = baukit::stats::Variance::load(run("one", 1) / "variance.safetensors");
  const auto checkpoints = baukit_tests::scratch("distributed-resume-checkpoints");
  CHECK_THROWS_WITH(run("killed", 2, {"--checkpoint-dir", checkpoints.string(), "--die-rank", "1", "--die-after", "4"}),
                    Catch::Contains("rank 1 of 2 exited with status 3"));
  REQUIRE(fs::exists(checkpoints));  // rank 1's partial result (and maybe rank 0's) is there
  CHECK(std::distance(fs::directory_iterator(checkpoints), fs::directory_iterator()) >= 1);
  const auto resumed = run("resumed", 2, {"--checkpoint-dir", checkpoints.string()});
  CHECK(baukit_tests::read_bytes(resumed / "resumed-rank-1.txt") == "4\n");
  const auto again = baukit::stats::Variance::load(resumed / "variance.safetensors");
  CHECK(again.count() == whole.count());  // no window counted twice, none lost
  CHECK(((again.variance() - whole.variance()).abs().max() / whole.variance().abs().max()).item<double>() < 1e-9);
  CHECK(((again.mean() - whole.mean()).abs().max() / whole.mean().abs().max()).item<double>() < 1e-9);
  // The checkpoints, complete now, stay: the same job again reads no window (nothing to resume but the result).
  const auto again_out = run("again", 2, {"--checkpoint-dir", checkpoints.string()});
  CHECK(baukit_tests::read_bytes(again_out / "resumed-rank-1.txt") == fmt::format("{}\n", whole.count() / 16 / 2));
}

namespace {

// Runs `command` in a shell, returning its exit status and what it wrote (stdout and stderr).
std::pair<int, std::string> shell(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  while (const auto n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// The process whose environment holds both `marker` and `rank_variable` ("RANK=1"), or -1.
pid_t find_process(const std::string& marker, const std::string& rank_variable) {
  namespace fs = std::filesystem;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream file(entry.path() / "environ", std::ios::binary);
    std::string variable;
    bool has_marker = false, has_rank = false;
    while (std::getline(file, variable, '\0')) {
      has_marker |= variable == marker;
      has_rank |= variable == rank_variable;
    }
    if (has_marker && has_rank) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// The largest relative difference between the numbers of two lens evaluations (JSON), over every view, measure,
// layer, mean and interval.
double largest_difference(const nlohmann::json& a, const nlohmann::json& b) {
  double worst = 0;
  for (const auto& [name, view] : a["views"].items())
    for (const auto& [key, measure] : view.items()) {
      if (!measure.is_object()) continue;
      for (const char* part : {"mean", "ci95"})
        for (std::size_t l = 0; l < measure[part].size(); ++l) {
          const auto& x = measure[part][l];
          const auto& y = b["views"][name][key][part][l];
          REQUIRE(x.is_null() == y.is_null());
          if (x.is_null()) continue;
          const double scale = std::max(std::abs(x.get<double>()), 1e-12);
          worst = std::max(worst, std::abs(x.get<double>() - y.get<double>()) / scale);
        }
    }
  return worst;
}

}  // namespace

TEST_CASE("baukit-lens eval over 1, 2 and 3 processes gives one result, and a job killed mid-run resumes to it",
          "[distributed][evaluation]") {
  namespace fs = std::filesystem;
  using baukit_tests::quoted;
  const auto dir = baukit_tests::scratch("distributed-eval");
  const auto held_out = baukit_tests::read_bytes(fs::path(BAUKIT_SOURCE_DIR) / "models" / "default" / "held-out.txt");
  std::string text;
  for (int i = 0; i < 8; ++i) text += held_out + "\n";
  baukit_tests::write_bytes(dir / "corpus.txt", text);
  const auto eval = [&](const std::string& name, const std::string& extra) {
    // The variable marks the job's processes, so that the test can find its ranks.
    return shell(fmt::format("BAUKIT_TEST_JOB={} {} eval --corpus {} --window 16 --threads 1 --json {} --out {} {}",
                             quoted((dir / name).string()), quoted(BAUKIT_LENS_EXE),
                             quoted((dir / "corpus.txt").string()), quoted((dir / (name + ".json")).string()),
                             quoted((dir / (name + ".html")).string()), extra));
  };
  const auto one = eval("one", "");
  REQUIRE(one.first == 0);
  const auto whole = baukit_tests::read_json(dir / "one.json");
  CHECK(whole["windows"].get<int64_t>() >= 100);
  for (const int nproc : {2, 3}) {
    INFO(nproc << " processes");
    const auto result = eval(std::to_string(nproc), fmt::format("--nproc {}", nproc));
    REQUIRE(result.first == 0);
    const auto json = baukit_tests::read_json(dir / (std::to_string(nproc) + ".json"));
    CHECK(json["windows"] == whole["windows"]);
    CHECK(json["processes"] == nproc);
    CHECK(largest_difference(whole, json) < 1e-9);
  }
  // The ranks meet through a file instead of rank 0's TCP store (a shared file system's way).
  const auto through_file =
      eval("file-store", fmt::format("--nproc 2 --file-store {}", quoted((dir / "store").string())));
  REQUIRE(through_file.first == 0);
  CHECK(largest_difference(whole, baukit_tests::read_json(dir / "file-store.json")) < 1e-9);
  // Rank 1 of 2 killed (SIGKILL) once both ranks have checkpointed: the job stops naming it; run again, it resumes.
  const auto checkpoints = dir / "checkpoints";
  auto killed = std::async(std::launch::async, [&] {
    return eval("killed",
                fmt::format("--nproc 2 --checkpoint-dir {} --checkpoint-every 2", quoted(checkpoints.string())))
        .second;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  pid_t rank1 = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code error;
    const auto partials = fs::exists(checkpoints, error)
                              ? std::distance(fs::directory_iterator(checkpoints, error), fs::directory_iterator())
                              : 0;
    if (partials >= 2 && (rank1 = find_process("BAUKIT_TEST_JOB=" + (dir / "killed").string(), "RANK=1")) > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(rank1 > 0);
  REQUIRE(::kill(rank1, SIGKILL) == 0);
  const auto killed_output = killed.get();
  CHECK_THAT(killed_output, Catch::Contains("rank 1 of 2 was killed by signal 9"));
  CHECK(!fs::exists(dir / "killed.json"));  // nothing half-written
  const auto resumed = eval("killed", fmt::format("--nproc 2 --checkpoint-dir {}", quoted(checkpoints.string())));
  REQUIRE(resumed.first == 0);
  CHECK_THAT(resumed.second, Catch::Contains("resumed after"));
  CHECK(largest_difference(whole, baukit_tests::read_json(dir / "killed.json")) < 1e-9);
}
