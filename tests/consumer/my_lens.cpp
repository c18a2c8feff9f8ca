// A researcher's own lens command: a family baukit-cpp does not know (here "my_gpt2", GPT-2 under another name),
// registered from outside the library, then baukit-lens's command line run on it as a library call.
#include <baukit/lens/command.hpp>

namespace {

const bool registered = baukit::models::register_family(
    "my_gpt2", [](const baukit::models::ConfigFile& config, const baukit::models::PretrainedOptions& options) {
      auto as_gpt2 = config;
      as_gpt2.json["model_type"] = "gpt2";
      return std::shared_ptr<baukit::models::CausalLM>(
          baukit::models::GPT2LMHeadModelImpl::from_config(as_gpt2, options));
    });

}  // namespace

int main(int argc, char** argv) {
  return registered ? baukit::lens_command(argc, argv, baukit::LensCommandOptions().program("my-lens")) : 1;
}
