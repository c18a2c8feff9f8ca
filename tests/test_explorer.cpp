// Specification of the explorer: its requests and limits, the server's defences, and `baukit-lens serve`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <baukit/baukit.hpp>
#include <baukit/explorer/server.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <regex>
#include <thread>

#include "support.hpp"

namespace {

using namespace baukit_tests;  // NOLINT: the shared helpers of support.hpp
namespace fs = std::filesystem;
using baukit::explorer::Limits;
using baukit::explorer::parse_lens_request;
using baukit::explorer::RequestError;

std::shared_ptr<baukit::explorer::Session> tiny_session(Limits limits = {}) {
  const auto dir = kFixtures / "gpt2-tiny";
  return std::make_shared<baukit::explorer::Session>(baukit::models::from_pretrained(dir),
                                                     baukit::Tokenizer::from_pretrained(dir), "gpt2-tiny",
                                                     std::vector<std::shared_ptr<const baukit::LearnedLens>>{}, limits);
}

// The status and message a request body gets from parse_lens_request.
std::pair<int, std::string> refusal(const std::string& body, const Limits& limits = {}) {
  try {
    (void)parse_lens_request(nlohmann::json::parse(body), limits);
  } catch (const RequestError& e) {
    return {e.status(), e.what()};
  }
  return {0, ""};
}

// Number of entries in a /proc folder (threads, open files).
std::size_t entries(const fs::path& folder) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(folder), fs::directory_iterator()));
}

// The exit status of child `pid` within `seconds`; -1 (and the child killed) if it is still running then.
int exit_status_within(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status;
}

}  // namespace

TEST_CASE("Explorer requests: every field checked, limits named, unknown fields and file paths refused", "[explorer]") {
  const auto limits = Limits().max_generate(16).max_prompt_bytes(100).max_topk(10);
  const auto good = parse_lens_request(
      nlohmann::json::parse(R"({"prompt": "Hi", "generate": 3, "topk": 7, "target": " there"})"), limits);
  CHECK(good.prompt == "Hi");
  CHECK(good.generate == 3);
  CHECK(good.topk == 7);
  CHECK(good.target == " there");
  CHECK(refusal(R"([1, 2])", limits) == std::pair<int, std::string>{400, "the request body must be a JSON object"});
  CHECK(refusal(R"({"generate": 2})", limits).second == "'prompt' is missing or empty");
  CHECK(refusal(R"({"prompt": 5})", limits).second == "'prompt' must be a string");
  CHECK(refusal(R"({"prompt": "Hi", "generate": 17})", limits).second == "'generate' is 17; give 0 to 16");
  CHECK(refusal(R"({"prompt": "Hi", "generate": -1})", limits).second == "'generate' is -1; give 0 to 16");
  CHECK(refusal(R"({"prompt": "Hi", "generate": 1.5})", limits).second == "'generate' must be an integer");
  CHECK(refusal(R"({"prompt": "Hi", "topk": 0})", limits).second == "'topk' is 0; give 1 to 10");
  CHECK(refusal(R"({"prompt": "Hi", "attention_rows": "yes"})", limits).second ==
        "'attention_rows' must be true or false");
  const auto long_prompt = refusal(nlohmann::json{{"prompt", std::string(101, 'a')}}.dump(), limits);
  CHECK(long_prompt == std::pair<int, std::string>{413, "'prompt' is 101 bytes; the limit is 100"});
  // A request never names a file: the model, tokenizer and lenses are the session's.
  CHECK(refusal(R"({"prompt": "Hi", "model": "/etc/passwd"})", limits).second ==
        "unknown field 'model' (known: prompt, generate, topk, target, attention_rows, compare, track)");
}

