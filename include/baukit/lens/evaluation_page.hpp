/// @file lens/evaluation_page.hpp
/// @brief The page of lens evaluations (`to_json(LensEvaluation)`): one chart per measure, a curve per view and
/// run over the layers with its 95% band, several runs overlaid (`baukit-lens eval --compare`). Inline SVG drawn
/// here, no script: a point's `<title>` is its hover. A single file, offline, under the lens page's
/// Content-Security-Policy.
///
/// @code
/// const auto page = baukit::lens_evaluation_page_html({baukit::to_json(evaluation, "default model")});
/// @endcode
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <baukit/show.hpp>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// Checks that `run` is a lens evaluation as `to_json(LensEvaluation)` writes it, every view's measures one value
/// (or null) per layer; the error names `source` (a file) and the field.
inline void check_lens_evaluation_json(const nlohmann::json& run, const std::string& source) {
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(fmt::format("{}: not a lens evaluation: {}", source, why));
  };
  if (!run.is_object() || run.value("format", "") != "baukit.lens_evaluation/1")
    fail("no \"format\": \"baukit.lens_evaluation/1\"");
  if (!run.contains("layers") || !run["layers"].is_number_integer() || run["layers"].get<int64_t>() < 1 ||
      run["layers"].get<int64_t>() > 100000)
    fail("\"layers\" is not a number of layers");
  if (!run.contains("measures") || !run["measures"].is_array()) fail("no \"measures\" list");
  for (const auto& measure : run["measures"])
    if (!measure.is_object() || !measure.contains("key") || !measure["key"].is_string() || !measure.contains("label") ||
        !measure["label"].is_string())
      fail("a measure without a \"key\" and a \"label\"");
  if (!run.contains("views") || !run["views"].is_object() || run["views"].empty()) fail("no \"views\"");
  const auto layers = run["layers"].get<std::size_t>();
  for (const auto& [name, view] : run["views"].items()) {
    if (!view.is_object() || !view.contains("label") || !view["label"].is_string())
      fail(fmt::format("view '{}' has no \"label\"", name));
    for (const auto& measure : run["measures"]) {
      const auto key = measure["key"].get<std::string>();
      if (!view.contains(key)) fail(fmt::format("view '{}' has no '{}'", name, key));
      for (const char* part : {"mean", "ci95"}) {
        const auto& values = view[key].is_object() && view[key].contains(part) ? view[key][part] : nlohmann::json();
        if (!values.is_array() || values.size() != layers)
          fail(fmt::format("'{}' of view '{}' has no \"{}\" of {} values", key, name, part, layers));
        for (const auto& x : values)
          if (!x.is_number() && !x.is_null()) fail(fmt::format("'{}' of view '{}' holds a non-number", key, name));
      }
    }
  }
}

