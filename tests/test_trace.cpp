// Specification of the hook mechanism, Trace, TraceDict and the module utilities.
#include <baukit/baukit.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "support.hpp"

namespace {

// A model written for baukit-cpp: a stack of traceable layers, with children of several kinds.
struct ToyImpl : torch::nn::Cloneable<ToyImpl>, baukit::Hookable {
  baukit::TracedLinear in{nullptr}, out{nullptr};
  baukit::TracedReLU act{nullptr};
  torch::nn::Sequential tail{nullptr};
  torch::nn::Linear plain{nullptr};
  ToyImpl() { reset(); }
  void reset() override {
    torch::manual_seed(0);
    in = register_module("in", baukit::TracedLinear(4, 8));
    act = register_module("act", baukit::TracedReLU());
    out = register_module("out", baukit::TracedLinear(8, 3));
    tail = register_module("tail", torch::nn::Sequential(torch::nn::Linear(3, 3), torch::nn::Tanh()));
    plain = register_module("plain", torch::nn::Linear(3, 3));
    baukit::make_traceable(tail);
  }
  torch::Tensor forward(const torch::Tensor& x) { return apply_forward_hooks(tail->forward(out(act(in(x)))), x); }
};
TORCH_MODULE(Toy);

// A module whose output is a tuple holding a non-tensor.
struct PairImpl : torch::nn::Cloneable<PairImpl>, baukit::Hookable {
  void reset() override {}
  std::tuple<torch::Tensor, int64_t> forward(const torch::Tensor& x) {
    return apply_forward_hooks(std::make_tuple(x * 2, int64_t{7}), x);
  }
};
TORCH_MODULE(Pair);

// A module deriving from torch::nn::Module directly, so not virtually (as every libtorch 2.x module does, through
// its Cloneable).
struct ScaleImpl : torch::nn::Module {
  torch::Tensor factor = register_parameter("factor", torch::full({1}, 3.0));
  torch::Tensor forward(const torch::Tensor& x) { return x * factor; }
};

std::size_t hooks_attached(torch::nn::Module& model) {
  std::size_t count = 0;
  for (const auto& module : model.modules())
    if (auto* h = dynamic_cast<baukit::Hookable*>(module.get())) count += h->num_forward_hooks();
  return count;
}

}  // namespace

TEST_CASE("Trace retains a layer's output and input", "[trace]") {
  Toy model;
  auto x = torch::randn({2, 4});
  baukit::Trace tr(model, "act", baukit::TraceOptions().retain_input(true));
  model(x);
  auto expected_in = model->in(x);
  CHECK(torch::equal(tr.input(), expected_in));
  CHECK(torch::equal(tr.output(), torch::relu(expected_in)));
  CHECK(tr.input<torch::IValue>().isTuple());
  CHECK(tr.has_run());
}

TEST_CASE("Trace without retain_output keeps nothing and says so", "[trace]") {
  Toy model;
  baukit::Trace tr(model, "act", baukit::TraceOptions().retain_output(false));
  model(torch::randn({1, 4}));
  CHECK_THROWS_WITH(tr.output(), Catch::Contains("retain_output"));
  CHECK_THROWS_WITH(tr.input(), Catch::Contains("retain_input"));
}

TEST_CASE("Reading a trace before its layer ran is an error naming the layer", "[trace]") {
  Toy model;
  baukit::Trace tr(model, "out");
  CHECK_THROWS_WITH(tr.output(), Catch::Contains("'out'") && Catch::Contains("has not run"));
}

TEST_CASE("clone keeps a copy that later in-place edits do not change, no clone keeps the same tensor", "[trace]") {
  Toy model;
  auto x = torch::randn({2, 4});
  baukit::Trace cloned(model, "in", baukit::TraceOptions().clone(true));
  baukit::Trace shared(model, "in");
  model(x);
  auto before = cloned.output().clone();
  shared.output().mul_(0);
  CHECK(torch::equal(cloned.output(), before));
  CHECK(shared.output().abs().sum().item<float>() == 0.0f);
}

TEST_CASE("detach keeps tensors outside the autograd graph", "[trace]") {
  Toy model;
  baukit::Trace attached(model, "in");
  baukit::Trace detached(model, "out", baukit::TraceOptions().detach(true));
  model(torch::randn({2, 4}));
  CHECK(attached.output().requires_grad());
  CHECK_FALSE(detached.output().requires_grad());
}

