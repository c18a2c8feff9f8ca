// Uses the installed headers: traces a traceable Linear and checks the hook saw the output.
#include <baukit/baukit.hpp>
#include <iostream>

int main() {
  auto seq = torch::nn::Sequential(torch::nn::Linear(3, 2));
  baukit::make_traceable(seq);
  baukit::Trace tr(seq, "0");
  const auto y = seq->forward(torch::ones({1, 3}));
  if (!torch::equal(tr.output(), y)) return 1;
  std::cout << "consumer ok\n";
  return 0;
}
