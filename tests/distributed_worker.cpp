// One rank of the distributed tests' jobs (started by launch_local): tallies its share of a corpus on the default
// model, reduces the statistics over the job, and rank 0 saves them. `--die-rank R`: rank R exits after meeting
// the others, before the reduction, as a crashed process would; with `--die-after W` it exits once it has tallied
// W windows instead (mid-run, after its checkpoint with `--checkpoint-dir`). A rank that resumed from a checkpoint
// writes how many windows it found there to OUT/resumed-rank-R.txt. `--leave-rank R`: rank R exits with status 0
// after the rendezvous, so no launcher stops the others: they must fail by themselves. One window per forward: a
// float32 product's rounding depends on how many rows it has, so batches of other compositions would differ before any
// statistic.
#include <baukit/baukit.hpp>
#include <baukit/distributed.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  std::filesystem::path corpus_path, out;
  std::filesystem::path checkpoints;
  int64_t die_rank = -1, die_after = -1, leave_rank = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--corpus")
      corpus_path = argv[i + 1];
    else if (flag == "--out")
      out = argv[i + 1];
    else if (flag == "--die-rank")
      die_rank = std::stoll(argv[i + 1]);
    else if (flag == "--leave-rank")
      leave_rank = std::stoll(argv[i + 1]);
    else if (flag == "--die-after")
      die_after = std::stoll(argv[i + 1]);
    else if (flag == "--checkpoint-dir")
      checkpoints = argv[i + 1];
  }
  try {
    const auto env = baukit::distributed::Environment::from_variables();
    auto group = baukit::distributed::ProcessGroup::connect(
        env, baukit::distributed::GroupOptions().timeout(std::chrono::seconds(30)));
    if (env.rank == leave_rank) return 0;  // gone without a word, as a rank its launcher lost track of
    const auto model_dir = std::filesystem::path(BAUKIT_SOURCE_DIR) / "models" / "default";
    auto model = baukit::models::from_pretrained(model_dir);
    const auto tokenizer = baukit::Tokenizer::from_pretrained(model_dir);
    const auto options = baukit::io::CorpusOptions().window(16).rank(env.rank).world_size(env.world_size);
    int64_t resumed = 0;
    const auto tally = baukit::stats::TallyOptions()
                           .batch_size(1)
                           .progress(false)
                           .checkpoint_dir(checkpoints)
                           .checkpoint_every(2)
                           .on_progress([&](const baukit::stats::TallyProgress& p) {
                             resumed = p.resumed_windows;
                             if (env.rank == die_rank && die_after >= 0 && p.windows >= die_after) std::_Exit(3);
                           });
    baukit::io::CorpusReader for_variance(corpus_path, tokenizer, options);
    if (env.rank == die_rank && die_after < 0) {  // die after the rendezvous, before the reduction
      (void)baukit::stats::tally(baukit::stats::Variance(), *model, "transformer.h.3", for_variance, tally);
      std::_Exit(3);
    }
    const auto all_variance =
        baukit::distributed::tally(baukit::stats::Variance(), *model, "transformer.h.3", for_variance, group, tally);
    if (resumed > 0) std::ofstream(out / fmt::format("resumed-rank-{}.txt", env.rank)) << resumed << "\n";
    baukit::io::CorpusReader for_topk(corpus_path, tokenizer, options);
    const auto all_top =
        baukit::distributed::tally(baukit::stats::TopK(4), *model, "transformer.h.3", for_topk, group, tally);
    if (env.rank == 0) {
      all_variance.save(out / "variance.safetensors");
      all_top.save(out / "topk.safetensors");
    }
    group.barrier();
  } catch (const std::exception& e) {
    std::cerr << "distributed-worker: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
