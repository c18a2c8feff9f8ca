/// @file lens/page.hpp
/// @brief The logit lens as a single offline HTML page: the seed's grid (prompt tokens in yellow above and
/// below, a layer column, each cell the top-1 token with its background blended toward blue by magnitude and
/// its text grey-to-black by probability, the top-k in the hover title), plus switches between the lens, the
/// delta lens and any learned lenses (tuned, Jacobian) and between statistics, a colour legend, and the prompt as
/// text.
///
/// @code
/// auto result = baukit::logit_lens(*model, tok.encode(prompt));
/// baukit::save_lens_page("lens.html", result, tok);
/// @endcode
#pragma once

#include <fmt/format.h>

#include <baukit/lens/json.hpp>
#include <baukit/lens/lens.hpp>
#include <baukit/lens/statistics.hpp>
#include <baukit/show.hpp>
#include <baukit/text/utf8.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace baukit {

/// How the page looks when opened.
struct LensPageOptions {
  /// Show the delta lens first.
  TORCH_ARG(bool, deltas) = false;
  /// The colour magnitude blends toward, as RGB.
  TORCH_ARG(std::vector<int>, color) = std::vector<int>{0, 0, 255};
  /// The page's title.
  TORCH_ARG(std::string, title) = "Logit lens";
};

/// A token's text with whitespace and control characters made visible: space as ␣, newline as ↵, tab as ⇥,
/// other control characters as their Unicode control pictures.
inline std::string visible_token(const std::string& text) {
  if (text.empty()) return "\u2205";  // ∅
  std::string out;
  for (unsigned char c : text) {
    if (c == ' ')
      out += "\u2423";
    else if (c == '\n')
      out += "\u21b5";
    else if (c == '\t')
      out += "\u21e5";
    else if (c < 0x20)
      utf8::append(out, 0x2400 + c);
    else if (c == 0x7f)
      out += "\u2421";
    else
      out += static_cast<char>(c);
  }
  return out;
}

namespace detail {

inline std::string rgb(double r, double g, double b) {
  auto channel = [](double v) { return static_cast<int>(std::clamp(v, 0.0, 255.0)); };
  return fmt::format("rgb({}, {}, {})", channel(r), channel(g), channel(b));
}

/// The seed's colours: background toward `color` by magnitude m, text grey-to-black by darkness p.
inline show::Style cell_colors(double m, double p, const std::vector<int>& color) {
  m = std::clamp(m, 0.0, 1.0);
  p = std::clamp(p, 0.0, 1.0);
  const double grey = 255 * (1 - p);
  return show::style(
      {{"background", rgb(255 * (1 - m) + color[0] * m, 255 * (1 - m) + color[1] * m, 255 * (1 - m) + color[2] * m)},
       {"color", rgb(grey, grey, grey)}});
}

inline std::string cell_title(const LensCell& cell, const Tokenizer& tokenizer, int64_t target) {
  std::string title = fmt::format("mag: {:.2f}", cell.magnitude);
  for (std::size_t k = 0; k < cell.tokens.size(); ++k)
    title += fmt::format("\n{}: prob {:.2f}", visible_token(tokenizer.token_text(cell.tokens[k])), cell.probs[k]);
  const std::string target_text = target >= 0 ? visible_token(tokenizer.token_text(target)) : "";
  for (const auto& statistic : lens_statistics())
    if (const auto line = statistic.hover(cell, target_text); !line.empty()) title += "\n" + line;
  return title;
}

}  // namespace detail

/// The seed's grid for one view as a `show` node: header rows of prompt tokens above and below (the last
/// `generated` of them, which the model generated, in green rather than yellow), a layer column, a cell per layer and
/// position. Rows carry the class `lens-row`, cells `lens-cell` with `data-r`/`data-t`.
inline show::Node lens_grid(const LensGrid& grid, const std::vector<int64_t>& ids, const Tokenizer& tokenizer,
                            int64_t target, const std::vector<int>& color, std::size_t generated = 0) {
  using namespace show;
  Node::List header{style({{"fontWeight", "bold"}}), attr({{"class", "lens-label"}}), "Layer"};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const bool new_token = i + generated >= ids.size();
    header.insert(header.end(), {style({{"background", new_token ? "#b8f0b8" : "yellow"}}),
                                 attr({{"title", fmt::format("Token {}{}", i, new_token ? " (generated)" : "")},
                                       {"class", "lens-cell lens-head"}}),
                                 visible_token(tokenizer.decode(ids[i]))});
  }
  Node::List rows{attr({{"class", "lens-row"}}), header};
  for (std::size_t r = 0; r < grid.cells.size(); ++r) {
    Node::List row{style({{"fontWeight", "bold"}}), attr({{"class", "lens-label"}}), grid.rows[r]};
    for (std::size_t t = 0; t < grid.cells[r].size(); ++t) {
      const auto& cell = grid.cells[r][t];
      row.insert(row.end(), {baukit::detail::cell_colors(cell.magnitude, cell.probs[0], color),
                             attr({{"title", baukit::detail::cell_title(cell, tokenizer, target)},
                                   {"class", "lens-cell"},
                                   {"data-r", std::to_string(r)},
                                   {"data-t", std::to_string(t)}}),
                             visible_token(tokenizer.token_text(cell.tokens[0]))});
    }
    rows.insert(rows.end(), {attr({{"class", "lens-row"}}), row});
  }
  rows.insert(rows.end(), {attr({{"class", "lens-row"}}), header});
  return Node(std::move(rows));
}