namespace detail {

/// "1.5", "0.25", "1e+04": a tick's text.
inline std::string tick_text(double x) {
  return fmt::format("{:.4g}", x);
}

/// One curve of a chart: its label, colour and dash pattern, and per layer the mean and the interval's half-width
/// (NaN where missing).
struct EvalSeries {
  std::string label;         ///< The hover's name of the curve.
  std::string colour;        ///< Its view's colour.
  std::string dash;          ///< Its run's dash pattern ("" solid).
  std::vector<double> mean;  ///< Per layer.
  std::vector<double> half;  ///< Per layer.
};

/// The SVG of one measure's chart: `series` over layers 0 .. layers - 1, each a curve, its band and a point per
/// layer whose title is its hover.
inline std::string evaluation_chart(const std::string& title, bool log_scale, int64_t layers,
                                    const std::vector<EvalSeries>& series) {
  constexpr double width = 440, height = 260, left = 56, right = 12, top = 26, bottom = 36;
  double low = std::numeric_limits<double>::infinity(), high = -low;
  const auto value = [&](double x) { return log_scale ? std::log10(std::max(x, 1e-12)) : x; };
  for (const auto& s : series)
    for (std::size_t l = 0; l < s.mean.size(); ++l)
      if (std::isfinite(s.mean[l])) {
        const double h = std::isfinite(s.half[l]) ? s.half[l] : 0;
        low = std::min(low, value(log_scale ? std::max(s.mean[l] - h, s.mean[l] / 2) : s.mean[l] - h));
        high = std::max(high, value(s.mean[l] + h));
      }
  if (!std::isfinite(low)) low = 0, high = 1;
  if (!log_scale) low = 0;  // every linear measure is a probability or in nats, never negative
  if (high - low < 1e-9) high = low + 1;
  const auto x_of = [&](double layer) {
    return left + (layers > 1 ? layer / static_cast<double>(layers - 1) : 0.5) * (width - left - right);
  };
  const auto y_of = [&](double x) { return top + (high - value(x)) / (high - low) * (height - top - bottom); };
  std::string svg = fmt::format(
      "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "role=\"img\"><title>{}</title><text x=\"{}\" y=\"16\" class=\"title\">{}</text>",
      width, height, width, height, show::escape(title), left, show::escape(title));
  // Axes and ticks: layers below, five values (or powers of ten) at the left.
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" class=\"axis\"/>", left, height - bottom,
                     width - right);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" class=\"axis\"/>", left, top, height - bottom);
  const int64_t layer_step = std::max<int64_t>(1, (layers + 11) / 12);
  for (int64_t l = 0; l < layers; l += layer_step)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" class=\"xtick\">{}</text>", x_of(static_cast<double>(l)),
                       height - bottom + 14, l);
  svg +=
      fmt::format("<text x=\"{:.1f}\" y=\"{}\" class=\"xtick\">layer</text>", (left + width - right) / 2, height - 4);
  std::vector<double> ticks;  // round values: 1, 2 or 5 times a power of ten
  if (log_scale) {
    const bool dense = high - low < 2;
    for (double p = std::floor(low); p <= std::ceil(high); ++p)
      for (const double m : {1.0, 2.0, 5.0})
        if (m == 1.0 || dense) ticks.push_back(m * std::pow(10.0, p));
  } else {
    const double rough = (high - low) / 4, power = std::pow(10.0, std::floor(std::log10(rough)));
    const double step = rough <= power       ? power
                        : rough <= 2 * power ? 2 * power
                        : rough <= 5 * power ? 5 * power
                                             : 10 * power;
    for (double t = std::ceil(low / step) * step; t <= high + step * 1e-9; t += step)
      ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  for (const double t : ticks) {
    if (value(t) < low - 1e-9 || value(t) > high + 1e-9) continue;
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" class=\"grid\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" class=\"ytick\">{5}</text>",
        left, y_of(t), width - right, left - 4, y_of(t) + 4, tick_text(t));
  }
  for (const auto& s : series) {
    std::string line, band_top, band_bottom, points;
    for (std::size_t l = 0; l < s.mean.size(); ++l) {
      if (!std::isfinite(s.mean[l])) continue;
      const double x = x_of(static_cast<double>(l)), h = std::isfinite(s.half[l]) ? s.half[l] : 0;
      const double lower = log_scale ? std::max(s.mean[l] - h, s.mean[l] / 2) : s.mean[l] - h;
      line += fmt::format("{}{:.1f},{:.1f}", line.empty() ? "" : " ", x, y_of(s.mean[l]));
      band_top += fmt::format("{:.1f},{:.1f} ", x, y_of(s.mean[l] + h));
      band_bottom = fmt::format("{:.1f},{:.1f} ", x, y_of(lower)) + band_bottom;
      points += fmt::format(
          "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"><title>{}, layer {}: {:.4g}{}</title></circle>", x,
          y_of(s.mean[l]), s.colour, show::escape(s.label), l, s.mean[l],
          std::isfinite(s.half[l]) ? fmt::format(" ± {:.2g} (95%)", s.half[l]) : std::string());
    }
    if (line.empty()) continue;
    svg += fmt::format("<polygon class=\"band\" points=\"{}{}\" fill=\"{}\"/>", band_top, band_bottom, s.colour);
    svg += fmt::format("<polyline class=\"curve\" points=\"{}\" stroke=\"{}\" stroke-dasharray=\"{}\"/>", line,
                       s.colour, s.dash.empty() ? "none" : s.dash);
    svg += points;
  }
  return svg + "</svg>";
}

}  // namespace detail

