/// @file show.hpp
/// @brief An HTML builder in the spirit of baukit's `show`: nested lists become rows and columns, `style(...)`
/// and `attr(...)` apply to the next element, `html(...)` returns a string and `save(...)` writes a
/// self-contained page. Every text and attribute value is escaped, so a token such as `<script>` renders as text.
///
/// @code
/// using namespace baukit::show;
/// Node page = {
///   {style({{"fontWeight", "bold"}}), "Layer", "Token 0"},
///   {"0", attr({{"title", "mag: 0.50"}}), "<script>"},   // shown as the text <script>
/// };
/// save("grid.html", page);
/// @endcode
#pragma once

#include <fmt/format.h>

#include <baukit/io/atomic_file.hpp>
#include <cctype>
#include <filesystem>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace baukit::show {

/// CSS properties for the next element; names may be camelCase (`fontWeight`) as in baukit, or kebab-case.
struct Style {
  std::vector<std::pair<std::string, std::string>> properties;  ///< (name, value) in order.
};

/// HTML attributes for the next element (`title`, `class`, `data-*`, ...).
struct Attr {
  std::vector<std::pair<std::string, std::string>> attributes;  ///< (name, value) in order.
};

/// Makes a `Style`: `style({{"background", "yellow"}})`.
inline Style style(std::initializer_list<std::pair<std::string, std::string>> properties) {
  return Style{{properties.begin(), properties.end()}};
}

/// Makes an `Attr`: `attr({{"title", "Token 0"}})`.
inline Attr attr(std::initializer_list<std::pair<std::string, std::string>> attributes) {
  return Attr{{attributes.begin(), attributes.end()}};
}

/// An element of a page: text, a style or attributes for the next element, or a list of elements.
class Node {
 public:
  /// A list of nodes.
  using List = std::vector<Node>;

  Node() : value_(List{}) {}
  /// Text (escaped when rendered).
  Node(std::string text) : value_(std::move(text)) {}
  /// Text (escaped when rendered).
  Node(const char* text) : value_(std::string(text)) {}
  /// A style for the next element.
  Node(Style s) : value_(std::move(s)) {}
  /// Attributes for the next element.
  Node(Attr a) : value_(std::move(a)) {}
  /// A list: rows at even nesting depths are stacked vertically, at odd depths laid out horizontally.
  Node(List items) : value_(std::move(items)) {}
  /// A list written inline: `{"a", {"b", "c"}}`.
  Node(std::initializer_list<Node> items) : value_(List(items)) {}

  /// The node's content.
  [[nodiscard]] const std::variant<std::string, Style, Attr, List>& value() const noexcept { return value_; }

 private:
  std::variant<std::string, Style, Attr, List> value_;
};

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and quoted attribute values.
inline std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/// `value` as JSON safe to place inside a `<script>` element: ASCII only, and no `<` (inside `<script>` only `<`
/// could end the element, and JSON has it only inside strings, where `\u003c` means the same). Throws
/// `nlohmann::json::type_error` if a string in `value` is not valid UTF-8.
inline std::string script_json(const nlohmann::json& value) {
  std::string json = value.dump(-1, ' ', true);
  for (std::size_t at = json.find('<'); at != std::string::npos; at = json.find('<', at))
    json.replace(at, 1, "\\u003c");
  return json;
}