/// What the page's script shows, as JSON: `color`, and per view that holds rows (`lens`, `delta_lens`, each learned
/// lens by name) its cells' `text`, `title` (the hover), `magnitude` and each statistic's shade `[row][position]`.
/// The explorer's page renders the same data.
inline nlohmann::json lens_page_data(const LensResult& result, const Tokenizer& tokenizer,
                                     const LensPageOptions& options = {}) {
  if (options.color().size() != 3) throw std::invalid_argument("lens page: color needs three RGB values");
  check_lens_result(result);
  const double log_vocab = std::log(static_cast<double>(tokenizer.vocab_size()));
  auto view_data = [&](const LensGrid& grid) {
    nlohmann::json view = {
        {"text", nlohmann::json::array()}, {"title", nlohmann::json::array()}, {"magnitude", nlohmann::json::array()}};
    const auto& statistics = lens_statistics();
    for (const auto& statistic : statistics) view[statistic.page_key] = nlohmann::json::array();
    for (const auto& row : grid.cells) {
      nlohmann::json text, title, magnitude;
      std::vector<nlohmann::json> shades(statistics.size());
      for (const auto& cell : row) {
        text.push_back(visible_token(tokenizer.token_text(cell.tokens[0])));
        title.push_back(detail::cell_title(cell, tokenizer, result.target));
        magnitude.push_back(cell.magnitude);
        for (std::size_t s = 0; s < statistics.size(); ++s)
          shades[s].push_back(std::round(statistics[s].darkness(cell, log_vocab) * 1000) / 1000);
      }
      view["text"].push_back(text);
      view["title"].push_back(title);
      view["magnitude"].push_back(magnitude);
      for (std::size_t s = 0; s < statistics.size(); ++s) view[statistics[s].page_key].push_back(shades[s]);
    }
    return view;
  };
  nlohmann::json data = {{"color", options.color()}, {"views", nlohmann::json::object()}};
  if (!result.lens.cells.empty()) data["views"]["lens"] = view_data(result.lens);
  if (!result.delta_lens.cells.empty()) data["views"]["delta_lens"] = view_data(result.delta_lens);
  for (const auto& learned : result.learned)
    if (!learned.grid.cells.empty()) data["views"][learned.name] = view_data(learned.grid);
  return data;
}

/// A choice the lens page (and the explorer's) offers: a view, keyed as in `lens_page_data`'s `views`, or a
/// statistic, keyed by its `page_key`; with the label shown for it.
struct LensPageChoice {
  std::string key;    ///< The view's or statistic's key.
  std::string label;  ///< What the page's select shows.
};

/// The views `result` holds rows for, in the page's order: the lens, the delta lens, each learned lens.
inline std::vector<LensPageChoice> lens_page_views(const LensResult& result) {
  std::vector<LensPageChoice> views;
  if (!result.lens.cells.empty()) views.push_back({"lens", "lens (hidden states)"});
  if (!result.delta_lens.cells.empty()) views.push_back({"delta_lens", "delta lens (each layer's change)"});
  for (const auto& learned : result.learned)
    if (!learned.grid.cells.empty()) views.push_back({learned.name, learned.label + " (translated hidden states)"});
  return views;
}

/// The statistics the page offers for `result`: those needing a target only when it has one, their labels naming it.
inline std::vector<LensPageChoice> lens_page_statistics(const LensResult& result, const Tokenizer& tokenizer) {
  std::vector<LensPageChoice> statistics;
  for (const auto& statistic : lens_statistics()) {
    if (statistic.needs_target && result.target < 0) continue;
    auto label = statistic.label;
    if (const auto at = label.find("{target}"); at != std::string::npos)
      label.replace(at, 8, visible_token(tokenizer.token_text(result.target)));
    statistics.push_back({statistic.page_key, std::move(label)});
  }
  return statistics;
}

