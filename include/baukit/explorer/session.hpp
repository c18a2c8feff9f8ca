/// @file explorer/session.hpp
/// @brief The explorer's model, loaded once: a request (prompt, tokens to generate, top-k, target) checked against
/// the limits, queued behind the one computation the model runs at a time, computed under a deadline, and answered
/// as the JSON the explorer's page renders. No request names a file: the model, tokenizer and learned lenses are
/// the ones the session was made with.
///
/// @code
/// baukit::explorer::Session session(model.ptr(), tokenizer, "gpt2-xl");
/// nlohmann::json answer = session.lens(baukit::explorer::parse_lens_request(
///     nlohmann::json::parse(R"({"prompt": "The Eiffel Tower is in", "generate": 5})"), session.limits()));
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <atomic>
#include <baukit/lens/comparison.hpp>
#include <baukit/lens/generation.hpp>
#include <baukit/lens/json.hpp>
#include <baukit/lens/lens.hpp>
#include <baukit/lens/page.hpp>
#include <baukit/lens/statistics.hpp>
#include <baukit/tokenizer.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace baukit::explorer {

/// What one request may ask for and take.
struct Limits {
  /// The largest request body, in bytes.
  TORCH_ARG(std::size_t, max_body_bytes) = std::size_t{64} << 10;
  /// The longest prompt, in bytes of UTF-8 (its tokens are limited by the model's positions too).
  TORCH_ARG(std::size_t, max_prompt_bytes) = 16384;
  /// The most tokens a request may generate.
  TORCH_ARG(int64_t, max_generate) = 256;
  /// The most tokens per cell.
  TORCH_ARG(int64_t, max_topk) = 20;
  /// Seconds a request may take, waiting for the model included.
  TORCH_ARG(double, max_seconds) = 120;
  /// Requests that may wait for the model while one runs; more are refused as busy.
  TORCH_ARG(std::size_t, max_waiting) = 4;
};

/// A request the explorer refuses, with the HTTP status to answer (400 bad request, 413 too large, 503 busy or out
/// of time) and a message naming the field or limit.
class RequestError : public std::invalid_argument {
 public:
  /// An error answered with `status`.
  RequestError(int status, const std::string& message) : std::invalid_argument(message), status_(status) {}
  /// The HTTP status.
  [[nodiscard]] int status() const noexcept { return status_; }

 private:
  int status_;
};

/// One lens request: the JSON body `{"prompt": "...", "generate": 0, "topk": 5, "target": " Seattle",
/// "attention_rows": false, "compare": "...", "track": [" Seattle", " Paris"]}` (all but `prompt` optional).
struct LensRequest {
  std::string prompt;              ///< The prompt.
  int64_t generate = 0;            ///< Tokens to generate greedily after it (the lens covers them too).
  int64_t topk = 5;                ///< Tokens per cell.
  std::string target;              ///< A token whose rank every cell reports ("" for none).
  bool attention_rows = false;     ///< Also the stream after each attention.
  std::string compare;             ///< A second prompt, run the same way and compared cell by cell ("" for none).
  std::vector<std::string> track;  ///< Tokens whose probability and rank to report in every cell.
};

/// The most tokens a request may track.
inline constexpr std::size_t kMaxTrackedTokens = 8;

/// Reads a request body, checking every field's type and range against `limits`; unknown fields are refused, so a
/// misspelt option is never ignored.
inline LensRequest parse_lens_request(const nlohmann::json& body, const Limits& limits) {
  auto fail = [](const std::string& why) { throw RequestError(400, why); };
  if (!body.is_object()) fail("the request body must be a JSON object");
  LensRequest request;
  for (const auto& [key, value] : body.items()) {
    if (key == "prompt" || key == "target" || key == "compare") {
      if (!value.is_string()) fail(fmt::format("'{}' must be a string", key));
      (key == "prompt"   ? request.prompt
       : key == "target" ? request.target
                         : request.compare) = value.get<std::string>();
    } else if (key == "track") {
      if (!value.is_array() || value.size() > kMaxTrackedTokens)
        fail(fmt::format("'track' must be an array of at most {} token strings", kMaxTrackedTokens));
      for (const auto& token : value) {
        if (!token.is_string() || token.get<std::string>().empty()) fail("'track' holds something not a token string");
        request.track.push_back(token.get<std::string>());
      }
    } else if (key == "generate" || key == "topk") {
      if (!value.is_number_integer()) fail(fmt::format("'{}' must be an integer", key));
      (key == "generate" ? request.generate : request.topk) = value.get<int64_t>();
    } else if (key == "attention_rows") {
      if (!value.is_boolean()) fail("'attention_rows' must be true or false");
      request.attention_rows = value.get<bool>();
    } else {
      fail(fmt::format("unknown field '{}' (known: prompt, generate, topk, target, attention_rows, compare, track)",
                       key));
    }
  }
  if (request.prompt.empty()) fail("'prompt' is missing or empty");
  for (const auto* text : {&request.prompt, &request.compare})
    if (text->size() > limits.max_prompt_bytes())
      throw RequestError(
          413, fmt::format("'{}' is {} bytes; the limit is {}", text == &request.prompt ? "prompt" : "compare",
                           text->size(), limits.max_prompt_bytes()));
  if (request.generate < 0 || request.generate > limits.max_generate())
    fail(fmt::format("'generate' is {}; give 0 to {}", request.generate, limits.max_generate()));
  if (request.topk < 1 || request.topk > limits.max_topk())
    fail(fmt::format("'topk' is {}; give 1 to {}", request.topk, limits.max_topk()));
  return request;
}

