// Specification of checkpoint reading and output writing: safetensors, pytorch_model.bin (zip and the restricted
// unpickler), config.json against the checkpoint, the bad-checkpoint corpus, inputs that are not regular files,
// and outputs to regular files, devices and FIFOs.
#include <baukit/baukit.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp

namespace fs = std::filesystem;
using baukit::io::CheckpointError;
using baukit::io::CheckpointErrorKind;

std::string safetensors_bytes(const std::string& header, std::size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

CheckpointErrorKind kind_of(const std::function<void()>& load) {
  try {
    load();
  } catch (const CheckpointError& e) {
    return e.kind();
  }
  FAIL("no CheckpointError was thrown");
  return CheckpointErrorKind::io;
}

}  // namespace

TEST_CASE("Malformed safetensors files give a clear error of the right kind", "[io][errors]") {
  const auto dir = scratch("bad-safetensors");
  const auto path = dir / "model.safetensors";
  auto load = [&] { baukit::io::SafetensorsFile file(path); };
  const std::string good =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";

  write_bytes(path, safetensors_bytes(good, 12));
  CHECK_NOTHROW(load());
  SECTION("truncated data") {
    write_bytes(path, safetensors_bytes(good, 10));
    CHECK(kind_of(load) == CheckpointErrorKind::truncated);
    CHECK_THROWS_WITH(load(), Catch::Contains("inside tensor 'b'"));
  }
  SECTION("header length beyond the file") {
    auto bytes = safetensors_bytes(good, 12);
    bytes[0] = '\xff';
    bytes[1] = '\x7f';
    write_bytes(path, bytes);
    CHECK(kind_of(load) == CheckpointErrorKind::truncated);
  }
  SECTION("a huge header length") {
    auto bytes = safetensors_bytes(good, 12);
    bytes[5] = '\x01';
    write_bytes(path, bytes);
    CHECK(kind_of(load) == CheckpointErrorKind::header);
  }
  SECTION("invalid JSON and invalid UTF-8") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F32",)", 0));
    CHECK(kind_of(load) == CheckpointErrorKind::header);
    write_bytes(path, safetensors_bytes("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
    CHECK(kind_of(load) == CheckpointErrorKind::header);
  }
  SECTION("unknown dtype") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4));
    CHECK(kind_of(load) == CheckpointErrorKind::dtype);
  }
  SECTION("overlapping offsets") {
    write_bytes(
        path,
        safetensors_bytes(
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8));
    CHECK_THROWS_WITH(load(), Catch::Contains("overlaps") && Catch::Contains(path.string()));
  }
  SECTION("byte count not matching the shape") {
    write_bytes(path, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    CHECK(kind_of(load) == CheckpointErrorKind::size);
  }
  SECTION("duplicate names") {
    write_bytes(
        path,
        safetensors_bytes(
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8));
    CHECK_THROWS_WITH(load(), Catch::Contains("'a' is listed twice"));
  }
  SECTION("trailing bytes the header does not cover") {
    write_bytes(path, safetensors_bytes(good, 16));
    CHECK(kind_of(load) == CheckpointErrorKind::size);
  }
}

