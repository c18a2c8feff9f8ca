// baukit-lens: the logit lens from the command line. Writes a self-contained HTML page (and, with --json,
// every number the page shows). Without --model it runs on baukit-cpp's embedded default model. The command itself
// is `baukit::lens_command` (include/baukit/lens/command.hpp), for programs with families of their own.
//   baukit-lens --prompt ". The Space Needle is located in" --out lens.html
#include <baukit/lens/command.hpp>
#include <cstdlib>

namespace {

namespace fs = std::filesystem;

#ifndef BAUKIT_INSTALLED_MODEL
#define BAUKIT_INSTALLED_MODEL "../share/baukit/models/default"
#endif

// The embedded default model: $BAUKIT_DEFAULT_MODEL, else the one installed beside this program
// (<prefix>/share/baukit/models/default for <prefix>/bin/baukit-lens), else the source tree it was built from.
fs::path default_model() {
  if (const char* env = std::getenv("BAUKIT_DEFAULT_MODEL")) return env;
  std::error_code error;
  const auto self = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    const auto installed = (self.parent_path() / BAUKIT_INSTALLED_MODEL).lexically_normal();
    if (fs::exists(installed / "config.json", error)) return installed;
  }
  return fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
}

}  // namespace

int main(int argc, char** argv) {
  return baukit::lens_command(argc, argv, baukit::LensCommandOptions().default_model(default_model()));
}