/// The model, its tokenizer and learned lenses, loaded once; `lens` computes one request at a time.
class Session {
 public:
  /// A session over `model` and `tokenizer`; `name` labels the page, `learned` adds learned lenses' views.
  Session(std::shared_ptr<models::CausalLM> model, Tokenizer tokenizer, std::string name,
          std::vector<std::shared_ptr<const LearnedLens>> learned = {}, Limits limits = {})
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        name_(std::move(name)),
        learned_(std::move(learned)),
        limits_(limits) {
    if (!model_) throw std::invalid_argument("explorer: no model");
  }

  /// The limits requests are checked against.
  [[nodiscard]] const Limits& limits() const noexcept { return limits_; }
  /// The page's label for the model.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  /// The lens of `request`: its tokens, rows, views, statistics and the page's data (`lens_page_data`). Waits for
  /// the model behind the running request; throws `RequestError` (503) when `Limits::max_waiting` already wait or the
  /// deadline passes, (400) when the prompt does not fit the model.
  nlohmann::json lens(const LensRequest& request) {
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(limits_.max_seconds()));
    if (waiting_.fetch_add(1) >= limits_.max_waiting()) {
      waiting_.fetch_sub(1);
      throw RequestError(503, fmt::format("busy: {} requests already wait for the model", limits_.max_waiting()));
    }
    std::unique_lock<std::timed_mutex> model_lock(model_mutex_, deadline);
    waiting_.fetch_sub(1);
    if (!model_lock.owns_lock())
      throw RequestError(503, fmt::format("the model stayed busy for the request's {} s", limits_.max_seconds()));
    struct Idle {  // the status says idle again however the computation ends
      Session& session;
      ~Idle() { session.set_phase(""); }
    } idle{*this};
    const auto check_time = [&] {
      if (std::chrono::steady_clock::now() > deadline)
        throw RequestError(503, fmt::format("the request ran past its limit of {} s", limits_.max_seconds()));
    };
    const auto target = single_token(request.target, "target");
    std::vector<int64_t> tracked;
    for (const auto& token : request.track) tracked.push_back(single_token(token, "track"));
    if (request.attention_rows && !learned_.empty())
      throw RequestError(400, "'attention_rows': the learned lenses translate block outputs only");
    const auto options =
        LensOptions().topk(request.topk).target(target).attention_rows(request.attention_rows).learned_lenses(learned_);
    auto run = [&](const std::string& prompt, const std::string& field, const std::string& name) {
      set_phase(name + ": tokenizing");
      const auto ids = tokenizer_.encode(prompt);
      if (ids.empty()) throw RequestError(400, fmt::format("'{}' has no tokens", field));
      if (static_cast<int64_t>(ids.size()) + request.generate > model_->max_positions())
        throw RequestError(400, fmt::format("'{}' is {} tokens; with {} generated that exceeds the model's {}", field,
                                            ids.size(), request.generate, model_->max_positions()));
      tokenizer_.check_ids_fit(ids, model_->vocab_size());
      set_phase(name + ": forward");
      auto traced =
          generate_stream(*model_, ids, request.generate, request.attention_rows, {}, [&](int64_t done, int64_t total) {
            check_time();
            set_phase(fmt::format("{}: generating tokens {}/{}", name, done, total));
          });
      auto result = baukit::detail::lens_of_stream(
          *model_, traced.stream, traced.logits, traced.labels, traced.ids, options, [&](int64_t done, int64_t total) {
            check_time();
            set_phase(fmt::format("{}: decoding rows {}/{}", name, done, total));
          });
      result.generated = traced.generated;
      auto json = answer(result);
      const auto states = lens_rows(traced, request.attention_rows);
      std::vector<std::string> block_rows;  // the rows of `states`, which the divergence and tracking decode
      for (std::size_t r = 1; r < traced.labels.size(); ++r)
        if (traced.labels[r].find(' ') == std::string::npos) block_rows.push_back(traced.labels[r]);
      json["block_rows"] = block_rows;
      if (!tracked.empty()) {
        set_phase(name + ": tracking tokens");
        json["tracked"] = tracked_json(track_tokens(*model_, states, tracked));
      }
      return std::pair(std::move(json), states);
    };
    auto [first, first_states] = run(request.prompt, "prompt", request.compare.empty() ? "run" : "A");
    nlohmann::json out;
    if (request.compare.empty()) {
      out = std::move(first);
    } else {
      check_time();
      auto [second, second_states] = run(request.compare, "compare", "B");
      check_time();
      set_phase("comparing");
      const auto kl = lens_divergence(*model_, first_states, second_states);
      out = {{"a", std::move(first)}, {"b", std::move(second)}, {"divergence", rounded(kl)}};
    }
    out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return out;
  }

  /// `{"running": phase or null, "waiting": n}`: what the model is doing, for the page's progress line.
  [[nodiscard]] nlohmann::json status() const {
    const std::lock_guard<std::mutex> lock(phase_mutex_);
    return {{"running", phase_.empty() ? nlohmann::json(nullptr) : nlohmann::json(phase_)},
            {"waiting", waiting_.load()}};
  }

  /// Waits for the model and keeps requests off it while the returned lock lives: they wait (counted in `status`'s
  /// `waiting`) or are refused as busy, as behind a running request. For the caller's own work on the model.
  [[nodiscard]] std::unique_lock<std::timed_mutex> hold_model() {
    return std::unique_lock<std::timed_mutex>(model_mutex_);
  }

 private:
  void set_phase(std::string phase) {
    const std::lock_guard<std::mutex> lock(phase_mutex_);
    phase_ = std::move(phase);
  }

  // The id of `text`, which must be one token ("" gives -1).
  int64_t single_token(const std::string& text, const std::string& field) const {
    if (text.empty()) return -1;
    const auto ids = tokenizer_.encode(text, EncodeOptions{false, false});
    if (ids.size() != 1)
      throw RequestError(400, fmt::format("'{}': '{}' is {} tokens; give exactly one (mind the leading space)", field,
                                          text, ids.size()));
    tokenizer_.check_ids_fit(ids, model_->vocab_size());
    return ids.front();
  }

  // The rows of the lens view (the stream after each block): what the divergence and tracked tokens decode.
  static torch::Tensor lens_rows(const GeneratedStream& traced, bool attention_rows) {
    const auto after_blocks = traced.stream.slice(0, 1);
    return attention_rows ? after_blocks.slice(0, 1, after_blocks.size(0), 2) : after_blocks;
  }

  // A [rows, positions] tensor as nested arrays: integers exactly, reals to 5 significant places (what a page shows).
  static nlohmann::json rounded(const torch::Tensor& values) {
    const bool integral = !values.is_floating_point();
    const auto cpu = values.to(torch::kFloat64).cpu().contiguous();
    const auto at = cpu.accessor<double, 2>();
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t r = 0; r < cpu.size(0); ++r) {
      nlohmann::json row = nlohmann::json::array();
      for (int64_t t = 0; t < cpu.size(1); ++t) {
        const double v = at[r][t];
        if (integral)
          row.push_back(static_cast<int64_t>(v));
        else
          row.push_back(v == 0 ? 0.0 : std::stod(fmt::format("{:.5g}", v)));
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

  nlohmann::json tracked_json(const TrackedTokens& tracked) const {
    nlohmann::json out = nlohmann::json::array();
    for (std::size_t i = 0; i < tracked.tokens.size(); ++i) {
      const auto row = static_cast<int64_t>(i);
      out.push_back({{"id", tracked.tokens[i]},
                     {"token", visible_token(tokenizer_.token_text(tracked.tokens[i]))},
                     {"probs", rounded(tracked.probs[row])},
                     {"ranks", rounded(tracked.ranks[row])}});
    }
    return out;
  }

  nlohmann::json answer(const LensResult& result) const {
    const auto prompt_end = result.ids.end() - static_cast<std::ptrdiff_t>(result.generated);
    nlohmann::json tokens = nlohmann::json::array(), views = nlohmann::json::array(),
                   statistics = nlohmann::json::array();
    for (const auto id : result.ids) tokens.push_back(visible_token(tokenizer_.decode(id)));
    for (const auto& view : lens_page_views(result)) views.push_back({{"key", view.key}, {"label", view.label}});
    for (const auto& statistic : lens_page_statistics(result, tokenizer_))
      statistics.push_back({{"key", statistic.key}, {"label", statistic.label}});
    return {{"model", name_},
            {"prompt", tokenizer_.decode(std::vector<int64_t>(result.ids.begin(), prompt_end))},
            {"continuation", tokenizer_.decode(std::vector<int64_t>(prompt_end, result.ids.end()))},
            {"ids", result.ids},
            {"tokens", tokens},
            {"generated", result.generated},
            {"rows", result.lens.rows},
            {"topk", result.topk},
            {"target", result.target >= 0 ? nlohmann::json(visible_token(tokenizer_.token_text(result.target)))
                                          : nlohmann::json(nullptr)},
            {"views", views},
            {"statistics", statistics},
            {"data", lens_page_data(result, tokenizer_)}};
  }

  std::shared_ptr<models::CausalLM> model_;
  Tokenizer tokenizer_;
  std::string name_;
  std::vector<std::shared_ptr<const LearnedLens>> learned_;
  Limits limits_;
  std::timed_mutex model_mutex_;
  std::atomic<std::size_t> waiting_{0};
  mutable std::mutex phase_mutex_;
  std::string phase_;
};

}  // namespace baukit::explorer