namespace detail {

/// `text` in ASCII lower case (HTML attribute names are case-insensitive).
inline std::string lower(std::string_view text) {
  std::string out;
  for (const char c : text) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// Whether an attribute would run script: `srcdoc`, or a URL attribute whose scheme is `javascript:`, `vbscript:` or
/// `data:`. Attribute names are compared case-insensitively, as HTML does.
inline bool runs_as_script(const std::string& name, std::string_view value) {
  static const std::set<std::string> url_attributes = {"href",       "src",    "action", "formaction", "xlink:href",
                                                       "background", "poster", "cite",   "data",       "codebase"};
  const auto attribute = lower(name);
  if (attribute == "srcdoc") return true;  // a whole document, scripts included
  if (!url_attributes.count(attribute)) return false;
  // Browsers ignore ASCII whitespace and control characters anywhere in a scheme ("java\tscript:").
  std::string scheme;
  for (const char c : value) {
    if (c == ':') break;
    if (static_cast<unsigned char>(c) > 0x20) scheme += c;
  }
  scheme = lower(scheme);
  return value.find(':') != std::string_view::npos &&
         (scheme == "javascript" || scheme == "vbscript" || scheme == "data");
}

inline std::string kebab_case(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (std::isupper(static_cast<unsigned char>(c))) {
      out += '-';
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

inline void check_name(const std::string& name, const char* what) {
  static const std::regex allowed("[A-Za-z][A-Za-z0-9_-]*");
  if (!std::regex_match(name, allowed))
    throw std::invalid_argument(fmt::format("show: '{}' is not a valid {} name", name, what));
  if (std::string_view(what) == "attribute" && name.size() > 2 && (name[0] == 'o' || name[0] == 'O') &&
      (name[1] == 'n' || name[1] == 'N'))
    throw std::invalid_argument(fmt::format("show: event-handler attribute '{}' is not allowed", name));
}

/// Renders pending styles and attributes as one attribute string.
inline std::string attributes(const std::vector<Style>& styles, const std::vector<Attr>& attrs,
                              const std::string& layout) {
  std::string css = layout;
  for (const auto& s : styles)
    for (const auto& [name, value] : s.properties) {
      const auto property = kebab_case(name);
      check_name(property, "CSS property");
      if (value.find_first_of(";{}\\<>") != std::string::npos)
        throw std::invalid_argument(
            fmt::format("show: the value of CSS property '{}' contains one of ; {{ }} \\ < >", property));
      css += property + ": " + value + "; ";
    }
  std::string out;
  if (!css.empty()) out += " style=\"" + escape(css) + "\"";
  for (const auto& a : attrs)
    for (const auto& [name, value] : a.attributes) {
      check_name(name, "attribute");
      if (detail::lower(name) == "style")
        throw std::invalid_argument("show: give CSS through style(...), not attr(style=...)");
      if (detail::runs_as_script(name, value))
        throw std::invalid_argument(fmt::format("show: attribute '{}' would run '{}' as script", name, value));
      out += " " + name + "=\"" + escape(value) + "\"";
    }
  return out;
}

inline void render(const Node& node, int depth, const std::vector<Style>& styles, const std::vector<Attr>& attrs,
                   std::string& out) {
  if (const auto* text = std::get_if<std::string>(&node.value())) {
    const auto extra = attributes(styles, attrs, "");
    out += extra.empty() ? escape(*text) : "<div" + extra + ">" + escape(*text) + "</div>";
    return;
  }
  const auto& list = std::get<Node::List>(node.value());
  out +=
      "<div" +
      attributes(styles, attrs,
                 depth % 2 == 0 ? "display: flex; flex-direction: column; " : "display: flex; flex-direction: row; ") +
      ">";
  std::vector<Style> pending_styles;
  std::vector<Attr> pending_attrs;
  for (const auto& item : list) {
    if (const auto* s = std::get_if<Style>(&item.value())) {
      pending_styles.push_back(*s);
    } else if (const auto* a = std::get_if<Attr>(&item.value())) {
      pending_attrs.push_back(*a);
    } else {
      render(item, depth + 1, pending_styles, pending_attrs, out);
      pending_styles.clear();
      pending_attrs.clear();
    }
  }
  out += "</div>";
}

}  // namespace detail

/// The HTML of `node` (a fragment: a `div` for a list, escaped text for text).
inline std::string html(const Node& node) {
  std::string out;
  detail::render(node, 0, {}, {}, out);
  return out;
}

/// A whole page: `body` (already HTML) with a title, a UTF-8 charset, and optional extra `head` content.
inline std::string page(const std::string& title, const std::string& body, const std::string& head = "") {
  return "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title>" + head +
         "</head>\n<body>\n" + body + "\n</body></html>\n";
}

/// Writes `node` as a self-contained page, atomically (a temporary renamed into place).
inline void save(const std::filesystem::path& path, const Node& node, const std::string& title = "baukit") {
  const auto text = page(title, html(node));
  io::write_file_atomically(path, [&](std::ostream& out) { out << text; });
}

}  // namespace baukit::show
