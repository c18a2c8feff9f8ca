// Tracing a libtorch model: the complete example of docs/tracing.md. Compiled with the build, so it cannot rot.
#include <baukit/baukit.hpp>
#include <iostream>

// A model written for baukit-cpp: its children are traceable holders, and the model itself runs hooks.
struct MLPImpl : torch::nn::Cloneable<MLPImpl>, baukit::Hookable {
  baukit::TracedLinear fc1{nullptr}, fc2{nullptr};
  baukit::TracedReLU act{nullptr};
  MLPImpl() { reset(); }
  void reset() override {
    fc1 = register_module("fc1", baukit::TracedLinear(8, 16));
    act = register_module("act", baukit::TracedReLU());
    fc2 = register_module("fc2", baukit::TracedLinear(16, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return apply_forward_hooks(fc2(act(fc1(x))), x); }
};
TORCH_MODULE(MLP);

int main() {
  torch::manual_seed(0);
  MLP model;
  const auto x = torch::randn({4, 8});

  // 1. Read what a layer computes.
  {
    baukit::Trace tr(model, "act", baukit::TraceOptions().retain_input(true));
    model(x);
    std::cout << "act input " << tr.input().sizes() << ", output " << tr.output().sizes() << "\n";
  }  // the hook is gone here

  // 2. Several layers at once, by regex, in module order.
  {
    baukit::TraceDict tr(*model, std::regex("fc\\d"));
    model(x);
    for (const auto& layer : tr.layers()) std::cout << layer << " -> " << tr[layer].output().sizes() << "\n";
  }

  // 3. Edit an output: zero half of the hidden units and see the model's output change.
  const auto clean = model(x);
  {
    baukit::Trace tr(model, "act", baukit::TraceOptions().edit_output([](torch::Tensor h) {
      h = h.clone();
      h.slice(1, 0, 8).zero_();
      return h;
    }));
    std::cout << "edit changed the output by " << (model(x) - clean).abs().max().item<float>() << "\n";
  }

  // 4. Stop early: run only up to fc1.
  {
    baukit::Trace tr(model, "fc1", baukit::TraceOptions().stop(true));
    const bool stopped = baukit::run_until_stop([&] { model(x); });
    std::cout << "stopped after fc1: " << std::boolalpha << stopped << "\n";
  }

  // 5. Gradients at a layer.
  {
    baukit::Trace tr(model, "act", baukit::TraceOptions().retain_grad(true));
    model(x).sum().backward();
    std::cout << "gradient at act: " << tr.output().grad().sizes() << "\n";
  }

  // 6. Stock libtorch modules: make a Sequential traceable in place (its weights are shared, not copied).
  auto seq = torch::nn::Sequential(torch::nn::Linear(8, 4), torch::nn::GELU(), torch::nn::Linear(4, 2));
  baukit::make_traceable(seq);
  baukit::Trace tr(seq, "1");
  seq->forward(x);
  std::cout << "GELU output " << tr.output().sizes() << "\n";
  return 0;
}