TEST_CASE("Checkpoints that do not fit the model are reported tensor by tensor", "[gpt2][io][errors]") {
  const auto dir = scratch("mismatch");
  fs::copy_file(kFixtures / "gpt2-tiny" / "config.json", dir / "config.json");
  baukit::io::SafetensorsFile whole(kFixtures / "gpt2-tiny" / "model.safetensors");
  auto write_with = [&](const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& change) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& entry : whole.entries()) tensors.emplace_back(entry.name, whole.tensor(entry));
    change(tensors);
    baukit::io::save_safetensors(dir / "model.safetensors", tensors);
  };
  auto load = [&] { baukit::models::GPT2LMHeadModel::from_pretrained(dir); };
  SECTION("a missing tensor") {
    write_with([](auto& t) {
      t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "h.1.mlp.c_fc.weight"; }), t.end());
    });
    CHECK_THROWS_WITH(load(), Catch::Contains("missing") && Catch::Contains("transformer.h.1.mlp.c_fc.weight"));
  }
  SECTION("an extra tensor") {
    write_with([](auto& t) { t.emplace_back("h.9.surprise", torch::zeros({2})); });
    CHECK(kind_of(load) == CheckpointErrorKind::unexpected);
    CHECK_THROWS_WITH(load(), Catch::Contains("h.9.surprise"));
  }
  SECTION("a mis-shaped tensor, with both shapes") {
    write_with([](auto& t) {
      for (auto& [name, tensor] : t)
        if (name == "ln_f.weight") tensor = torch::ones({31});
    });
    CHECK_THROWS_WITH(load(), Catch::Contains("ln_f.weight") && Catch::Contains("[31]") && Catch::Contains("[32]"));
  }
  SECTION("NaN weights") {
    write_with([](auto& t) {
      for (auto& [name, tensor] : t)
        if (name == "h.0.ln_1.bias") tensor = torch::full({32}, NAN);
    });
    CHECK(kind_of(load) == CheckpointErrorKind::non_finite);
  }
  SECTION("a config.json with a wrong n_embd") {
    write_with([](auto&) {});
    auto config = read_json(kFixtures / "gpt2-tiny" / "config.json");
    config["n_embd"] = 48;
    std::ofstream(dir / "config.json") << config.dump();
    CHECK(kind_of(load) == CheckpointErrorKind::shape);
  }
  SECTION("unsupported settings fail by name") {
    write_with([](auto&) {});
    auto config = read_json(kFixtures / "gpt2-tiny" / "config.json");
    config["activation_function"] = "mish";
    std::ofstream(dir / "config.json") << config.dump();
    CHECK_THROWS_WITH(load(), Catch::Contains("activation_function") && Catch::Contains("mish"));
    config["activation_function"] = "gelu_new";
    config["n_head"] = "four";
    std::ofstream(dir / "config.json") << config.dump();
    CHECK_THROWS_WITH(load(), Catch::Contains("'n_head'") && Catch::Contains("config.json"));
  }
}

TEST_CASE("pytorch_model.bin: zero-copy reading, and a pickle asking for a foreign global is refused", "[io][pickle]") {
  const auto bin = kFixtures / "gptj-tiny-f16-bin" / "pytorch_model.bin";
  const auto tensors = baukit::io::load_torch_bin(bin);
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  CHECK(by_name.at("transformer.wte.weight").sizes() == torch::IntArrayRef({50400, 32}));
  CHECK(by_name.at("transformer.wte.weight").scalar_type() == torch::kFloat16);
  CHECK(by_name.at("transformer.h.0.attn.bias").scalar_type() == torch::kBool);

  const auto dir = scratch("bad-pickle");
  auto bytes = read_bytes(bin);
  SECTION("a global outside the allowed set") {
    const std::string from = "collections\nOrderedDict\n", to = "subprocess\nPopen_______\n";
    const auto at = bytes.find(from);
    REQUIRE(at != std::string::npos);
    bytes.replace(at, from.size(), to);
    write_bytes(dir / "pytorch_model.bin", bytes);
    CHECK_THROWS_WITH(baukit::io::load_torch_bin(dir / "pytorch_model.bin"),
                      Catch::Contains("subprocess.Popen_______") && Catch::Contains("outside the allowed set"));
  }
  SECTION("a truncated archive") {
    write_bytes(dir / "pytorch_model.bin", bytes.substr(0, bytes.size() / 2));
    CHECK(kind_of([&] { baukit::io::load_torch_bin(dir / "pytorch_model.bin"); }) == CheckpointErrorKind::archive);
  }
  SECTION("a zip entry pointing outside the file") {
    const auto eocd = bytes.rfind(std::string("PK\x05\x06", 4));
    REQUIRE(eocd != std::string::npos);
    const auto directory = static_cast<std::size_t>(baukit::io::detail::read_le(bytes, eocd + 16, 4));
    bytes[directory + 42 + 3] = '\x7f';  // the first entry's local header offset, far beyond the end
    write_bytes(dir / "pytorch_model.bin", bytes);
    CHECK_THROWS_WITH(baukit::io::load_torch_bin(dir / "pytorch_model.bin"), Catch::Contains("outside"));
  }
}