TEST_CASE("Explorer session: the answer is the lens over prompt and continuation, under the time limit", "[explorer]") {
  auto session = tiny_session();
  const auto dir = kFixtures / "gpt2-tiny";
  auto model = baukit::models::from_pretrained(dir);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
  const auto answer = session->lens(parse_lens_request(
      nlohmann::json::parse(R"({"prompt": "Paris is the capital of", "generate": 4, "topk": 3})"), session->limits()));
  const auto expected =
      baukit::generate_lens(*model, tokenizer.encode("Paris is the capital of"), 4, baukit::LensOptions().topk(3));
  CHECK(answer["ids"].get<std::vector<int64_t>>() == expected.ids);
  CHECK(answer["generated"] == 4);
  CHECK(answer["prompt"] == "Paris is the capital of");
  CHECK(answer["rows"].get<std::vector<std::string>>() == expected.lens.rows);
  CHECK(answer["data"] == baukit::lens_page_data(expected, tokenizer));
  CHECK(answer["tokens"].size() == expected.ids.size());
  CHECK(session->status()["running"].is_null());
  auto fails = [&](const std::string& body) {
    try {
      (void)session->lens(parse_lens_request(nlohmann::json::parse(body), session->limits()));
    } catch (const RequestError& e) {
      return std::pair<int, std::string>{e.status(), e.what()};
    }
    return std::pair<int, std::string>{0, ""};
  };
  CHECK(fails(R"({"prompt": "Hi", "target": " two tokens"})") ==
        std::pair<int, std::string>{400,
                                    "'target': ' two tokens' is 2 tokens; give exactly one (mind the leading space)"});
  CHECK(fails(R"({"prompt": "Hi", "generate": 64})").second ==
        "'prompt' is 1 tokens; with 64 generated that exceeds the model's 64");
  auto hurried = tiny_session(Limits().max_seconds(1e-6));
  CHECK(fails(R"({"prompt": "Hi"})").first == 0);
  try {
    (void)hurried->lens(parse_lens_request(nlohmann::json::parse(R"({"prompt": "Hi", "generate": 20})"), {}));
    FAIL("no time limit");
  } catch (const RequestError& e) {
    CHECK(e.status() == 503);
    CHECK_THAT(e.what(), Catch::Contains("ran past its limit of"));
  }
  CHECK(hurried->status()["running"].is_null());  // idle again after the refusal
}

TEST_CASE("Explorer session: requests wait their turn for the model, and beyond max_waiting are refused as busy",
          "[explorer]") {
  using namespace std::chrono_literals;
  auto session = tiny_session(Limits().max_waiting(2));
  const auto request = parse_lens_request(nlohmann::json::parse(R"({"prompt": "Hi", "generate": 2})"), {});
  auto waiting_now = [&] { return session->status()["waiting"].get<std::size_t>(); };
  std::vector<std::future<nlohmann::json>> queued;
  {
    const auto held = session->hold_model();  // as if a long request were running
    for (int i = 0; i < 2; ++i)
      queued.push_back(std::async(std::launch::async, [&] { return session->lens(request); }));
    // The two are waiting once the status counts them: no sleep decides the outcome.
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (waiting_now() != 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
    REQUIRE(waiting_now() == 2);
    for (auto& answer : queued) CHECK(answer.wait_for(0s) == std::future_status::timeout);
    try {
      (void)session->lens(request);
      FAIL("a third request was not refused");
    } catch (const RequestError& e) {
      CHECK(e.status() == 503);
      CHECK(std::string(e.what()) == "busy: 2 requests already wait for the model");
    }
    CHECK(waiting_now() == 2);  // the refused one is not counted
  }
  for (auto& answer : queued) CHECK(answer.get()["generated"] == 2);  // served in turn once the model is free
  CHECK(waiting_now() == 0);
  CHECK(session->status()["running"].is_null());

  // A request whose time runs out while it waits is refused, naming its limit.
  auto hurried = tiny_session(Limits().max_seconds(0.2));
  const auto held = hurried->hold_model();
  try {
    (void)hurried->lens(request);
    FAIL("the wait had no time limit");
  } catch (const RequestError& e) {
    CHECK(e.status() == 503);
    CHECK(std::string(e.what()) == "the model stayed busy for the request's 0.2 s");
  }
  CHECK(hurried->status()["waiting"] == 0);
}

TEST_CASE("Explorer session: two prompts compared (KL per cell) and tracked tokens equal their direct computation",
          "[explorer][compare]") {
  auto session = tiny_session();
  const auto dir = kFixtures / "gpt2-tiny";
  auto model = baukit::models::from_pretrained(dir);
  const auto tokenizer = baukit::Tokenizer::from_pretrained(dir);
  const auto answer = session->lens(parse_lens_request(nlohmann::json::parse(R"({"prompt": "Paris is the capital of",
      "compare": "The city of Rome is the capital of", "generate": 2, "track": [" France", " Italy"]})"),
                                                       session->limits()));
  REQUIRE(answer.contains("a"));
  REQUIRE(answer.contains("b"));
  CHECK(answer["a"]["prompt"] == "Paris is the capital of");
  CHECK(answer["b"]["prompt"] == "The city of Rome is the capital of");
  const auto a = baukit::generate_stream(*model, tokenizer.encode("Paris is the capital of"), 2);
  const auto b = baukit::generate_stream(*model, tokenizer.encode("The city of Rome is the capital of"), 2);
  CHECK(answer["a"]["ids"].get<std::vector<int64_t>>() == a.ids);
  CHECK(answer["b"]["ids"].get<std::vector<int64_t>>() == b.ids);
  const auto kl = baukit::lens_divergence(*model, a.stream.slice(0, 1), b.stream.slice(0, 1));
  const auto& divergence = answer["divergence"];
  REQUIRE(divergence.size() == static_cast<std::size_t>(kl.size(0)));
  CHECK(answer["a"]["block_rows"].size() == divergence.size());
  for (int64_t r = 0; r < kl.size(0); ++r) {
    REQUIRE(divergence[r].size() == std::min(a.ids.size(), b.ids.size()));
    for (int64_t t = 0; t < kl.size(1); ++t)
      CHECK(divergence[r][t].get<double>() == Approx(kl[r][t].item<double>()).epsilon(1e-4).margin(1e-6));
  }
  const auto tracked = baukit::track_tokens(*model, a.stream.slice(0, 1),
                                            {tokenizer.encode(" France").front(), tokenizer.encode(" Italy").front()});
  const auto& got = answer["a"]["tracked"];
  REQUIRE(got.size() == 2);
  CHECK(got[0]["token"] == "\u2423France");
  CHECK(got[1]["id"] == tracked.tokens[1]);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t r = 0; r < tracked.probs.size(1); ++r)
      for (int64_t t = 0; t < tracked.probs.size(2); ++t) {
        CHECK(got[i]["probs"][r][t].get<double>() ==
              Approx(tracked.probs[i][r][t].item<double>()).epsilon(1e-4).margin(1e-9));
        CHECK(got[i]["ranks"][r][t].get<int64_t>() == tracked.ranks[i][r][t].item<int64_t>());
      }
  CHECK(answer["b"]["tracked"].size() == 2);
  CHECK(refusal(R"({"prompt": "Hi", "track": [1]})").second == "'track' holds something not a token string");
  CHECK(refusal(R"({"prompt": "Hi", "track": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]})").second ==
        "'track' must be an array of at most 8 token strings");
  try {
    (void)session->lens(parse_lens_request(nlohmann::json::parse(R"({"prompt": "Hi", "track": [" two tokens"]})"), {}));
    FAIL("a token of two");
  } catch (const RequestError& e) {
    CHECK(std::string(e.what()) == "'track': ' two tokens' is 2 tokens; give exactly one (mind the leading space)");
  }
}