/// A self-contained page of `runs` (each checked by `check_lens_evaluation_json`, `source` "run N"): per measure a
/// chart; colours tell views apart, dashes runs.
inline std::string lens_evaluation_page_html(const std::vector<nlohmann::json>& runs,
                                             const std::string& title = "Lens evaluation") {
  if (runs.empty()) throw std::invalid_argument("lens evaluation page: no runs");
  for (std::size_t r = 0; r < runs.size(); ++r) check_lens_evaluation_json(runs[r], fmt::format("run {}", r + 1));
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};
  static const char* dashes[] = {"", "7 4", "2 3", "9 3 2 3"};
  std::vector<std::string> view_names;  // in order of first appearance: the colour of a view is one on every chart
  int64_t layers = 1;
  for (const auto& run : runs) {
    layers = std::max(layers, run["layers"].get<int64_t>());
    for (const auto& [name, view] : run["views"].items())
      if (std::find(view_names.begin(), view_names.end(), name) == view_names.end()) view_names.push_back(name);
  }
  // The logit lens first, then the delta lens, then the learned lenses by name (JSON objects keep no order).
  const auto rank_of = [](const std::string& name) { return name == "lens" ? 0 : name == "delta_lens" ? 1 : 2; };
  std::stable_sort(view_names.begin(), view_names.end(), [&](const std::string& a, const std::string& b) {
    return rank_of(a) != rank_of(b) ? rank_of(a) < rank_of(b) : a < b;
  });
  const auto colour_of = [&](const std::string& name) {
    return colours[static_cast<std::size_t>(std::find(view_names.begin(), view_names.end(), name) -
                                            view_names.begin()) %
                   7];
  };
  const auto run_label = [&](std::size_t r) {
    const auto label = runs[r].value("label", std::string());
    return label.empty() ? fmt::format("run {}", r + 1) : label;
  };
  std::string legend, charts;
  for (std::size_t r = 0; r < runs.size(); ++r)
    for (const auto& name : view_names) {
      if (!runs[r]["views"].contains(name)) continue;
      const auto& view = runs[r]["views"][name];
      legend += fmt::format(
          "<span class=\"key\"><svg width=\"28\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"28\" y2=\"5\" "
          "stroke=\"{}\" stroke-width=\"2.5\" stroke-dasharray=\"{}\"/></svg> {}{}</span>",
          colour_of(name), dashes[r % 4][0] ? dashes[r % 4] : "none", show::escape(view["label"].get<std::string>()),
          runs.size() > 1 ? " — " + show::escape(run_label(r)) : std::string());
    }
  // The measures of the first run, in its order (every run has them: checked).
  for (const auto& measure : runs[0]["measures"]) {
    const auto key = measure["key"].get<std::string>();
    std::vector<detail::EvalSeries> series;
    for (std::size_t r = 0; r < runs.size(); ++r)
      for (const auto& name : view_names) {
        if (!runs[r]["views"].contains(name) || !runs[r]["views"][name].contains(key)) continue;
        const auto& view = runs[r]["views"][name];
        detail::EvalSeries s{view["label"].get<std::string>() + (runs.size() > 1 ? " — " + run_label(r) : ""),
                             colour_of(name),
                             dashes[r % 4],
                             {},
                             {}};
        for (const char* part : {"mean", "ci95"})
          for (const auto& x : view[key][part])
            (part[0] == 'm' ? s.mean : s.half).push_back(x.is_number() ? x.get<double>() : std::nan(""));
        series.push_back(std::move(s));
      }
    charts += detail::evaluation_chart(measure["label"].get<std::string>(), measure.value("log_scale", false), layers,
                                       series);
  }
  std::string about;
  for (std::size_t r = 0; r < runs.size(); ++r)
    about += fmt::format("<li>{}: {} windows of {} tokens ({} tokens scored){}</li>", show::escape(run_label(r)),
                         runs[r].value("windows", 0), runs[r].value("window", 0), runs[r].value("tokens", 0),
                         runs[r].contains("corpus") && runs[r]["corpus"].is_string()
                             ? ", corpus " + show::escape(runs[r]["corpus"].get<std::string>())
                             : std::string());
  return fmt::format(
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title>"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
      "<style>body {{ font-family: sans-serif; font-size: 13px; }} .charts {{ display: flex; flex-wrap: wrap; gap: "
      "8px; }} .chart .axis {{ stroke: #444; }} .chart .grid {{ stroke: #e4e4e4; }} .chart .title {{ font-weight: "
      "bold; }} .chart .xtick {{ text-anchor: middle; fill: #444; font-size: 11px; }} .chart .ytick {{ text-anchor: "
      "end; fill: #444; font-size: 11px; }} .chart .band {{ opacity: 0.18; }} .chart .curve {{ fill: none; "
      "stroke-width: 2; }} .key {{ margin-right: 1.5em; white-space: nowrap; }}</style></head><body><h2>{0}</h2>"
      "<p class=\"legend\">{1}</p><div class=\"charts\">{2}</div><p>Means over the scored tokens (every position "
      "of a window but its last); bands: 95% confidence intervals from the spread of the window means.</p>"
      "<ul>{3}</ul></body></html>\n",
      show::escape(title), legend, charts, about);
}

}  // namespace baukit
