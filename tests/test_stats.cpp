// Specification of the running statistics (baukit::stats): each against a direct computation on the whole data,
// ill-conditioned data included; shards merged equal one pass; states saved and loaded; bad input refused by name.
#include <baukit/baukit.hpp>
#include <baukit/stats.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <vector>

#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp

namespace fs = std::filesystem;
namespace stats = baukit::stats;

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max()).item<double>();
}

// The rows of `data` fed to `add` in uneven batches (1, 2, 3, ... rows).
template <typename Stat>
void add_in_batches(Stat& stat, const torch::Tensor& data) {
  int64_t start = 0;
  for (int64_t size = 1; start < data.size(0); ++size) {
    stat.add(data.slice(0, start, std::min(data.size(0), start + size)));
    start += size;
  }
}

// `data` cut into three uneven shards, each fed to its own statistic, merged in order.
template <typename Stat>
Stat merged_shards(const Stat& empty, const torch::Tensor& data) {
  const int64_t n = data.size(0);
  std::vector<Stat> shards(3, empty);
  add_in_batches(shards[0], data.slice(0, 0, n / 5));
  add_in_batches(shards[1], data.slice(0, n / 5, n / 2));
  add_in_batches(shards[2], data.slice(0, n / 2, n));
  Stat all = empty;
  for (const auto& shard : shards) all.merge(shard);
  return all;
}

template <typename Stat>
void check_same_state(const Stat& a, const Stat& b) {
  const auto sa = a.state(), sb = b.state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    CHECK(sa[i].first == sb[i].first);
    CHECK(torch::equal(sa[i].second, sb[i].second));
  }
}

}  // namespace

TEST_CASE("Mean, Variance and Covariance equal a direct two-pass computation, on ill-conditioned data too", "[stats]") {
  torch::manual_seed(7);
  const int64_t n = 1000;
  const auto z = torch::randn({n, 1}, torch::kFloat64);
  // Nearly collinear features far from zero: a mean of 1e8 with spreads of 1 and 1e-3.
  const auto data =
      torch::cat({z, z + 1e-3 * torch::randn({n, 1}, torch::kFloat64), torch::randn({n, 3}, torch::kFloat64)}, 1) + 1e8;
  const auto mean = data.mean(0);
  const auto centred = data - mean;
  const auto covariance = centred.t().mm(centred) / static_cast<double>(n - 1);

  stats::Mean m;
  stats::Variance v;
  stats::Covariance c;
  add_in_batches(m, data);
  add_in_batches(v, data);
  add_in_batches(c, data);
  CHECK(m.count() == n);
  CHECK(v.count() == n);
  CHECK(relative_error(m.mean(), mean) < 1e-15);
  CHECK(relative_error(v.mean(), mean) < 1e-15);
  CHECK(relative_error(v.variance(), covariance.diagonal()) < 1e-7);
  CHECK(relative_error(v.variance(false), covariance.diagonal() * (n - 1.0) / n) < 1e-7);
  CHECK(relative_error(c.covariance(), covariance) < 1e-7);
  CHECK(relative_error(c.variance(), covariance.diagonal()) < 1e-7);
  // The nearly collinear pair's covariance itself (the spread of the difference is 1e-3).
  const auto difference = c.covariance()[0][0] + c.covariance()[1][1] - 2 * c.covariance()[0][1];
  const auto want = covariance[0][0] + covariance[1][1] - 2 * covariance[0][1];
  CHECK(std::abs((difference - want).item<double>() / want.item<double>()) < 1e-3);
  const auto stdev = covariance.diagonal().sqrt();
  CHECK(relative_error(c.correlation(), covariance / stdev.unsqueeze(1) / stdev.unsqueeze(0)) < 1e-7);
  // What the naive sum of squares gives on the same data: the test would see it.
  const auto naive = ((data.square().sum(0) - data.sum(0).square() / n) / (n - 1.0));
  CHECK(relative_error(naive, covariance.diagonal()) > 1e-3);

  // Feature shapes are kept: [n, 2, 3] batches have a [2, 3] mean and a [6, 6] covariance.
  stats::Covariance shaped;
  shaped.add(torch::randn({10, 2, 3}));
  CHECK(shaped.mean().sizes().vec() == std::vector<int64_t>{2, 3});
  CHECK(shaped.variance().sizes().vec() == std::vector<int64_t>{2, 3});
  CHECK(shaped.covariance().sizes().vec() == std::vector<int64_t>{6, 6});
  stats::Variance scalars;  // a batch of scalars is one feature
  scalars.add(torch::tensor({1.0, 2.0, 4.0}));
  CHECK(scalars.variance().item<double>() == Approx(7.0 / 3.0));
}