TEST_CASE("clone and detach work on tuples that hold non-tensors", "[trace]") {
  Pair pair;
  baukit::Trace tr(*pair, "", baukit::TraceOptions().clone(true).detach(true));
  auto x = torch::ones({2});
  pair(x);
  auto [tensor, number] = tr.output<std::tuple<torch::Tensor, int64_t>>();
  CHECK(torch::equal(tensor, x * 2));
  CHECK(number == 7);
  CHECK(torch::equal(tr.output(), x * 2));  // the first tensor of the tuple
}

TEST_CASE("retain_grad gives the layer output's gradient after backward", "[trace][grad]") {
  Toy model;
  auto x = torch::randn({2, 4});
  baukit::Trace tr(model, "act", baukit::TraceOptions().retain_grad(true));
  model(x).sum().backward();
  REQUIRE(tr.output().grad().defined());
  // The gradient of sum(tail(out(h))) with respect to h, computed independently.
  auto h = torch::relu(model->in(x)).detach().requires_grad_(true);
  model->tail->forward(model->out(h)).sum().backward();
  CHECK(torch::allclose(tr.output().grad(), h.grad()));
  CHECK(model->in->weight.grad().defined());  // gradient still flows to earlier layers
}

TEST_CASE("detach with retain_grad cuts the graph at the layer and fills the retained gradient", "[trace][grad]") {
  Toy model;
  baukit::Trace tr(model, "act", baukit::TraceOptions().detach(true).retain_grad(true));
  model(torch::randn({2, 4})).sum().backward();
  CHECK(tr.output().grad().defined());
  CHECK_FALSE(model->in->weight.grad().defined());
  CHECK(model->out->weight.grad().defined());
}

TEST_CASE("edit_output changes the model's output, in each accepted form", "[trace][edit]") {
  Toy model;
  auto x = torch::randn({3, 4});
  auto zero_after_act = model->tail->forward(model->out(torch::zeros({3, 8})));

  SECTION("(Tensor) returning a tensor") {
    baukit::Trace tr(model, "act", baukit::TraceOptions().edit_output([](torch::Tensor t) { return t * 0; }));
    CHECK(torch::allclose(model(x), zero_after_act));
    CHECK(tr.output().abs().sum().item<float>() == 0.0f);  // the retained output is the edited one
  }
  SECTION("(Tensor, layer) with the layer's name") {
    std::string seen;
    baukit::Trace tr(model, "act", baukit::TraceOptions().edit_output([&](torch::Tensor t, const std::string& layer) {
      seen = layer;
      return torch::zeros_like(t);
    }));
    CHECK(torch::allclose(model(x), zero_after_act));
    CHECK(seen == "act");
  }
  SECTION("(IValue, layer, inputs) with the inputs") {
    torch::Tensor seen_input;
    baukit::Trace tr(
        model, "act",
        baukit::TraceOptions().edit_output([&](torch::IValue out, const std::string&, const torch::IValue& in) {
          seen_input = in.toTupleRef().elements()[0].toTensor();
          return torch::IValue(torch::zeros_like(out.toTensor()));
        }));
    CHECK(torch::allclose(model(x), zero_after_act));
    CHECK(torch::equal(seen_input, model->in(x)));
  }
  SECTION("(Tensor&) editing in place, returning nothing") {
    baukit::Trace tr(model, "act", baukit::TraceOptions().edit_output([](torch::Tensor& t) {
      torch::NoGradGuard no_grad;
      t.zero_();
    }));
    CHECK(torch::allclose(model(x), zero_after_act));
  }
  SECTION("an edit of a tuple's first tensor keeps the rest") {
    Pair pair;
    baukit::Trace tr(*pair, "", baukit::TraceOptions().edit_output([](torch::Tensor t) { return t + 1; }));
    auto [tensor, number] = pair(torch::zeros({2}));
    CHECK(torch::equal(tensor, torch::ones({2})));
    CHECK(number == 7);
  }
}

TEST_CASE("Two traces on one module both run, in attach order, the second seeing the first's edit", "[trace]") {
  Toy model;
  std::vector<std::string> order;
  baukit::Trace first(model, "act", baukit::TraceOptions().edit_output([&](torch::Tensor t) {
    order.push_back("first");
    return t + 100;
  }));
  baukit::Trace second(model, "act", baukit::TraceOptions().edit_output([&](torch::Tensor t) {
    order.push_back("second");
    CHECK(t.min().item<float>() >= 100.0f);
    return t;
  }));
  model(torch::randn({1, 4}));
  CHECK(order == std::vector<std::string>{"first", "second"});
}

