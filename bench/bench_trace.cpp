// The cost of the hook mechanism on a deep stack of linear layers, measured side by side in one run:
// plain libtorch Linear vs Traced Linear with no trace attached vs every layer traced (retaining outputs).
//   build/bench/bench-trace [--layers 64] [--width 1024] [--rows 16]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <baukit/baukit.hpp>

#include "common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Hook overhead benchmark"};
  int64_t layers = 64, width = 1024, rows = 16, rounds = 41;
  app.add_option("--layers", layers)->capture_default_str();
  app.add_option("--width", width)->capture_default_str();
  app.add_option("--rows", rows)->capture_default_str();
  app.add_option("--rounds", rounds, "Interleaved rounds; the median is reported")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(2);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);

  std::vector<torch::nn::Linear> plain;
  std::vector<baukit::TracedLinear> traced;
  auto stack = std::make_shared<torch::nn::Module>();  // holds the traced layers under names for TraceDict
  for (int64_t i = 0; i < layers; ++i) {
    plain.emplace_back(width, width);
    traced.push_back(baukit::traced(plain.back()));  // same weights
    stack->register_module(std::to_string(i), traced.back());
  }
  const auto x = torch::randn({rows, width});
  auto run_plain = [&] {
    auto h = x;
    for (auto& layer : plain) h = layer(h);
  };
  auto run_traced = [&] {
    auto h = x;
    for (auto& layer : traced) h = layer(h);
  };
  std::vector<std::string> names;
  for (int64_t i = 0; i < layers; ++i) names.push_back(std::to_string(i));

  // Interleave the three variants so drift in machine speed affects all alike.
  // Four variants, timed in every round in a rotating order; each is reported as the median over rounds of its
  // time divided by the plain time of the same round (paired ratios cancel drift in machine speed).
  // "all traced": a TraceDict over every layer stays attached across forwards, each forward replacing the
  // retained outputs. "fresh TraceDict": one is attached for each forward and destroyed after it; the memory its
  // retained outputs held goes back to the system and is faulted in again on the next forward.
  auto repeat = [&](const std::function<void()>& fn) {
    return bench::time_once([&] {
             for (int i = 0; i < 5; ++i) fn();
           }) /
           5;
  };
  baukit::TraceDict attached(*stack, names);
  attached.close();
  std::vector<std::function<double()>> variants = {
      [&] { return repeat(run_plain); },
      [&] { return repeat(run_traced); },
      [&] {
        attached = baukit::TraceDict(*stack, names);
        run_traced();
        const double t = repeat(run_traced);
        attached.close();
        return t;
      },
      [&] {
        return repeat([&] {
          baukit::TraceDict tr(*stack, names);
          run_traced();
        });
      },
  };
  std::vector<std::vector<double>> times(variants.size()), ratios(variants.size());
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<double> t(variants.size());
    for (std::size_t i = 0; i < variants.size(); ++i) {
      const auto v = (i + static_cast<std::size_t>(round)) % variants.size();
      t[v] = variants[v]();
    }
    for (std::size_t v = 0; v < variants.size(); ++v) {
      times[v].push_back(t[v]);
      ratios[v].push_back(t[v] / t[0]);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  fmt::print("{} layers of Linear({}, {}) on {} rows; {} rounds, each variant 5 forwards per round, rotating order\n",
             layers, width, width, rows, rounds);
  fmt::print("plain libtorch            {:8.3f} ms\n", median(times[0]) * 1e3);
  fmt::print("traceable, no trace       {:8.3f} ms   ratio {:.4f} (target <= 1.01)\n", median(times[1]) * 1e3,
             median(ratios[1]));
  fmt::print("traceable, all traced     {:8.3f} ms   ratio {:.4f} (target <= 1.02)\n", median(times[2]) * 1e3,
             median(ratios[2]));
  fmt::print("  fresh TraceDict per forward: {:.3f} ms, ratio {:.4f} (retained outputs need newly faulted memory)\n",
             median(times[3]) * 1e3, median(ratios[3]));
  return 0;
}