TEST_CASE("SecondMoment, Bincount, Histogram and TopK equal torch's computation on the whole data", "[stats]") {
  torch::manual_seed(11);
  const auto data = torch::randn({500, 4}, torch::kFloat32);
  stats::SecondMoment s;
  add_in_batches(s, data);
  const auto rows = data.to(torch::kFloat64);
  CHECK(relative_error(s.moment(), rows.t().mm(rows) / 500.0) < 1e-12);

  const auto ids = torch::randint(0, 50, {40, 16}, torch::kInt64);
  stats::Bincount b;
  add_in_batches(b, ids);
  CHECK(torch::equal(b.bincount(), torch::bincount(ids.reshape({-1}))));
  CHECK(b.count() == 640);

  stats::Histogram h(stats::HistogramOptions(-2, 2, 16));
  add_in_batches(h, data);
  const auto inside = rows.masked_select((rows >= -2) & (rows <= 2));
  CHECK(torch::equal(h.counts(), torch::histc(inside, 16, -2, 2).to(torch::kInt64)));
  CHECK(h.below() == (rows < -2).sum().item<int64_t>());
  CHECK(h.above() == (rows > 2).sum().item<int64_t>());
  CHECK(h.count() == 2000);
  CHECK(h.edges().size(0) == 17);

  stats::TopK t(5);
  add_in_batches(t, data);
  const auto [values, indices] = t.topk();
  const auto [want_values, want_indices] = rows.t().topk(5, 1);
  CHECK(torch::equal(values, want_values));
  CHECK(torch::equal(indices, want_indices));
  // Ties go to the earlier sample.
  stats::TopK ties(2);
  ties.add(torch::tensor({{1.0}, {3.0}, {3.0}, {2.0}, {3.0}}));
  CHECK(torch::equal(ties.topk().second, torch::tensor({{1, 2}}, torch::kInt64)));
}

TEST_CASE("Statistics merged from shards equal one pass over the data", "[stats]") {
  torch::manual_seed(3);
  const auto data = torch::randn({300, 6}, torch::kFloat64) * 5 + 1e4;
  auto near = [](const torch::Tensor& a, const torch::Tensor& b) { return relative_error(a, b) < 1e-12; };
  stats::Mean m;
  add_in_batches(m, data);
  CHECK(near(merged_shards(stats::Mean(), data).mean(), m.mean()));
  stats::Variance v;
  add_in_batches(v, data);
  const auto vm = merged_shards(stats::Variance(), data);
  CHECK(vm.count() == 300);
  CHECK(near(vm.variance(), v.variance()));
  stats::Covariance c;
  add_in_batches(c, data);
  CHECK(near(merged_shards(stats::Covariance(), data).covariance(), c.covariance()));
  stats::SecondMoment s;
  add_in_batches(s, data);
  CHECK(near(merged_shards(stats::SecondMoment(), data).moment(), s.moment()));
  // Counts and the top values are exact.
  stats::TopK t(7);
  add_in_batches(t, data);
  check_same_state(merged_shards(stats::TopK(7), data), t);
  const auto ids = torch::randint(0, 1000, {300, 3}, torch::kInt64);
  stats::Bincount b;
  add_in_batches(b, ids);
  CHECK(torch::equal(merged_shards(stats::Bincount(), ids).bincount(), b.bincount()));
  stats::Histogram h(stats::HistogramOptions(1e4 - 10, 1e4 + 10, 40));
  add_in_batches(h, data);
  check_same_state(merged_shards(stats::Histogram(stats::HistogramOptions(1e4 - 10, 1e4 + 10, 40)), data), h);
  // Merging an empty statistic changes nothing; merging into one adopts the other.
  stats::Variance empty, adopted;
  v.merge(empty);
  CHECK(v.count() == 300);
  adopted.merge(v);
  check_same_state(adopted, v);
}