TEST_CASE("Traces nest and detach in any order", "[trace]") {
  Toy model;
  {
    baukit::Trace outer(model, "in");
    {
      baukit::Trace inner(model, "in");
      CHECK(hooks_attached(*model) == 2);
    }
    CHECK(hooks_attached(*model) == 1);
    model(torch::randn({1, 4}));
    CHECK(outer.has_run());
  }
  CHECK(hooks_attached(*model) == 0);
}

TEST_CASE("Moving a trace transfers its hook, close detaches early and keeps the retained value", "[trace]") {
  Toy model;
  std::vector<baukit::Trace> traces;
  traces.emplace_back(model, "in");
  traces.emplace_back(model, "out");
  baukit::Trace moved = std::move(traces[0]);
  CHECK(hooks_attached(*model) == 2);
  model(torch::randn({1, 4}));
  CHECK(moved.output().size(1) == 8);
  moved.close();
  CHECK(hooks_attached(*model) == 1);
  CHECK(moved.output().size(1) == 8);
  traces.clear();
  CHECK(hooks_attached(*model) == 0);
}

TEST_CASE("stop ends the forward after the layer, and run_until_stop swallows exactly that", "[trace][stop]") {
  Toy model;
  bool out_ran = false;
  baukit::Trace after(model, "out", baukit::TraceOptions().edit_output([&](torch::Tensor t) {
    out_ran = true;
    return t;
  }));
  SECTION("a stopped forward") {
    baukit::Trace tr(model, "act", baukit::TraceOptions().stop(true));
    CHECK(baukit::run_until_stop([&] { model(torch::randn({1, 4})); }));
    CHECK_FALSE(out_ran);
    CHECK(tr.output().size(1) == 8);
  }
  SECTION("a TraceDict stops after its last listed layer only") {
    baukit::TraceDict tr(*model, std::vector<std::string>{"in", "act"}, baukit::TraceOptions().stop(true));
    CHECK(baukit::run_until_stop([&] { model(torch::randn({1, 4})); }));
    CHECK(tr["in"].has_run());
    CHECK(tr["act"].has_run());
    CHECK_FALSE(out_ran);
  }
  SECTION("a forward that never reaches the stop layer ends normally") {
    baukit::Trace tr(model, "act", baukit::TraceOptions().stop(true));
    CHECK_FALSE(baukit::run_until_stop([&] { model->out(torch::randn({1, 8})); }));
  }
  SECTION("other exceptions pass through") {
    CHECK_THROWS_AS(baukit::run_until_stop([] { throw std::runtime_error("boom"); }), std::runtime_error);
  }
  CHECK(hooks_attached(*model) == 1);
}

TEST_CASE("An exception in an edit or in the forward leaves no hooks and a usable model", "[trace][faults]") {
  Toy model;
  auto x = torch::randn({2, 4});
  auto clean = model(x);
  try {
    baukit::TraceDict tr(*model, std::regex(R"(in|act|out|tail\.\d)"),
                         baukit::TraceOptions().edit_output(
                             [](torch::Tensor) -> torch::Tensor { throw std::runtime_error("edit failed"); }));
    model(x);
    FAIL("the edit should have thrown");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "edit failed");
  }
  CHECK(hooks_attached(*model) == 0);
  CHECK_THROWS(model(torch::randn({2, 5})));  // a shape error inside forward
  CHECK(torch::equal(model(x), clean));
}

TEST_CASE("TraceDict traces names or a regex, in module order", "[tracedict]") {
  Toy model;
  auto x = torch::randn({2, 4});
  baukit::TraceDict tr(*model, std::regex(R"(in|out|tail\.\d)"));
  CHECK(tr.layers() == std::vector<std::string>{"in", "out", "tail.0", "tail.1"});
  auto y = model(x);
  CHECK(torch::equal(tr["tail.1"].output(), y));
  CHECK_THROWS_WITH(tr["act"], Catch::Contains("'act'"));
}

TEST_CASE("TraceDict takes per-layer options", "[tracedict]") {
  Toy model;
  baukit::TraceDict tr(*model, std::vector<std::string>{"in", "out"},
                       [](const std::string& layer) { return baukit::TraceOptions().retain_input(layer == "out"); });
  model(torch::randn({1, 4}));
  CHECK(tr["out"].input().size(1) == 8);
  CHECK_THROWS(tr["in"].input());
}

