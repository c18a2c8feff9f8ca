/// @file explorer/server.hpp
/// @brief The explorer's local HTTP server (cpp-httplib): the page at `/`, the lens at `POST /api/lens`, progress at
/// `GET /api/status`. Safe to leave running on a workstation: it binds 127.0.0.1 unless told otherwise; every
/// request needs the random access token of the printed URL (the page sends it as `X-Baukit-Token`); the `Host`
/// header must be an address literal or `localhost` with this port and an `Origin` must be this server (against DNS
/// rebinding and cross-site requests); bodies, prompts, generated tokens and time are limited (`Limits`); no request
/// names a file; connections are served by a fixed pool with a bounded queue, so a flood waits in the kernel's
/// accept backlog (bounded by the system) instead of taking threads or memory. Needs cpp-httplib
/// (`BAUKIT_WITH_HTTPLIB`, found by CMake).
///
/// @code
/// baukit::explorer::Session session(model.ptr(), tokenizer, "gpt2-xl");
/// baukit::explorer::Server server(session, baukit::explorer::ServerOptions().port(8000));
/// server.start();
/// std::cout << server.url() << "\n";  // http://127.0.0.1:8000/?token=...
/// server.wait();
/// @endcode
#pragma once

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <baukit/explorer/page.hpp>
#include <baukit/explorer/session.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace baukit::explorer {

/// Where and how the server listens.
struct ServerOptions {
  /// The address to bind: loopback unless another is asked for (the command warns then).
  TORCH_ARG(std::string, host) = "127.0.0.1";
  /// The port; 0 picks a free one.
  TORCH_ARG(int, port) = 0;
  /// The access token; empty: a random one.
  TORCH_ARG(std::string, token) = "";
  /// Threads serving connections.
  TORCH_ARG(std::size_t, threads) = 8;
  /// Accepted connections that may wait for a thread; beyond them new connections wait in the kernel's backlog.
  TORCH_ARG(std::size_t, max_pending_connections) = 64;
  /// Seconds a connection may take to send its request, or stay idle between requests.
  TORCH_ARG(int, idle_seconds) = 5;
};

/// 32 hexadecimal digits from the system's random source.
inline std::string random_token() {
  std::random_device entropy;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", entropy());
  return token;
}

namespace detail {

/// cpp-httplib's task queue with a bound: `threads` workers, at most `max_pending` connections waiting for one;
/// `enqueue` (the accepting thread) blocks while that many wait, so no more are accepted until a worker is free.
class BoundedPool final : public httplib::TaskQueue {
 public:
  /// A pool of `threads` workers.
  BoundedPool(std::size_t threads, std::size_t max_pending) : max_pending_(std::max<std::size_t>(1, max_pending)) {
    for (std::size_t i = 0; i < std::max<std::size_t>(1, threads); ++i) workers_.emplace_back([this] { work(); });
  }
  BoundedPool(const BoundedPool&) = delete;
  BoundedPool& operator=(const BoundedPool&) = delete;
  ~BoundedPool() override { shutdown(); }

  /// Queues one connection's work, waiting while the queue is full.
  void enqueue(std::function<void()> job) override {
    std::unique_lock<std::mutex> lock(mutex_);
    space_.wait(lock, [&] { return jobs_.size() < max_pending_ || stopping_; });
    jobs_.push_back(std::move(job));
    ready_.notify_one();
  }

  /// Finishes the queued work and joins the workers.
  void shutdown() override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (auto& worker : workers_)
      if (worker.joinable()) worker.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      job();  // cpp-httplib's connection handler; it catches its handlers' exceptions
    }
  }

  std::size_t max_pending_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
};

/// cpp-httplib's server with its listening socket reachable: Debian's compiled library listens with a backlog of 5,
/// which under a burst of connections makes the kernel drop SYNs (clients retry after 1, 3, 7 ... s); `widen_backlog`
/// raises it to the system's limit (Linux takes a second `listen` on a listening socket as a new backlog).
class HttpServer : public httplib::Server {
 public:
  /// Raises the listen backlog of the bound socket to `SOMAXCONN`.
  void widen_backlog() {
    const auto socket = svr_sock_.load();
    if (socket != INVALID_SOCKET) ::listen(socket, SOMAXCONN);
  }
};

/// Compares a given secret with the expected one in time independent of where they differ.
inline bool same_secret(const std::string& given, const std::string& expected) {
  if (expected.empty() || given.size() != expected.size()) return false;
  unsigned char differ = 0;
  for (std::size_t i = 0; i < given.size(); ++i) differ |= static_cast<unsigned char>(given[i] ^ expected[i]);
  return differ == 0;
}

/// Whether `host` (a `Host` header) names this server: `localhost` or an IPv4/IPv6 literal, with `port`. A DNS name
/// is refused: a page of another site whose name was rebound to this address sends its own name.
inline bool is_own_host(const std::string& host, int port) {
  const auto suffix = ":" + std::to_string(port);
  if (host.size() <= suffix.size() || host.compare(host.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const auto name = host.substr(0, host.size() - suffix.size());
  if (name == "localhost") return true;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']')
    return name.find_first_not_of("0123456789abcdefABCDEF:.", 1) == name.size() - 1;
  return name.find_first_not_of("0123456789.") == std::string::npos;
}

}  // namespace detail