TEST_CASE("Every checkpoint in the committed bad-input corpus fails with its error kind, naming file and tensor",
          "[io][errors][corpus]") {
  // tests/data/bad-checkpoints/make_corpus.py wrote these; each folder's expect.json holds the kind and the strings
  // the message must contain.
  const auto corpus = fs::path(BAUKIT_SOURCE_DIR) / "tests" / "data" / "bad-checkpoints";
  const fs::path pwned = "/tmp/baukit-pwned";  // where the corpus pickle would write
  fs::remove(pwned);
  std::vector<std::string> cases;
  for (const auto& entry : fs::directory_iterator(corpus))
    if (entry.is_directory()) cases.push_back(entry.path().filename().string());
  std::sort(cases.begin(), cases.end());
  REQUIRE(cases.size() == 29);
  for (const auto& name : cases) {
    INFO("case " << name);
    const auto expect = read_json(corpus / name / "expect.json");
    try {
      (void)baukit::models::GPT2LMHeadModel::from_pretrained(corpus / name, torch::kCPU, /*check_finite=*/true);
      FAIL_CHECK("loaded without an error");
    } catch (const CheckpointError& error) {
      INFO(error.what());
      CHECK(baukit::io::to_string(error.kind()) == expect["kind"].get<std::string>());
      for (const auto& mention : expect["mentions"])
        CHECK_THAT(error.what(), Catch::Contains(mention.get<std::string>()));
      CHECK_THAT(error.what(), Catch::Contains((corpus / name).string()));
    }
  }
  CHECK_FALSE(fs::exists(pwned));  // the pickle's command never ran
}

TEST_CASE("Inputs that are not regular files are refused at once: a FIFO for weights, config.json or vocab.json",
          "[io][errors][hostile]") {
  const auto dir = scratch("fifo-inputs");
  for (const char* part : {"weights", "config", "vocab"}) fs::create_directories(dir / part);
  for (const char* file : {"config.json", "vocab.json", "merges.txt"}) {
    fs::copy_file(kFixtures / "gpt2-tiny" / file, dir / "weights" / file);
    fs::copy_file(kFixtures / "gpt2-tiny" / file, dir / "vocab" / file);
  }
  fs::copy_file(kFixtures / "gpt2-tiny" / "model.safetensors", dir / "config" / "model.safetensors");
  make_fifo(dir / "weights" / "model.safetensors");
  make_fifo(dir / "config" / "config.json");
  fs::remove(dir / "vocab" / "vocab.json");
  make_fifo(dir / "vocab" / "vocab.json");
  FifoWatchdog watchdog(
      {dir / "weights" / "model.safetensors", dir / "config" / "config.json", dir / "vocab" / "vocab.json"});
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir / "weights"),
                    Catch::Contains("model.safetensors: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::models::from_pretrained(dir / "config"),
                    Catch::Contains("config.json: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::Tokenizer::from_pretrained(dir / "vocab"),
                    Catch::Contains("vocab.json: is a FIFO (named pipe), not a regular file"));
  CHECK_THROWS_WITH(baukit::io::SafetensorsFile(dir / "weights"), Catch::Contains("is a directory"));
  CHECK_FALSE(watchdog.blocked());
}