TEST_CASE("Explorer server: token, Host, Origin, content type and size checked, security headers on every answer",
          "[explorer][server]") {
  auto session = tiny_session(Limits().max_body_bytes(4096));
  baukit::explorer::Server server(*session);
  server.start();
  const int port = server.port();
  REQUIRE(port > 0);
  CHECK(server.url() == fmt::format("http://127.0.0.1:{}/?token={}", port, server.token()));
  CHECK(server.token().size() == 32);
  CHECK(baukit::explorer::Server(*session).token() != server.token());  // random per server
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers token{{"X-Baukit-Token", server.token()}};
  auto with = [&](httplib::Headers headers) {
    headers.insert(token.begin(), token.end());
    return headers;
  };
  const std::string body = R"({"prompt": "Paris is the capital of", "generate": 2})";

  // The page, with the token: its policy allows only its own nonce'd script and this server.
  auto page = client.Get(("/?token=" + server.token()).c_str());
  REQUIRE(page);
  CHECK(page->status == 200);
  const auto policy = page->get_header_value("Content-Security-Policy");
  CHECK_THAT(policy, Catch::Contains("default-src 'none'") && Catch::Contains("connect-src 'self'") &&
                         Catch::Contains("frame-ancestors 'none'"));
  const auto nonce = policy.substr(policy.find("'nonce-") + 7, 32);
  CHECK(page->body.find("<script nonce=\"" + nonce + "\">") != std::string::npos);
  CHECK(page->get_header_value("Referrer-Policy") == "no-referrer");  // the token is in the address
  CHECK(page->get_header_value("X-Content-Type-Options") == "nosniff");

  auto lens = client.Post("/api/lens", token, body, "application/json");
  REQUIRE(lens);
  CHECK(lens->status == 200);
  const auto answer = nlohmann::json::parse(lens->body);
  CHECK(answer["generated"] == 2);
  CHECK(answer["ids"].size() == session->lens(parse_lens_request(nlohmann::json::parse(body), {}))["ids"].size());
  CHECK(answer["ids"].size() ==
        baukit::Tokenizer::from_pretrained(kFixtures / "gpt2-tiny").encode("Paris is the capital of").size() + 2);
  CHECK(nlohmann::json::parse(client.Get("/api/status", token)->body)["running"].is_null());

  auto status_of = [](const httplib::Result& result) { return result ? result->status : -1; };
  auto error_of = [](const httplib::Result& result) {
    return result ? nlohmann::json::parse(result->body).value("error", std::string()) : std::string("no answer");
  };
  // Without the token, or with a wrong one.
  CHECK(status_of(client.Get("/")) == 401);
  CHECK(status_of(client.Get("/?token=0123456789abcdef0123456789abcdef")) == 401);
  CHECK(status_of(client.Post("/api/lens", body, "application/json")) == 401);
  auto wrong = client.Post("/api/lens", {{"X-Baukit-Token", server.token().substr(1) + "0"}}, body, "application/json");
  CHECK(status_of(wrong) == 401);
  CHECK(error_of(wrong) == "the X-Baukit-Token header is missing or wrong");
  CHECK(status_of(client.Post(("/api/lens?token=" + server.token()).c_str(), body, "application/json")) == 401);
  // A foreign Host (DNS rebinding: another site's name resolving here) or another port.
  auto rebound =
      client.Post("/api/lens", with({{"Host", fmt::format("attacker.example:{}", port)}}), body, "application/json");
  CHECK(status_of(rebound) == 403);
  CHECK_THAT(error_of(rebound), Catch::Contains("Host 'attacker.example:") && Catch::Contains("is not this server"));
  CHECK(status_of(client.Get("/api/status", with({{"Host", "127.0.0.1:1"}}))) == 403);
  CHECK(status_of(client.Get("/api/status", with({{"Host", fmt::format("localhost:{}", port)}}))) == 200);
  // A cross-site request: a page elsewhere posting here.
  auto cross = client.Post("/api/lens", with({{"Origin", "http://attacker.example"}}), body, "application/json");
  CHECK(status_of(cross) == 403);
  CHECK_THAT(error_of(cross), Catch::Contains("cross-site requests are refused"));
  CHECK(status_of(client.Get("/api/status", with({{"Origin", "null"}}))) == 403);
  CHECK(status_of(client.Get("/api/status", with({{"Origin", fmt::format("http://127.0.0.1:{}", port)}}))) == 200);
  // Only JSON bodies (a form's text/plain can be sent cross-site without a preflight), of bounded size.
  CHECK(status_of(client.Post("/api/lens", token, body, "text/plain")) == 415);
  auto huge = client.Post("/api/lens", token, std::string(5000, ' ') + body, "application/json");
  CHECK(status_of(huge) == 413);
  CHECK(error_of(huge) == "the request body is larger than the server takes");
  CHECK(status_of(client.Post("/api/lens", token, "{\"prompt\": ", "application/json")) == 400);
  CHECK(status_of(client.Post("/api/lens", token, R"({"prompt": "Hi", "generate": 100000})", "application/json")) ==
        400);
  // No file is served: unknown paths, traversal and other methods find nothing.
  CHECK(status_of(client.Get("/etc/passwd", token)) == 404);
  CHECK(status_of(client.Get("/../../../etc/passwd", token)) >= 400);
  CHECK(status_of(client.Delete("/api/lens", token)) >= 400);
  // Still serving after all that.
  CHECK(status_of(client.Post("/api/lens", token, body, "application/json")) == 200);
  server.stop();
  CHECK(status_of(client.Get("/api/status", token)) == -1);  // stopped: nothing listens

  // A stop at once after start (a signal as the server comes up) ends it: httplib's own stop is a no-op until its
  // accept loop runs, which start waits for. A hang here would be the test's timeout; the deadline names it sooner.
  std::promise<void> done;
  auto stopped = done.get_future();
  std::thread([session, done = std::move(done)]() mutable {  // detached: a hung stop must not hang the test too
    for (int i = 0; i < 200; ++i) {
      baukit::explorer::Server quick(*session);
      quick.start();
      quick.stop();
    }
    done.set_value();
  })
      .detach();
  REQUIRE(stopped.wait_for(std::chrono::seconds(120)) == std::future_status::ready);
}