/// The explorer's server over one `Session`; `start` listens on a thread of its own, `stop` (or destruction) ends
/// it.
class Server {
 public:
  /// A server for `session` (which must outlive it), not yet listening.
  Server(Session& session, ServerOptions options = {})
      : session_(session), options_(std::move(options)), token_(options_.token()) {
    if (token_.empty()) token_ = random_token();
    routes();
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() { stop(); }

  /// Binds and starts listening; throws naming the address when it cannot.
  void start() {
    if (listener_.joinable()) throw std::logic_error("explorer: the server is already started");
    if (options_.port() == 0)
      port_ = http_.bind_to_any_port(options_.host());
    else
      port_ = http_.bind_to_port(options_.host(), options_.port()) ? options_.port() : -1;
    if (port_ > 0) http_.widen_backlog();
    if (port_ <= 0)
      throw std::runtime_error(fmt::format("explorer: cannot listen on {}:{} (in use, or not this machine's address)",
                                           options_.host(), options_.port()));
    listening_ended_ = false;
    listener_ = std::thread([this] {
      http_.listen_after_bind();
      listening_ended_ = true;
    });
    // httplib's stop() does nothing until the accept loop runs, so a stop right after start (a signal, a failed
    // test) would wait forever: start returns only once the loop is running (or has already ended).
    while (!http_.is_running() && !listening_ended_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  /// Stops listening, finishes the connections being served and joins.
  void stop() {
    if (!listener_.joinable()) return;
    http_.stop();
    listener_.join();
  }

  /// Blocks until the server stops.
  void wait() {
    if (listener_.joinable()) listener_.join();
  }

  /// The port listened on (after `start`).
  [[nodiscard]] int port() const noexcept { return port_; }
  /// The access token.
  [[nodiscard]] const std::string& token() const noexcept { return token_; }
  /// The page's address, token included.
  [[nodiscard]] std::string url() const {
    const auto& host = options_.host();
    const bool any = host == "0.0.0.0" || host == "::";
    const auto shown = any ? std::string("127.0.0.1") : host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return fmt::format("http://{}:{}/?token={}", shown, port_, token_);
  }

 private:
  static void answer_error(httplib::Response& response, int status, const std::string& message) {
    response.status = status;
    response.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
  }

  void routes() {
    const auto& limits = session_.limits();
    http_.new_task_queue = [this] {
      return new detail::BoundedPool(options_.threads(), options_.max_pending_connections());
    };
    http_.set_payload_max_length(limits.max_body_bytes());
    http_.set_read_timeout(options_.idle_seconds(), 0);
    http_.set_write_timeout(options_.idle_seconds(), 0);
    http_.set_keep_alive_timeout(options_.idle_seconds());
    http_.set_keep_alive_max_count(100);
    http_.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                               {"Referrer-Policy", "no-referrer"},
                               {"Cache-Control", "no-store"},
                               {"X-Frame-Options", "DENY"}});
    // Every request: this server's Host, no foreign Origin, the token.
    http_.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response& response) {
      const auto host = request.get_header_value("Host");
      if (!detail::is_own_host(host, port_)) {
        answer_error(response, 403, fmt::format("Host '{}' is not this server's address and port", host));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (request.has_header("Origin") && request.get_header_value("Origin") != "http://" + host) {
        answer_error(response, 403,
                     fmt::format("Origin '{}' is not this server: cross-site requests are refused",
                                 request.get_header_value("Origin")));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (request.path == "/favicon.ico") {  // what a browser asks for unbidden: nothing, and no error in its console
        response.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
      const auto given =
          request.path == "/" ? request.get_param_value("token") : request.get_header_value("X-Baukit-Token");
      if (!detail::same_secret(given, token_)) {
        answer_error(response, 401,
                     request.path == "/" ? "the page needs the access token printed with its address (?token=...)"
                                         : "the X-Baukit-Token header is missing or wrong");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.Get("/", [this](const httplib::Request&, httplib::Response& response) {
      const auto nonce = random_token();
      response.set_header("Content-Security-Policy", page_security_policy(nonce) + "; frame-ancestors 'none'");
      response.set_content(explorer_page_html(session_, nonce), "text/html; charset=utf-8");
    });
    http_.Get("/api/status", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(session_.status().dump(), "application/json");
    });
    http_.Post("/api/lens", [this](const httplib::Request& request, httplib::Response& response) {
      try {
        const auto type = request.get_header_value("Content-Type");
        if (type.rfind("application/json", 0) != 0)
          throw RequestError(415, fmt::format("Content-Type '{}': send application/json", type));
        nlohmann::json body;
        try {
          body = nlohmann::json::parse(request.body);
        } catch (const nlohmann::json::parse_error& e) {
          throw RequestError(400, fmt::format("the body is not JSON: {}", e.what()));
        }
        const auto answer = session_.lens(parse_lens_request(body, session_.limits()));
        response.set_content(answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
      } catch (const RequestError& e) {
        answer_error(response, e.status(), e.what());
      } catch (const std::exception& e) {
        answer_error(response, 500, e.what());
      }
    });
    http_.set_error_handler([](const httplib::Request& request, httplib::Response& response) {
      if (response.body.empty())
        answer_error(response, response.status,
                     response.status == 413   ? "the request body is larger than the server takes"
                     : response.status == 404 ? fmt::format("no such page: {}", request.path)
                                              : fmt::format("HTTP {}", response.status));
    });
  }

  Session& session_;
  ServerOptions options_;
  std::string token_;
  detail::HttpServer http_;
  std::thread listener_;
  std::atomic<bool> listening_ended_{false};
  int port_ = -1;
};

}  // namespace baukit::explorer
