// Tracing your own network: the complete example of docs/your-network.md. Each member changes in one line from
// stock libtorch (a typed member, a whole Sequential, ModuleList and ModuleDict elements, a module of your own);
// then every one of them can be traced by name. Compiled with the build and run by ctest.
#include <baukit/baukit.hpp>
#include <iostream>

// A module of your own: written as for libtorch, its holder declared with BAUKIT_TRACED_MODULE, not TORCH_MODULE.
struct GateImpl : torch::nn::Cloneable<GateImpl> {
  GateImpl() { reset(); }
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::sigmoid(x); }
};
BAUKIT_TRACED_MODULE(Gate);  // was: TORCH_MODULE(Gate);

struct NetImpl : torch::nn::Cloneable<NetImpl> {
  baukit::TracedLinear embed{nullptr};     // was: torch::nn::Linear
  baukit::TracedSequential stem{nullptr};  // was: torch::nn::Sequential
  torch::nn::ModuleList layers{nullptr};
  torch::nn::ModuleDict heads{nullptr};
  Gate gate{nullptr};

  NetImpl() { reset(); }
  void reset() override {
    embed = register_module("embed", baukit::TracedLinear(6, 8));
    stem = register_module("stem", baukit::TracedSequential(baukit::TracedLinear(8, 8), baukit::TracedReLU()));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < 3; ++i) layers->push_back(baukit::TracedLinear(8, 8));  // was: torch::nn::Linear(8, 8)
    heads = register_module("heads", torch::nn::ModuleDict());
    heads->update({{"score", baukit::TracedLinear(8, 2).ptr()}});  // was: torch::nn::Linear(8, 2).ptr()
    gate = register_module("gate", Gate());
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = stem(embed(x));
    for (const auto& layer : *layers) h = h + gate(layer->as<baukit::TracedLinear>()->forward(h));  // was: as<Linear>
    return heads["score"]->as<baukit::TracedLinear>()->forward(h);
  }
};
TORCH_MODULE(Net);

int main() {
  torch::manual_seed(0);
  Net net;
  const auto x = torch::randn({4, 6});

  // Every member by its name, as named_modules() gives it.
  {
    baukit::TraceDict tr(*net, {"embed", "stem", "stem.1", "layers.1", "heads.score", "gate"});
    net(x);
    for (const auto& layer : tr.layers()) std::cout << layer << " -> " << tr[layer].output().sizes() << "\n";
  }

  // Edit the whole stem: its output, zeroed, changes the network's output.
  const auto clean = net(x);
  {
    baukit::Trace tr(*net, "stem",
                     baukit::TraceOptions().edit_output([](const torch::Tensor& h) { return torch::zeros_like(h); }));
    std::cout << "zeroing the stem changed the output: " << std::boolalpha << !torch::equal(net(x), clean) << "\n";
  }

  // A plain module (the stem's first element, if it had been a torch::nn::Linear) cannot be traced: the error says
  // how to make it traceable.
  torch::nn::Sequential plain(torch::nn::Linear(8, 8));
  try {
    baukit::Trace tr(plain, "0");
  } catch (const std::invalid_argument& e) {
    std::cout << "plain Linear: " << (std::string(e.what()).find("Traced") != std::string::npos ? "refused" : "?")
              << "\n";
  }

  // A stock Sequential made traceable in place (weights shared), and then held whole. (A Sequential inside a
  // Sequential must be a TracedSequential: libtorch's own cannot be an element, its forward being a template.)
  auto seq = torch::nn::Sequential(torch::nn::Linear(6, 4),
                                   baukit::TracedSequential(torch::nn::Linear(4, 4), torch::nn::GELU()));
  baukit::make_traceable(seq);
  baukit::TracedSequential whole = baukit::traced(seq);
  baukit::TraceDict tr(*whole, {"0", "1", "1.1"});
  whole(x);
  for (const auto& layer : tr.layers()) std::cout << "seq " << layer << " -> " << tr[layer].output().sizes() << "\n";
  return 0;
}