/// The whole page as HTML. Data for the other view and statistics is embedded as JSON; a small script (the only
/// one the page's Content-Security-Policy lets run) switches between them.
inline std::string lens_page_html(const LensResult& result, const Tokenizer& tokenizer,
                                  const LensPageOptions& options = {}) {
  const auto data = lens_page_data(result, tokenizer, options);
  // Only views that hold rows are offered; the page opens on the delta lens when asked and present.
  const bool has_lens = !result.lens.cells.empty(), has_delta = !result.delta_lens.cells.empty();
  const bool open_delta = has_delta && (options.deltas() || !has_lens);
  const std::string json = show::script_json(data);

  std::random_device entropy;
  const std::string nonce = fmt::format("{:08x}{:08x}{:08x}", entropy(), entropy(), entropy());
  const std::string head = fmt::format(
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
      "script-src 'nonce-{}'\">"
      "<style>body {{ font-family: sans-serif; font-size: 13px; }} .lens-cell {{ min-width: 6em; max-width: 6em; "
      "overflow: hidden; "
      "white-space: nowrap; padding: 1px 4px; }} .lens-label {{ min-width: 4.5em; padding: 1px 4px; }} .controls label "
      "{{ margin-right: 1.5em; }} "
      ".legend {{ display: inline-block; width: 12em; height: 0.9em; vertical-align: middle; border: 1px solid #ccc; "
      "}}</style>",
      nonce);
  const auto& shown = open_delta ? result.delta_lens : result.lens;
  std::string view_options, stat_options;
  for (const auto& view : lens_page_views(result))
    view_options += "<option value=\"" + show::escape(view.key) + "\"" +
                    (view.key == (open_delta ? "delta_lens" : "lens") ? " selected" : "") + ">" +
                    show::escape(view.label) + "</option>";
  for (const auto& statistic : lens_page_statistics(result, tokenizer))
    stat_options += "<option value=\"" + statistic.key + "\">" + show::escape(statistic.label) + "</option>";
  const auto split = result.ids.end() - static_cast<std::ptrdiff_t>(result.generated);
  const std::string continuation =
      result.generated ? "</span> Generated: <span id=\"generated\">" +
                             show::escape(tokenizer.decode(std::vector<int64_t>(split, result.ids.end())))
                       : "";
  std::string body =
      "<h2>" + show::escape(options.title()) + "</h2>\n<p>Prompt: <span id=\"prompt\">" +
      show::escape(tokenizer.decode(std::vector<int64_t>(result.ids.begin(), split))) + continuation +
      "</span></p>\n<p class=\"controls\"><label>View <select id=\"view\">" + view_options +
      "</select></label><label>Text shows <select id=\"stat\">" + stat_options +
      "</select></label></p>\n<p>Background: magnitude <span class=\"legend\" style=\"background: linear-gradient(to "
      "right, white, " +
      detail::rgb(options.color()[0], options.color()[1], options.color()[2]) +
      ")\"></span> 0 &rarr; 1 &nbsp; Text: <span class=\"legend\" style=\"background: linear-gradient(to right, "
      "rgb(255, 255, 255), "
      "black)\"></span> 0 &rarr; 1 &nbsp; (hover a cell for its top-" +
      std::to_string(result.topk) + " tokens)</p>\n<div id=\"lens-grid\">" +
      show::html(lens_grid(shown, result.ids, tokenizer, result.target, options.color(), result.generated)) +
      "</div>\n<script type=\"application/json\" id=\"lens-data\">" + json + "</script>\n<script nonce=\"" + nonce +
      R"JS(">
(function () {
  var data = JSON.parse(document.getElementById('lens-data').textContent);
  var view = document.getElementById('view'), stat = document.getElementById('stat');
  var c = data.color;
  function channel(v) { return Math.max(0, Math.min(255, Math.floor(v))); }
  function render() {
    var v = data.views[view.value], s = v[stat.value];
    var cells = document.querySelectorAll('#lens-grid [data-r]');
    for (var i = 0; i < cells.length; ++i) {
      var el = cells[i], r = +el.getAttribute('data-r'), t = +el.getAttribute('data-t');
      var m = Math.max(0, Math.min(1, v.magnitude[r][t])), p = Math.max(0, Math.min(1, s[r][t]));
      el.textContent = v.text[r][t];
      el.title = v.title[r][t];
      el.style.background = 'rgb(' + channel(255 * (1 - m) + c[0] * m) + ', ' + channel(255 * (1 - m) + c[1] * m) + ', ' + channel(255 * (1 - m) + c[2] * m) + ')';
      var g = channel(255 * (1 - p));
      el.style.color = 'rgb(' + g + ', ' + g + ', ' + g + ')';
    }
  }
  view.addEventListener('change', render);
  stat.addEventListener('change', render);
  // A link may choose the view and statistic: lens.html#view=delta_lens&stat=kl
  var wanted = {};
  location.hash.slice(1).split('&').forEach(function (kv) { var p = kv.split('='); wanted[p[0]] = decodeURIComponent(p[1] || ''); });
  if (wanted.view && data.views[wanted.view]) view.value = wanted.view;
  if (wanted.stat && data.views[view.value][wanted.stat]) stat.value = wanted.stat;
  if (wanted.view || wanted.stat) render();
  document.body.setAttribute('data-lens-ready', view.value + ' ' + stat.value);
})();
</script>)JS";
  return show::page(options.title(), body, head);
}

/// Writes the page atomically (a temporary renamed into place, so a failed write leaves no partial file).
inline void save_lens_page(const std::filesystem::path& path, const LensResult& result, const Tokenizer& tokenizer,
                           const LensPageOptions& options = {}) {
  const auto text = lens_page_html(result, tokenizer, options);
  io::write_file_atomically(path, [&](std::ostream& out) { out << text; });
}

}  // namespace baukit