TEST_CASE("Unknown or untraceable names fail before anything is attached", "[trace][errors]") {
  Toy model;
  SECTION("an unknown name lists names that exist") {
    CHECK_THROWS_WITH((baukit::TraceDict(*model, std::vector<std::string>{"in", "nope"})),
                      Catch::Contains("'nope'") && Catch::Contains("'in'"));
  }
  SECTION("an untraceable module names its type and the fix") {
    CHECK_THROWS_WITH(
        (baukit::TraceDict(*model, std::vector<std::string>{"in", "plain"})),
        Catch::Contains("'plain'") && Catch::Contains("torch::nn::LinearImpl") && Catch::Contains("Traced<"));
  }
  SECTION("a name listed twice") {
    CHECK_THROWS_WITH((baukit::TraceDict(*model, std::vector<std::string>{"in", "in"})), Catch::Contains("twice"));
  }
  CHECK(hooks_attached(*model) == 0);
}

TEST_CASE("Two threads each trace their own model at once", "[trace][threads]") {
  auto work = [](int seed, torch::Tensor& seen, torch::Tensor& expected) {
    Toy model;
    auto x = torch::full({1, 4}, static_cast<float>(seed));
    for (int i = 0; i < 50; ++i) {
      baukit::Trace tr(model, "out");
      model(x);
      seen = tr.output();
    }
    expected = model->out(model->act(model->in(x)));
  };
  torch::Tensor seen1, expected1, seen2, expected2;
  std::thread a(work, 1, std::ref(seen1), std::ref(expected1));
  std::thread b(work, 2, std::ref(seen2), std::ref(expected2));
  a.join();
  b.join();
  CHECK(torch::equal(seen1, expected1));
  CHECK(torch::equal(seen2, expected2));
  CHECK_FALSE(torch::equal(seen1, seen2));
}

TEST_CASE("Traced wraps stock modules sharing their parameters, and clones stay traceable", "[traced]") {
  torch::nn::Linear linear(3, 2);
  auto wrapped = baukit::traced(linear);
  CHECK(wrapped->weight.data_ptr() == linear->weight.data_ptr());
  auto x = torch::randn({1, 3});
  CHECK(torch::equal(wrapped(x), linear(x)));
  auto copy = std::dynamic_pointer_cast<baukit::Traced<torch::nn::LinearImpl>>(wrapped->clone());
  REQUIRE(copy);
  CHECK(copy->weight.data_ptr() != linear->weight.data_ptr());
  CHECK(torch::equal(copy->forward(x), linear(x)));
  CHECK(std::vector<std::string>{"weight", "bias"} == wrapped->named_parameters().keys());

  // A plain (non-virtual) Module base, as in libtorch 2.x: wrapped the same way, sharing the parameter.
  static_assert(baukit::detail::module_is_virtual_base<torch::nn::LinearImpl> != (TORCH_VERSION_MAJOR >= 2));
  static_assert(!baukit::detail::module_is_virtual_base<ScaleImpl>);
  auto scale = std::make_shared<ScaleImpl>();
  auto traced_scale = baukit::traced(scale);
  CHECK(traced_scale->factor.data_ptr() == scale->factor.data_ptr());
  baukit::Trace trace(traced_scale, "scale");
  CHECK(torch::equal(traced_scale->forward(x), x * 3));
  CHECK(torch::equal(trace.output(), x * 3));
}