TEST_CASE("Explorer server: 10,000 concurrent connections on loopback take bounded threads and files, then it serves",
          "[explorer][server]") {
  auto session = tiny_session();
  const auto options = baukit::explorer::ServerOptions().threads(4).max_pending_connections(32).idle_seconds(1);
  baukit::explorer::Server server(*session, options);
  server.start();
  const int port = server.port();
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers token{{"X-Baukit-Token", server.token()}};
  REQUIRE(client.Get("/api/status", token));  // the pool is up, the client's connection open
  const auto threads_before = entries("/proc/self/task"), files_before = entries("/proc/self/fd");
  const std::string request =
      fmt::format("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Baukit-Token: {}\r\nConnection: close\r\n\r\n",
                  port, server.token());
  constexpr int kConnections = 10000, kIdle = 40;  // the idle ones send nothing: the server must drop them
  struct Connection {
    int fd = -1;
    std::size_t sent = 0;
    std::string received;
    bool done = false;
  };
  std::vector<Connection> connections(kConnections);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (auto& c : connections) {
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(c.fd >= 0);
    const int rc = ::connect(c.fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
    REQUIRE((rc == 0 || errno == EINPROGRESS));
  }
  std::size_t most_threads = 0;
  int64_t most_server_files = 0;             // open files less the test's own: the server's accepted sockets
  int answered = 0, dropped = 0, reset = 0;  // reset: refused by the kernel (its accept queue full)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(150);
  int open = kConnections;
  while (open > 0 && std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> polls;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < connections.size(); ++i) {
      auto& c = connections[i];
      if (c.done) continue;
      const bool idle = i < static_cast<std::size_t>(kIdle);
      const short events = static_cast<short>(POLLIN | (!idle && c.sent < request.size() ? POLLOUT : 0));
      polls.push_back({c.fd, events, 0});
      which.push_back(i);
    }
    ::poll(polls.data(), polls.size(), 200);
    for (std::size_t p = 0; p < polls.size(); ++p) {
      auto& c = connections[which[p]];
      if (polls[p].revents & POLLOUT) {
        const auto n = ::send(c.fd, request.data() + c.sent, request.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<std::size_t>(n);
      }
      if (polls[p].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buffer[4096];
        const auto n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0) {
          c.received.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
          c.done = true;
          --open;
          ::close(c.fd);
          if (c.received.rfind("HTTP/1.1 200", 0) == 0)
            ++answered;
          else
            ++dropped;
          if (n < 0) ++reset;
        }
      }
    }
    most_threads = std::max(most_threads, entries("/proc/self/task"));
    most_server_files = std::max(
        most_server_files, static_cast<int64_t>(entries("/proc/self/fd")) - static_cast<int64_t>(files_before) - open);
  }
  for (auto& c : connections)
    if (!c.done) ::close(c.fd);
  INFO("answered " << answered << ", dropped " << dropped << ", still open " << open);
  CHECK(open == 0);  // every connection ended within the deadline: answered, or refused (closed, reset); none hangs
  CHECK(answered + dropped == kConnections);
  CHECK(answered >= kConnections / 2);  // most are served, in the pool's turn
  CHECK(dropped >= kIdle);              // the silent ones were closed after the idle time
  fmt::print(
      "10,000 connections: {} answered, {} closed unanswered ({} reset or refused, {} silent); at most {} threads "
      "(before: {}), {} sockets of the server's\n",
      answered, dropped, reset, kIdle, most_threads, threads_before, most_server_files);
  // The server's threads are its pool and listener, whatever the load; its own sockets are bounded by the pool, the
  // pending queue and the kernel's accept backlog, not by the 10,000 clients.
  CHECK(most_threads <= threads_before);
  CHECK(most_server_files <= static_cast<int64_t>(options.threads() + options.max_pending_connections()) + 64);
  const auto start = std::chrono::steady_clock::now();
  auto after = client.Post("/api/lens", token, R"({"prompt": "Hi"})", "application/json");
  REQUIRE(after);
  CHECK(after->status == 200);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("baukit-lens serve prints its address with the token, serves the lens, warns off loopback, stops on SIGTERM",
          "[explorer][command]") {
  auto serve = [](const std::vector<std::string>& extra, std::string& first_line, std::string& errors_path) {
    const auto log = fs::path(BAUKIT_BINARY_DIR) / "test-scratch" / fmt::format("serve-{}.log", ::getpid());
    fs::create_directories(log.parent_path());
    errors_path = log.string();
    // Everything the child needs is made before fork: between fork and exec it only calls async-signal-safe functions.
    std::vector<std::string> args = {BAUKIT_LENS_EXE, "serve", "--model", (kFixtures / "gpt2-tiny").string(),
                                     "--threads",     "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(err >= 0);
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::dup2(out[1], 1);
      ::dup2(err, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(err);
    ::close(out[1]);
    first_line.clear();
    char ch = 0;
    while (::read(out[0], &ch, 1) == 1 && ch != '\n') first_line += ch;
    ::close(out[0]);
    return child;
  };
  std::string line, errors;
  const pid_t child = serve({"--max-generate", "3"}, line, errors);
  INFO(line << "\n" << read_bytes(errors));
  const std::regex address(R"(serving .*gpt2-tiny at http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{32}))");
  std::smatch match;
  REQUIRE(std::regex_search(line, match, address));
  httplib::Client client("127.0.0.1", std::stoi(match[1]));
  const httplib::Headers token{{"X-Baukit-Token", match[2]}};
  auto page = client.Get(("/?token=" + std::string(match[2])).c_str());
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK_THAT(page->body, Catch::Contains("Lens explorer: gpt2-tiny"));
  auto lens = client.Post("/api/lens", token, R"({"prompt": "Hi", "generate": 3})", "application/json");
  REQUIRE(lens);
  CHECK(lens->status == 200);
  CHECK(nlohmann::json::parse(lens->body)["generated"] == 3);
  auto over = client.Post("/api/lens", token, R"({"prompt": "Hi", "generate": 4})", "application/json");
  REQUIRE(over);
  CHECK(over->status == 400);  // --max-generate 3
  ::kill(child, SIGTERM);
  int status = exit_status_within(child, 60);
  REQUIRE(status != -1);  // it stopped
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(read_bytes(errors), Catch::Contains("stopping on signal"));

  // A signal as soon as the address is printed stops it too (the server's loop is running by then).
  const pid_t open_child = serve({"--host", "0.0.0.0"}, line, errors);
  CHECK_THAT(line, Catch::Contains("at http://127.0.0.1:"));
  ::kill(open_child, SIGTERM);
  status = exit_status_within(open_child, 60);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(read_bytes(errors), Catch::Contains("warning: listening on 0.0.0.0 rather than loopback"));
}

TEST_CASE("The explorer in Chromium: type a prompt, see the grid, switch views, hover, compare, export and import",
          "[explorer][browser]") {
  const auto dir = fs::path(BAUKIT_SOURCE_DIR) / "models" / "default";
  baukit::explorer::Session session(baukit::models::from_pretrained(dir), baukit::Tokenizer::from_pretrained(dir),
                                    "default");
  baukit::explorer::Server server(session);
  server.start();
  const auto shots = fs::path(BAUKIT_BINARY_DIR) / "test-scratch" / "explorer-screenshots";
  fs::remove_all(shots);
  fs::create_directories(shots);
  const auto script = fs::path(BAUKIT_BROWSER_DIR) / "explorer.mjs";
  INFO("needs node and playwright-core (the browser_setup test installs it) and Debian's chromium");
  REQUIRE(fs::exists(script));
  const auto log = shots / "browser.log";
  const auto command =
      fmt::format("cd {} && timeout 300 {} explorer.mjs {} {} > {} 2>&1", quoted(BAUKIT_BROWSER_DIR),
                  quoted(BAUKIT_NODE), quoted(server.url()), quoted(shots.string()), quoted(log.string()));
  const int status = std::system(command.c_str());
  const auto output = read_bytes(log);
  INFO(output);
  REQUIRE(status == 0);
  const auto seen = nlohmann::json::parse(output.substr(output.rfind("{\"errors\"")));
  CHECK(seen["errors"].empty());
  CHECK(seen["grid"]["generated"] == 6);
  CHECK_THAT(seen["imported"].get<std::string>(), Catch::StartsWith("B (imported)"));
  for (const char* name :
       {"explorer-grid.png", "explorer-compare.png", "explorer-difference.png", "explorer-imported.png"}) {
    INFO(name);
    CHECK(fs::file_size(shots / name) > 20000);
  }
  // The export is the server's answer for run A: it parses, with the grid's rows and tokens.
  const auto exported = read_json(shots / "exported-run.json");
  CHECK(exported["prompt"] == ". The Space Needle is located in the city of");
  CHECK(exported["generated"] == 3);
}