TEST_CASE(
    "Statistics saved as safetensors load back equal, files of another statistic or damaged are refused "
    "by name",
    "[stats][io]") {
  const auto dir = scratch("stats");
  torch::manual_seed(5);
  const auto data = torch::randn({64, 3, 2});
  // Each statistic fed, saved, loaded: the same state.
  auto round_trip = [&](auto stat, const torch::Tensor& batch, const std::string& name) {
    stat.add(batch);
    stat.save(dir / name);
    const auto loaded = decltype(stat)::load(dir / name);
    check_same_state(loaded, stat);
    return loaded;
  };
  round_trip(stats::Covariance(), data, "covariance.safetensors");
  CHECK(round_trip(stats::Mean(), data, "mean.safetensors").mean().sizes().vec() == std::vector<int64_t>{3, 2});
  const auto v = round_trip(stats::Variance(), data, "variance.safetensors");
  round_trip(stats::SecondMoment(), data, "second.safetensors");
  round_trip(stats::TopK(3), data, "topk.safetensors");
  round_trip(stats::Bincount(), torch::tensor({3, 1, 3}, torch::kInt64), "bincount.safetensors");
  round_trip(stats::Histogram(stats::HistogramOptions(-1, 1, 8)), data, "histogram.safetensors");
  // An empty statistic saves and loads too, and then learns its shape from its first batch.
  stats::Variance empty;
  empty.save(dir / "empty.safetensors");
  auto reloaded = stats::Variance::load(dir / "empty.safetensors");
  CHECK(reloaded.count() == 0);
  reloaded.add(data);
  check_same_state(reloaded, v);

  CHECK_THROWS_WITH(stats::Variance::load(dir / "mean.safetensors"),
                    Catch::Contains("mean.safetensors: holds a Mean, not a Variance"));
  baukit::io::save_safetensors(dir / "plain.safetensors", {{"count", torch::tensor(int64_t{1})}});
  CHECK_THROWS_WITH(stats::Mean::load(dir / "plain.safetensors"),
                    Catch::Contains("not a saved statistic (no 'baukit.stat' in __metadata__); a Mean was expected"));
  auto state = v.state();
  state.pop_back();  // no m2
  baukit::stats::detail::save_state(dir / "short.safetensors", "Variance", state);
  CHECK_THROWS_WITH(stats::Variance::load(dir / "short.safetensors"),
                    Catch::Contains("short.safetensors: no 'm2' [missing]"));
  state = v.state();
  state[3].second = state[3].second.to(torch::kFloat32);
  baukit::stats::detail::save_state(dir / "float.safetensors", "Variance", state);
  CHECK_THROWS_WITH(stats::Variance::load(dir / "float.safetensors"),
                    Catch::Contains("'m2' is Float [6], but a 1-dimensional Double was expected [shape]"));
  state = v.state();
  state[2].second = state[2].second.slice(0, 0, 5);
  baukit::stats::detail::save_state(dir / "narrow.safetensors", "Variance", state);
  CHECK_THROWS_WITH(stats::Variance::load(dir / "narrow.safetensors"),
                    Catch::Contains("'mean' [5] and 'm2' [6] do not match features [3, 2]"));
  CHECK_THROWS_WITH(stats::Mean::load(dir / "missing.safetensors"), Catch::Contains("missing.safetensors"));
}