TEST_CASE("make_traceable converts a Sequential in place, utilities find, freeze, replace and cut", "[modules]") {
  auto seq = torch::nn::Sequential(torch::nn::Linear(2, 2), torch::nn::GELU(), torch::nn::Linear(2, 2));
  auto same = seq;  // another holder of the same Sequential
  auto weight = seq[0]->named_parameters()["weight"];
  baukit::make_traceable(seq);
  baukit::Trace tr(same, "1");
  auto x = torch::randn({1, 2});
  auto y = same->forward(x);
  CHECK(tr.has_run());
  CHECK(seq[0]->named_parameters()["weight"].data_ptr() == weight.data_ptr());

  CHECK(baukit::get_parameter(*seq, "2.bias").size(0) == 2);
  CHECK_THROWS_WITH(baukit::get_parameter(*seq, "9.bias"), Catch::Contains("'9.bias'"));
  baukit::set_requires_grad(false, *seq);
  for (const auto& p : seq->parameters()) CHECK_FALSE(p.requires_grad());

  auto head = baukit::subsequence(seq, "", "2");
  CHECK(head->size() == 2);
  CHECK(torch::allclose(seq[2]->as<baukit::Traced<torch::nn::LinearImpl>>()->forward(head->forward(x)), y));

  baukit::replace_module(*seq, "1", std::make_shared<torch::nn::IdentityImpl>());
  CHECK(torch::equal(same->forward(x), seq[2]->as<baukit::Traced<torch::nn::LinearImpl>>()->forward(
                                           seq[0]->as<baukit::Traced<torch::nn::LinearImpl>>()->forward(x))));
  Toy model;
  CHECK_THROWS_WITH(baukit::replace_module(*model, "out", std::make_shared<torch::nn::IdentityImpl>()),
                    Catch::Contains("not a torch::nn::Sequential"));
  baukit::replace_module(*model, "tail.1", std::make_shared<torch::nn::IdentityImpl>());
  auto h = model->out(model->act(model->in(x.repeat({1, 2}))));
  CHECK(torch::allclose(model(x.repeat({1, 2})),
                        model->tail[0]->as<baukit::Traced<torch::nn::LinearImpl>>()->forward(h)));
  CHECK(baukit::module_names(*model, std::regex("tail.*")) == std::vector<std::string>{"tail", "tail.0", "tail.1"});
}