TEST_CASE("The unpickler bounds nesting, refuses aliasing tricks and destroys deep values without recursion",
          "[io][pickle][hostile]") {
  using namespace std::string_literals;
  auto unpickle = [](const std::string& body) {
    const std::string pickle = "\x80\x02" + body + ".";
    return baukit::io::Unpickler(pickle, "test.pkl",
                                 [](const std::string&, torch::ScalarType, int64_t) { return torch::Tensor(); })
        .state_dict();
  };
  const std::string deep_lists = std::string(200'000, ']') + std::string(199'999, 'a');
  CHECK_THROWS_WITH(unpickle(deep_lists), Catch::Contains("containers nest more than 100 deep"));
  CHECK_THROWS_WITH(unpickle(")" + std::string(200'000, '\x85')), Catch::Contains("nest more than 100 deep"));
  CHECK_THROWS_WITH(unpickle(std::string(200'000, '(') + std::string(200'000, 't')), Catch::Contains("nest more"));
  // 100 levels are accepted (and then refused as not a dict).
  CHECK_THROWS_WITH(unpickle(std::string(100, ']') + std::string(99, 'a')), Catch::Contains("not a dict"));
  CHECK_THROWS_WITH(unpickle("]q\x00h\x00"
                             "a"s),
                    Catch::Contains("inside itself"));
  // B placed inside A, then changed through the memo: refused, or nesting could grow past the bound unseen.
  CHECK_THROWS_WITH(unpickle("]q\x00]q\x01"
                             "ah\x01K\x05"
                             "a"s),
                    Catch::Contains("already placed inside another"));

  // Destruction of a million-deep chain built directly: no recursion, so no stack overflow.
  using Value = baukit::io::detail::PickleValue;
  Value root = Value::of(Value::Kind::list);
  Value* tail = &root;
  for (int i = 0; i < 1'000'000; ++i) {
    tail->items->items.push_back(Value::of(Value::Kind::list));
    tail = &tail->items->items.back();
  }
  root = Value();
  CHECK(root.items == nullptr);
}

TEST_CASE("Outputs: regular files are replaced atomically, devices and FIFOs written through, the rest refused",
          "[io][output][hostile]") {
  const auto dir = scratch("outputs");
  auto write = [](const fs::path& path, const std::string& text) {
    baukit::io::write_file_atomically(path, [&](std::ostream& out) { out << text; });
  };
  auto no_temporaries = [&] {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().filename().string().find(".tmp-") != std::string::npos) return false;
    return true;
  };
  SECTION("a new path, then a regular file replaced; a symbolic link is followed, not replaced") {
    write(dir / "a.txt", "one");
    write(dir / "a.txt", "two");
    CHECK(read_bytes(dir / "a.txt") == "two");
    fs::create_symlink("a.txt", dir / "link.txt");
    write(dir / "link.txt", "three");
    CHECK(fs::is_symlink(dir / "link.txt"));
    CHECK(read_bytes(dir / "a.txt") == "three");
    fs::create_symlink("nowhere.txt", dir / "dangling.txt");
    CHECK_THROWS_WITH(write(dir / "dangling.txt", "x"), Catch::Contains("does not exist"));
    CHECK_THROWS_WITH(write(dir / "missing" / "a.txt", "x"),
                      Catch::Contains("the folder") && Catch::Contains("missing"));
  }
  SECTION("a character device is written through and stays a device; a full one is an error") {
    const auto null = char_device(dir, "null", 3), full = char_device(dir, "full", 7);
    write(null, std::string(1 << 20, 'x'));
    CHECK(is_char_device(null));
    fs::create_symlink(fs::absolute(null), dir / "link-to-null");  // as /dev/stdout links to a terminal or pipe
    write(dir / "link-to-null", "through the link");
    CHECK(fs::is_symlink(dir / "link-to-null"));
    CHECK(is_char_device(null));
    CHECK_THROWS_WITH(write(full, "x"), Catch::Contains(full.string()) && Catch::Contains("No space left"));
    CHECK(is_char_device(full));
  }
  SECTION("a FIFO: an error without a reader, written through with one") {
    make_fifo(dir / "pipe");
    CHECK_THROWS_WITH(write(dir / "pipe", "x"), Catch::Contains("a FIFO that nothing reads"));
    std::string received;
    std::thread reader([&] { received = read_bytes(dir / "pipe"); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the reader opens its end first
    write(dir / "pipe", "through the pipe");
    reader.join();
    CHECK(received == "through the pipe");
    CHECK(fs::is_fifo(dir / "pipe"));
  }
  SECTION("a directory and a socket are refused") {
    fs::create_directories(dir / "folder");
    CHECK_THROWS_WITH(write(dir / "folder", "x"), Catch::Contains("is a directory"));
    const int socket = make_socket(dir / "socket");
    CHECK_THROWS_WITH(write(dir / "socket", "x"), Catch::Contains("is a socket"));
    ::close(socket);
    CHECK(fs::is_socket(dir / "socket"));
  }
  SECTION("two outputs: when one fails, the other is left as it was") {
    write(dir / "page.html", "previous page");
    baukit::io::OutputFile page(dir / "page.html"), json(char_device(dir, "full", 7));
    page.stream() << "new page";
    json.stream() << std::string(1 << 17, 'x');
    CHECK_THROWS_WITH(baukit::io::commit_all({&page, &json}), Catch::Contains("No space left"));
    CHECK(read_bytes(dir / "page.html") == "previous page");
  }
  SECTION("an exception while writing leaves nothing") {
    CHECK_THROWS(baukit::io::write_file_atomically(dir / "b.txt", [](std::ostream& out) {
      out << "partial";
      throw std::runtime_error("interrupted");
    }));
    CHECK_FALSE(fs::exists(dir / "b.txt"));
  }
  CHECK(no_temporaries());
}