TEST_CASE("Statistics refuse batches that do not fit, NaN, and settings that make no sense, by name", "[stats]") {
  stats::Variance v;
  v.add(torch::randn({4, 3}));
  CHECK_THROWS_WITH(v.add(torch::randn({4, 5})),
                    Catch::Contains("Variance.add: a batch of features [5] after batches of features [3]"));
  auto bad = torch::randn({4, 3});
  bad[2][1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(v.add(bad), Catch::Contains("Variance.add: the batch holds NaN or infinity (sample 2)"));
  CHECK(v.count() == 4);  // nothing of the refused batches was added
  stats::Covariance c;
  CHECK_THROWS_WITH(c.covariance(), Catch::Contains("Covariance: 0 samples are too few"));
  c.add(torch::randn({1, 2}));
  CHECK_THROWS_WITH(c.covariance(), Catch::Contains("1 samples are too few for an unbiased variance"));
  CHECK_THROWS_WITH(stats::Mean().mean(), Catch::Contains("Mean: no samples yet"));
  stats::Variance other;
  other.add(torch::randn({2, 2}));
  CHECK_THROWS_WITH(v.merge(other), Catch::Contains("Variance.merge: features [3] and [2] differ"));
  CHECK_THROWS_WITH(stats::TopK(0), Catch::Contains("TopK: k is 0"));
  CHECK_THROWS_WITH(stats::TopK(2).merge(stats::TopK(3)), Catch::Contains("TopK.merge: k 2 and 3 differ"));
  CHECK_THROWS_WITH(stats::Bincount().add(torch::tensor({1.5})), Catch::Contains("must be an integer tensor"));
  CHECK_THROWS_WITH(stats::Bincount().add(torch::tensor({2, -1}, torch::kInt64)),
                    Catch::Contains("the values hold -1, but counts are of values >= 0"));
  CHECK_THROWS_WITH(stats::Histogram(stats::HistogramOptions(1, 1, 4)),
                    Catch::Contains("the range [1, 1] must be finite and not empty"));
  CHECK_THROWS_WITH(stats::Histogram(stats::HistogramOptions(0, 1, 0)), Catch::Contains("0 bins"));
  stats::Histogram h(stats::HistogramOptions(0, 1, 4));
  CHECK_THROWS_WITH(h.merge(stats::Histogram(stats::HistogramOptions(0, 2, 4))),
                    Catch::Contains("Histogram.merge: [0, 1] in 4 bins and [0, 2] in 4 bins differ"));
  CHECK_THROWS_WITH(h.add(torch::tensor({0.5, std::numeric_limits<double>::infinity()})),
                    Catch::Contains("NaN or infinity"));
  CHECK_THROWS_WITH(v.add(torch::Tensor()), Catch::Contains("Variance.add: a batch needs a sample dimension"));
}

namespace {

const fs::path kDefaultModel = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";

std::vector<std::vector<int64_t>> all_windows(baukit::io::CorpusReader& corpus) {
  std::vector<std::vector<int64_t>> windows;
  while (auto window = corpus.next()) windows.push_back(*window);
  return windows;
}

// `tokens` cut into windows of `size`, the last shorter one dropped.
std::vector<std::vector<int64_t>> cut(const std::vector<int64_t>& tokens, std::size_t size) {
  std::vector<std::vector<int64_t>> windows;
  for (std::size_t i = 0; i + size <= tokens.size(); i += size)
    windows.emplace_back(tokens.begin() + static_cast<std::ptrdiff_t>(i),
                         tokens.begin() + static_cast<std::ptrdiff_t>(i + size));
  return windows;
}

}  // namespace

TEST_CASE(
    "CorpusReader: plain text and JSON lines, tokenized per document, joined by the separator, cut into "
    "windows, split by rank",
    "[stats][corpus]") {
  const auto dir = scratch("corpus");
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  const int64_t eos = tokenizer.special_token("<|endoftext|>").value();
  write_bytes(dir / "plain.txt",
              "The Space Needle is in Seattle.\nIt was built in 1962.\n\n\n  \nParis is the capital of France.\n\n"
              "Rome is in Italy, and the Colosseum is in Rome.");
  std::vector<int64_t> tokens = tokenizer.encode("The Space Needle is in Seattle.\nIt was built in 1962.\n");
  for (const auto* document :
       {"Paris is the capital of France.\n", "Rome is in Italy, and the Colosseum is in Rome.\n"}) {
    tokens.push_back(eos);
    const auto ids = tokenizer.encode(document);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  baukit::io::CorpusReader plain(dir / "plain.txt", tokenizer, baukit::io::CorpusOptions().window(4));
  CHECK(all_windows(plain) == cut(tokens, 4));
  CHECK(plain.documents() == 3);
  CHECK(plain.bytes_read() == plain.total_bytes());

  // The same documents as JSON lines (a blank line is skipped).
  write_bytes(dir / "lines.jsonl",
              "{\"text\": \"The Space Needle is in Seattle.\\nIt was built in 1962.\\n\", \"id\": 1}\n\n"
              "{\"text\": \"Paris is the capital of France.\\n\"}\n"
              "{\"text\": \"Rome is in Italy, and the Colosseum is in Rome.\\n\"}\n");
  baukit::io::CorpusReader lines(dir / "lines.jsonl", tokenizer, baukit::io::CorpusOptions().window(4));
  CHECK(all_windows(lines) == cut(tokens, 4));

  // Three ranks get windows 0, 3, 6 ...; 1, 4, ...; 2, 5, ...: together, each window once.
  const auto whole = cut(tokens, 3);
  for (int64_t rank = 0; rank < 3; ++rank) {
    baukit::io::CorpusReader share(dir / "plain.txt", tokenizer,
                                   baukit::io::CorpusOptions().window(3).rank(rank).world_size(3));
    const auto got = all_windows(share);
    REQUIRE(got.size() == (whole.size() - static_cast<std::size_t>(rank) + 2) / 3);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == whole[3 * i + static_cast<std::size_t>(rank)]);
  }
  // Skipping (to resume) lands where an uninterrupted reader is.
  baukit::io::CorpusReader resumed(dir / "plain.txt", tokenizer, baukit::io::CorpusOptions().window(3));
  CHECK(resumed.skip(4) == 4);
  CHECK(*resumed.next() == whole[4]);

  // A line longer than max_document_bytes is read in pieces cut at spaces: the same tokens, no separator inside.
  std::string long_line;
  for (int i = 0; i < 40; ++i) long_line += "The Space Needle is in Seattle. ";
  write_bytes(dir / "long.txt", long_line + "\n");
  baukit::io::CorpusReader pieces(dir / "long.txt", tokenizer,
                                  baukit::io::CorpusOptions().window(5).max_document_bytes(100));
  CHECK(all_windows(pieces) == cut(tokenizer.encode(long_line + "\n"), 5));
  CHECK(pieces.documents() == 1);
}

TEST_CASE("CorpusReader: bad corpora are errors naming the file and the line", "[stats][corpus]") {
  const auto dir = scratch("corpus-errors");
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  auto read = [&](const std::string& name, const std::string& bytes, baukit::io::CorpusOptions options = {}) {
    write_bytes(dir / name, bytes);
    baukit::io::CorpusReader corpus(dir / name, tokenizer, options.window(2));
    all_windows(corpus);
  };
  CHECK_THROWS_WITH(read("a.jsonl", "{\"text\": \"fine\"}\n{\"text\": 3}\n"),
                    Catch::Contains("a.jsonl: line 2 has no string field 'text'"));
  CHECK_THROWS_WITH(read("b.jsonl", "{\"text\": \"fine\"}\nnot json\n"),
                    Catch::Contains("b.jsonl: line 2 is not JSON"));
  CHECK_NOTHROW(read("c.jsonl", "{\"body\": \"x y z\"}\n", baukit::io::CorpusOptions().text_field("body")));
  CHECK_THROWS_WITH(read("d.jsonl", "{\"text\": \"" + std::string(200, 'x') + "\"}\n",
                         baukit::io::CorpusOptions().max_document_bytes(100)),
                    Catch::Contains("d.jsonl: line 1 is longer than max_document_bytes (100)"));
  CHECK_THROWS_WITH(read("e.txt", "fine\n\nbad \xff byte\n"),
                    Catch::Contains("e.txt: the document ending at line 3: tokenizer: the text is not valid UTF-8"));
  CHECK_THROWS_WITH(baukit::io::CorpusReader(dir / "missing.txt", tokenizer), Catch::Contains("missing.txt"));
  CHECK_THROWS_WITH(baukit::io::CorpusReader(dir, tokenizer), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(
      baukit::io::CorpusReader(dir / "e.txt", tokenizer, baukit::io::CorpusOptions().rank(2).world_size(2)),
      Catch::Contains("rank 2 of world size 2 does not exist"));
}

TEST_CASE("tally: a layer's statistic over a corpus equals feeding it by hand, a second call reads the cache",
          "[stats][tally]") {
  const auto dir = scratch("tally");
  auto model = baukit::models::from_pretrained(kDefaultModel);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(kDefaultModel);
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The Space Needle is located in Seattle. Paris is the capital of France.\n\n";
  write_bytes(dir / "corpus.txt", text);
  const auto options = baukit::io::CorpusOptions().window(16);
  int64_t batches = 0;
  const auto tally_options = baukit::stats::TallyOptions()
                                 .batch_size(4)
                                 .max_windows(10)
                                 .cache_dir(dir / "cache")
                                 .on_progress([&](const baukit::stats::TallyProgress&) { ++batches; });

  baukit::io::CorpusReader corpus(dir / "corpus.txt", tokenizer, options);
  const auto variance =
      baukit::stats::tally(baukit::stats::Variance(), *model, "transformer.h.2", corpus, tally_options);
  CHECK(batches == 3);  // 4 + 4 + 2 windows
  CHECK(variance.count() == 10 * 16);
  // By hand: the same windows in the same batches (a product's rounding depends on its shape, and the kernel a
  // CPU picks for it), each batch's output added in turn.
  baukit::io::CorpusReader again(dir / "corpus.txt", tokenizer, options);
  baukit::stats::Variance direct;
  for (const int64_t batch : {4, 4, 2}) {
    auto ids = torch::empty({batch, 16}, torch::kInt64);
    for (int64_t w = 0; w < batch; ++w) ids[w] = torch::tensor(*again.next());
    torch::NoGradGuard no_grad;
    baukit::Trace trace(*model, "transformer.h.2");
    model->forward(ids, {}, nullptr);
    direct.add(trace.output().reshape({batch * 16, -1}));
  }
  CHECK(relative_error(variance.variance(), direct.variance()) < 1e-12);
  CHECK(relative_error(variance.mean(), direct.mean()) < 1e-12);

  // The same call again: from the cache, no forward, the corpus untouched.
  baukit::io::CorpusReader fresh(dir / "corpus.txt", tokenizer, options);
  const auto cached = baukit::stats::tally(baukit::stats::Variance(), *model, "transformer.h.2", fresh, tally_options);
  CHECK(batches == 3);
  CHECK(fresh.windows_cut() == 0);
  check_same_state(cached, variance);
  // Another layer, or another statistic's settings, is another key.
  baukit::io::CorpusReader other(dir / "corpus.txt", tokenizer, options);
  baukit::stats::tally(baukit::stats::Variance(), *model, "transformer.h.3", other, tally_options);
  CHECK(batches == 6);
  baukit::io::CorpusReader topk(dir / "corpus.txt", tokenizer, options);
  const auto top = baukit::stats::tally(baukit::stats::TopK(3), *model, "transformer.h.2", topk, tally_options);
  CHECK(top.topk().first.size(1) == 3);
  baukit::io::CorpusReader topk5(dir / "corpus.txt", tokenizer, options);
  baukit::stats::tally(baukit::stats::TopK(5), *model, "transformer.h.2", topk5, tally_options);
  CHECK(batches == 12);
  CHECK(std::distance(fs::directory_iterator(dir / "cache"), fs::directory_iterator()) == 4);

  baukit::io::CorpusReader unknown(dir / "corpus.txt", tokenizer, options);
  CHECK_THROWS_WITH(baukit::stats::tally(baukit::stats::Mean(), *model, "transformer.h.99", unknown, tally_options),
                    Catch::Contains("transformer.h.99"));
  CHECK(unknown.windows_cut() == 0);
  baukit::io::CorpusReader too_long(dir / "corpus.txt", tokenizer, baukit::io::CorpusOptions().window(100000));
  CHECK_THROWS_WITH(baukit::stats::tally(baukit::stats::Mean(), *model, "transformer.h.1", too_long),
                    Catch::Contains("windows of 100000 tokens are longer than the model's"));
}

TEST_CASE("Quantile: exact while small, within its stated rank error when streaming, merged or reloaded", "[stats]") {
  torch::manual_seed(13);
  // Small: equal to torch::quantile.
  const auto small = torch::randn({200, 3}, torch::kFloat64);
  stats::Quantile exact(256);
  add_in_batches(exact, small);
  const std::vector<double> qs = {0, 0.01, 0.25, 0.5, 0.9, 0.99, 1};
  const auto want = torch::quantile(small, torch::tensor(qs, torch::kFloat64), 0).t();
  CHECK(exact.rank_error_bound() == 0);
  CHECK(relative_error(exact.quantiles(qs), want) < 1e-12);
  CHECK(torch::equal(exact.min(), std::get<0>(small.min(0))));

  // Large: three differently shaped features, 20,000 samples, resolution 256.
  const int64_t n = 20000;
  const auto data = torch::stack({torch::randn({n}, torch::kFloat64), torch::rand({n}, torch::kFloat64).pow(4) * 1e6,
                                  torch::randint(0, 10, {n}, torch::kFloat64)},
                                 1);
  auto rank_errors = [&](const stats::Quantile& q) {
    const auto got = q.quantiles({0.01, 0.1, 0.5, 0.9, 0.99});
    double worst = 0;
    for (int64_t f = 0; f < 3; ++f)
      for (int64_t i = 0; i < 5; ++i) {
        const double v = got[f][i].item<double>(), target = std::vector<double>{0.01, 0.1, 0.5, 0.9, 0.99}[i] * n;
        // The value's ranks in the data: any rank from (values below it) to (values at or below it) fits.
        const double below = (data.select(1, f) < v).sum().item<double>();
        const double upto = (data.select(1, f) <= v).sum().item<double>();
        worst = std::max(worst, target < below ? below - target : target > upto ? target - upto : 0.0);
      }
    return worst;
  };
  stats::Quantile streamed(256);
  for (int64_t start = 0; start < n; start += 1000) streamed.add(data.slice(0, start, start + 1000));
  CHECK(streamed.count() == n);
  CHECK(streamed.levels() > 3);
  const double bound = streamed.rank_error_bound();
  INFO("rank error bound " << bound << ", streamed " << rank_errors(streamed));
  CHECK(bound < 0.05 * n);
  CHECK(rank_errors(streamed) <= bound);
  CHECK(torch::equal(streamed.max(), std::get<0>(data.max(0))));
  // Shards merged: within the bound too.
  const auto merged = merged_shards(stats::Quantile(256), data);
  CHECK(merged.count() == n);
  CHECK(rank_errors(merged) <= merged.rank_error_bound());
  // Saved and loaded: the same sketch.
  const auto dir = scratch("quantile");
  streamed.save(dir / "q.safetensors");
  const auto loaded = stats::Quantile::load(dir / "q.safetensors");
  check_same_state(loaded, streamed);
  CHECK(torch::equal(loaded.quantiles({0.5}), streamed.quantiles({0.5})));
  CHECK_THROWS_WITH(streamed.quantiles({1.5}), Catch::Contains("1.5 is not in [0, 1]"));
  CHECK_THROWS_WITH(stats::Quantile(4), Catch::Contains("resolution 4 is below 8"));
  CHECK_THROWS_WITH(streamed.merge(stats::Quantile(512)), Catch::Contains("resolutions 256 and 512 differ"));
}