namespace {

// A user's network with stock containers: a whole Sequential member, ModuleList and ModuleDict elements.
struct Containers : torch::nn::Module {
  baukit::TracedSequential stem{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::ModuleDict heads{nullptr};
  bool plain_call = false;  // call the list's elements through their plain type (the mistake)
  Containers() {
    stem = register_module("stem", baukit::TracedSequential(baukit::TracedLinear(3, 3), baukit::TracedReLU()));
    layers = register_module("layers", torch::nn::ModuleList(baukit::TracedLinear(3, 3), baukit::TracedLinear(3, 3)));
    heads = register_module("heads", torch::nn::ModuleDict());
    heads->update({{"score", baukit::TracedLinear(3, 1).ptr()}});
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = stem(x);
    for (const auto& layer : *layers)
      h = plain_call ? layer->as<torch::nn::Linear>()->forward(h) : layer->as<baukit::TracedLinear>()->forward(h);
    return heads["score"]->as<baukit::TracedLinear>()->forward(h);
  }
};

}  // namespace

TEST_CASE("A whole Sequential, ModuleList and ModuleDict elements of a user's network are traceable", "[traced]") {
  torch::manual_seed(0);
  Containers net;
  const auto x = torch::randn({2, 3});
  const auto clean = net.forward(x);
  const auto stem_output = net.stem(x);
  {
    baukit::TraceDict tr(net, {"stem", "stem.0", "layers.1", "heads.score"});
    const auto y = net.forward(x);
    CHECK(torch::equal(tr["heads.score"].output(), y));
    CHECK(torch::equal(tr["stem"].output(), torch::relu(tr["stem.0"].output())));
    CHECK(tr["layers.1"].output().sizes() == torch::IntArrayRef({2, 3}));
  }
  {  // the whole Sequential's output edited: the network's output follows
    baukit::Trace tr(net, "stem", baukit::TraceOptions().edit_output([](const torch::Tensor& h) { return h + 1; }));
    const auto zeroed = net.forward(x);
    CHECK_FALSE(torch::equal(zeroed, clean));
    auto h = stem_output + 1;  // what the rest of the network makes of the edited stem
    for (const auto& layer : *net.layers) h = layer->as<baukit::TracedLinear>()->forward(h);
    CHECK(torch::allclose(zeroed, net.heads["score"]->as<baukit::TracedLinear>()->forward(h)));
  }
  CHECK(net.stem->named_children().size() == 2);
  // Clones of a traced Sequential stay traceable and own their weights.
  auto copy = std::dynamic_pointer_cast<baukit::Traced<torch::nn::SequentialImpl>>(net.stem->clone());
  REQUIRE(copy);
  CHECK(copy->named_parameters()["0.weight"].data_ptr() != net.stem->named_parameters()["0.weight"].data_ptr());
  // Called through the plain type, a traced element skips its hooks, and reading the trace says so.
  net.plain_call = true;
  baukit::Trace tr(net, "layers.0");
  CHECK(torch::equal(net.forward(x), clean));
  CHECK_THROWS_WITH(tr.output(), Catch::Contains("'layers.0'") && Catch::Contains("as<baukit::TracedLinear>()"));
}

TEST_CASE("make_traceable converts the elements of a TracedSequential inside, and changes nothing on an unknown one", "[modules]") {
  auto seq = torch::nn::Sequential(torch::nn::Linear(3, 3),
                                   baukit::TracedSequential(torch::nn::Linear(3, 3), torch::nn::GELU()));
  const auto weight = seq[1]->named_parameters()["0.weight"];
  baukit::make_traceable(seq);
  baukit::TracedSequential whole = baukit::traced(seq);
  baukit::TraceDict tr(*whole, {"0", "1", "1.1"});
  const auto x = torch::randn({2, 3});
  const auto y = whole(x);
  CHECK(torch::equal(tr["1"].output(), y));
  CHECK(torch::equal(tr["1.1"].output(), y));
  CHECK(whole->named_parameters()["1.0.weight"].data_ptr() == weight.data_ptr());  // shared, not copied
  // An element of an unknown type, inside a nested Sequential: an error naming it, and nothing converted.
  auto mixed = torch::nn::Sequential(torch::nn::Linear(3, 3),
                                     baukit::TracedSequential(torch::nn::Linear(3, 3), torch::nn::Conv1d(1, 1, 1)));
  CHECK_THROWS_WITH(baukit::make_traceable(mixed), Catch::Contains("'1.1'") && Catch::Contains("Conv1d"));
  CHECK(dynamic_cast<baukit::Hookable*>(mixed[0].get()) == nullptr);
  CHECK(dynamic_cast<baukit::Hookable*>(mixed[1]->as<torch::nn::SequentialImpl>()->ptr(0).get()) == nullptr);
}

TEST_CASE("The natural forms compile: braced lists, a regex, a holder, a CausalLM and its shared_ptr",
          "[trace][tracedict]") {
  Toy model;
  auto x = torch::randn({2, 4});
  {
    baukit::TraceDict on_holder(model, {"in", "out"});
    baukit::TraceDict on_module(*model, {"act"});
    baukit::TraceDict one(model, {"in"});
    model(x);
    CHECK(on_holder.layers() == std::vector<std::string>{"in", "out"});
    CHECK(on_holder["out"].output().sizes() == torch::IntArrayRef({2, 3}));
    CHECK(on_module["act"].has_run());
    CHECK(one.size() == 1);
  }
  CHECK(hooks_attached(*model) == 0);

  std::shared_ptr<baukit::models::CausalLM> lm = baukit::models::from_pretrained(baukit_tests::kFixtures / "gpt2-tiny");
  const auto ids = torch::tensor({int64_t{464}, int64_t{4687}}, torch::kLong).unsqueeze(0);
  baukit::TraceDict blocks(lm, {"transformer.h.0", "transformer.h.1"});
  baukit::TraceDict by_regex(*lm, std::regex(R"(transformer\.h\.\d+)"));
  baukit::Trace head(lm, "lm_head");
  const auto logits = lm->forward(ids, {}, nullptr);
  CHECK(blocks["transformer.h.1"].output().sizes() == torch::IntArrayRef({1, 2, 32}));
  CHECK(by_regex.size() == 3);
  CHECK(torch::equal(head.output(), logits));
}

TEST_CASE("A regex that matches no module is an error naming some modules, unless allowed", "[tracedict][errors]") {
  Toy model;
  CHECK_THROWS_WITH((baukit::TraceDict(*model, std::regex(R"(tail\.\d+$x)"))), Catch::Contains("matches no module") &&
                                                                                   Catch::Contains("'in'") &&
                                                                                   Catch::Contains("allow_no_match"));
  baukit::TraceDict none(*model, std::regex("nothing"), baukit::TraceOptions().allow_no_match(true));
  CHECK(none.size() == 0);
}

TEST_CASE("Errors inside a traced forward name the layer and the edit, output<T>() says what the value is",
          "[trace][errors]") {
  Toy model;
  auto x = torch::randn({2, 4});
  auto edited = [&](auto edit) {
    baukit::Trace tr(model, "act", baukit::TraceOptions().edit_output(edit));
    model(x);
  };
  CHECK_THROWS_WITH(edited([](torch::Tensor t) { return t.to(torch::kFloat64); }),
                    Catch::Contains("edit_output of layer 'act' returned a Double tensor") &&
                        Catch::Contains("the layer gives Float"));
  CHECK_THROWS_WITH(edited([](torch::Tensor t) { return t.sum(-1); }),
                    Catch::Contains("of shape [2]") && Catch::Contains("of shape [2, 8]"));
  CHECK_THROWS_WITH(edited([](torch::Tensor t) {
                      return t.matmul(torch::ones({99, 2}));
                    }),
                    Catch::Contains("edit_output of layer 'act' failed: ") && !Catch::Contains("frame #"));
  CHECK(hooks_attached(*model) == 0);
  baukit::Trace tr(model, "act");
  model(x);
  CHECK_THROWS_WITH(tr.output<int64_t>(),
                    Catch::Contains("the output of layer 'act' is a Tensor, which does not convert to long"));
}

TEST_CASE("edit_input changes what a module receives: head ablation on GPT-2, attention patterns", "[trace][edit]") {
  auto model = baukit::models::GPT2LMHeadModel::from_pretrained(baukit_tests::kFixtures / "gpt2-tiny");
  torch::NoGradGuard no_grad;
  const auto ids = torch::tensor({int64_t{464}, int64_t{4687}, int64_t{48190}}, torch::kLong).unsqueeze(0);
  const int64_t heads = model->config.n_head, width = model->config.n_embd, head_dim = width / heads;
  const auto plain = model->forward(ids, {}, nullptr);
  {
    // Head 1 of block 0 ablated: its slice of c_proj's input (the heads side by side) is zero.
    baukit::Trace ablate(model, "transformer.h.0.attn.c_proj",
                         baukit::TraceOptions().retain_input(true).edit_input([&](torch::Tensor x) {
                           auto edited = x.clone();
                           edited.slice(-1, head_dim, 2 * head_dim).zero_();
                           return edited;
                         }));
    const auto ablated = model->forward(ids, {}, nullptr);
    const auto received = ablate.input();
    CHECK(received.slice(-1, head_dim, 2 * head_dim).abs().max().item<float>() == 0);
    CHECK(received.slice(-1, 0, head_dim).abs().max().item<float>() > 0);
    auto& c_proj = model->transformer->h[0]->as<baukit::models::GPT2Block::Impl>()->attn->c_proj;
    const auto expected = torch::addmm(c_proj->bias, received.reshape({-1, width}), c_proj->weight);
    CHECK(torch::allclose(ablate.output().reshape({-1, width}), expected, 1e-5, 1e-5));
    CHECK_FALSE(torch::allclose(ablated, plain));
  }
  CHECK(torch::equal(model->forward(ids, {}, nullptr), plain));  // the edit is gone with the trace
  {
    // In place, on all arguments (a block's x, mask and cache): the cache pointer passes through untouched.
    baukit::Trace doubled(model, "transformer.h.1", baukit::TraceOptions().edit_input([](torch::IValue inputs) {
      auto items = inputs.toTupleRef().elements().vec();
      items[0] = items[0].toTensor() * 2;
      return torch::ivalue::Tuple::create(std::move(items));
    }));
    baukit::Trace after(model, "transformer.h.1", baukit::TraceOptions().retain_input(true));
    model->forward(ids, {}, nullptr);
    CHECK(after.has_run());
  }
  // Attention patterns: what attn_dropout (an identity in eval mode) gives out are the attention probabilities.
  baukit::Trace pattern(model, "transformer.h.0.attn.attn_dropout");
  model->forward(ids, {}, nullptr);
  CHECK(pattern.output().sizes() == torch::IntArrayRef({1, heads, 3, 3}));
  CHECK(torch::allclose(pattern.output().sum(-1), torch::ones({1, heads, 3})));
  CHECK(pattern.output()[0][0][0][1].item<float>() == 0);  // causal: the first query sees only itself
  // A module whose own forward runs only output hooks cannot edit inputs; a wrong shape is refused by name.
  Toy toy;
  CHECK_THROWS_WITH(baukit::Trace(toy, "", baukit::TraceOptions().edit_input([](torch::Tensor x) { return x; })),
                    Catch::Contains("runs only output hooks"));
  baukit::Trace wrong(model, "transformer.h.0.mlp",
                      baukit::TraceOptions().edit_input([](torch::Tensor x) { return x.sum(-1); }));
  CHECK_THROWS_WITH(model->forward(ids, {}, nullptr), Catch::Contains("edit_input of layer 'transformer.h.0.mlp'"));
}
