// Fuzzes the HTML builder's escaping. The input, split at NUL bytes, gives a text, an attribute name and value,
// a CSS value and a JSON string: whatever they hold, the page's markup (its '<' and '"' characters) is exactly that
// of harmless values, or the builder refuses them; JSON for a <script> element holds no '<' and reads back equal.
#include <baukit/show.hpp>
#include <baukit/tokenizer.hpp>

#include "fuzz_common.hpp"

namespace {

std::string render(const std::string& text, const std::string& name, const std::string& value, const std::string& css) {
  using namespace baukit::show;
  return html(Node::List{style({{"color", css}}), attr({{name, value}}), text, Node::List{text}});
}

std::size_t markup(const std::string& html) {
  return static_cast<std::size_t>(std::count(html.begin(), html.end(), '<') +
                                  std::count(html.begin(), html.end(), '"'));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> parts(5);
  std::size_t part = 0;
  for (const char c : fuzz::text(data, size)) {
    if (c == '\0' && part + 1 < parts.size())
      ++part;
    else
      parts[part] += c;
  }
  try {
    const auto page = render(parts[0], parts[1], parts[2], parts[3]);
    if (markup(page) != markup(render("x", parts[1], "x", "red"))) __builtin_trap();
    if (page.find("=\"" + baukit::show::escape(parts[2]) + "\"") == std::string::npos) __builtin_trap();
  } catch (const std::invalid_argument&) {  // a name outside [A-Za-z][A-Za-z0-9_-]*, a handler, a script URL, CSS
  }
  try {
    const auto json = baukit::show::script_json(nlohmann::json{{"token", parts[4]}});
    if (json.find('<') != std::string::npos || nlohmann::json::parse(json)["token"] != parts[4]) __builtin_trap();
  } catch (const nlohmann::json::type_error&) {  // not valid UTF-8: refused by the JSON writer
    if (!baukit::utf8::first_invalid(parts[4])) __builtin_trap();
  }
  return 0;
}
