/// @file modules.hpp
/// @brief Module utilities, as in baukit's `nethook`: find modules and parameters by name, list names by regex,
/// freeze parameters, replace modules, cut a Sequential, and make a Sequential's elements traceable.
#pragma once

#include <fmt/format.h>

#include <baukit/hook.hpp>
#include <memory>
#include <range/v3/algorithm/find_if.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/transform.hpp>
#include <regex>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

namespace baukit {

namespace detail {

/// Lists up to a few of `model`'s module names, for error messages.
inline std::string some_module_names(torch::nn::Module& model, std::size_t most = 8) {
  std::string names;
  std::size_t count = 0;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (count++ == most) return names + ", ...";
    names += (names.empty() ? "'" : ", '") + item.key() + "'";
  }
  return names.empty() ? "(none)" : names;
}

}  // namespace detail

/// The submodule of `model` named `name` (dotted, as `named_modules()` gives). Throws naming the module and
/// listing some names that exist.
inline std::shared_ptr<torch::nn::Module> get_module(torch::nn::Module& model, const std::string& name) {
  auto modules = model.named_modules("", /*include_self=*/false);
  if (const auto* found = modules.find(name)) return *found;
  throw std::invalid_argument(fmt::format("baukit: {} has no module named '{}'; its modules include {}", model.name(),
                                          name, detail::some_module_names(model)));
}

/// The parameter of `model` named `name` (dotted, as `named_parameters()` gives).
inline torch::Tensor get_parameter(torch::nn::Module& model, const std::string& name) {
  auto parameters = model.named_parameters(/*recurse=*/true);
  if (const auto* found = parameters.find(name)) return *found;
  throw std::invalid_argument(fmt::format("baukit: {} has no parameter named '{}'", model.name(), name));
}

/// The names of `model`'s modules that match `pattern` as a whole, in module order.
///
/// @code
/// auto blocks = baukit::module_names(*model, std::regex(R"(^transformer\.h\.\d+$)"));
/// @endcode
inline std::vector<std::string> module_names(torch::nn::Module& model, const std::regex& pattern) {
  const auto modules = model.named_modules("", /*include_self=*/false);
  return modules.items()  //
         | ranges::views::transform([](const auto& item) { return item.key(); }) |
         ranges::views::filter([&](const std::string& name) { return std::regex_match(name, pattern); }) |
         ranges::to<std::vector>();
}

/// Sets `requires_grad` on every parameter of every model given.
///
/// @code
/// baukit::set_requires_grad(false, *model);
/// @endcode
template <class... Models>
void set_requires_grad(bool requires_grad, Models&... models) {
  auto set = [requires_grad](torch::nn::Module& model) {
    for (auto& parameter : model.parameters(/*recurse=*/true)) parameter.requires_grad_(requires_grad);
  };
  (set(models), ...);
}

namespace detail {

/// Splits "a.b.c" into ("a.b", "c").
inline std::pair<std::string, std::string> split_parent(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

/// Rebuilds `seq` in place (every holder of it sees the change) with `element(name, module)` for each element.
template <class Element>
void rebuild_sequential(torch::nn::SequentialImpl& seq, Element element) {
  torch::OrderedDict<std::string, torch::nn::AnyModule> items;
  const auto children = seq.named_children();
  auto any = seq.begin();
  for (const auto& child : children) items.insert(child.key(), element(child.key(), *any++));
  seq = torch::nn::SequentialImpl(std::move(items));
}

// Whether `any` holds exactly an `Impl`; if so and `apply`, `wrapped` becomes its traced wrapper (built only then).
template <class Impl>
bool wrap_if(const torch::nn::AnyModule& any, torch::nn::AnyModule& wrapped, bool apply) {
  auto module = any.ptr();
  if (typeid(*module) != typeid(Impl)) return false;
  if (apply) wrapped = torch::nn::AnyModule(traced(std::dynamic_pointer_cast<Impl>(module)));
  return true;
}

}  // namespace detail

/// Replaces the element `name` of a `torch::nn::Sequential` inside `model` (or of `model` itself, for a
/// top-level name) with `replacement`, in place: every holder of that Sequential sees the new element.
///
/// libtorch modules call their children through typed member variables, which no outside code can reassign;
/// so only elements of a Sequential can be replaced by a module of another type. Throws otherwise.
template <class ModuleType>
void replace_module(torch::nn::Module& model, const std::string& name, std::shared_ptr<ModuleType> replacement) {
  auto [parent_name, leaf] = detail::split_parent(name);
  torch::nn::Module* parent = parent_name.empty() ? &model : get_module(model, parent_name).get();
  auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(parent);
  if (!seq)
    throw std::invalid_argument(fmt::format(
        "baukit: cannot replace '{}': its parent '{}' is a {}, not a torch::nn::Sequential; libtorch modules call "
        "their children through typed members, so only a Sequential's elements can be replaced",
        name, parent_name, parent->name()));
  if (!seq->named_children().contains(leaf))
    throw std::invalid_argument(fmt::format("baukit: the Sequential '{}' has no element '{}'", parent_name, leaf));
  detail::rebuild_sequential(*seq, [&](const std::string& key, const torch::nn::AnyModule& any) {
    return key == leaf ? torch::nn::AnyModule(replacement) : any;
  });
}

namespace detail {

/// `make_traceable`'s work on `seq` (named `path` in the outermost one): with `apply` false only the check, which
/// throws naming the first element it cannot make traceable and builds no wrapper; with `apply` true the conversion.
template <class... ExtraImpls>
void make_traceable_elements(torch::nn::SequentialImpl& seq, bool apply, const std::string& path) {
  std::vector<torch::nn::AnyModule> wrapped(seq.size());
  std::size_t index = 0;
  auto element = seq.begin();
  for (const auto& child : seq.named_children()) {
    const torch::nn::AnyModule& any = *element++;
    auto& out = wrapped[index++];
    namespace nn = torch::nn;
    const auto name = path.empty() ? child.key() : path + "." + child.key();
    if (auto inner = std::dynamic_pointer_cast<nn::SequentialImpl>(any.ptr())) {  // a Sequential inside: its
      make_traceable_elements<ExtraImpls...>(*inner, apply, name);                // elements, then itself
      if (apply) out = dynamic_cast<Hookable*>(inner.get()) ? any : nn::AnyModule(traced(inner));
      continue;
    }
    if (dynamic_cast<Hookable*>(any.ptr().get())) {
      out = any;
      continue;
    }
    const bool known = wrap_if<nn::LinearImpl>(any, out, apply) || wrap_if<nn::LayerNormImpl>(any, out, apply) ||
                       wrap_if<nn::EmbeddingImpl>(any, out, apply) || wrap_if<nn::DropoutImpl>(any, out, apply) ||
                       wrap_if<nn::SoftmaxImpl>(any, out, apply) || wrap_if<nn::LogSoftmaxImpl>(any, out, apply) ||
                       wrap_if<nn::GELUImpl>(any, out, apply) || wrap_if<nn::ReLUImpl>(any, out, apply) ||
                       wrap_if<nn::TanhImpl>(any, out, apply) || wrap_if<nn::SigmoidImpl>(any, out, apply) ||
                       wrap_if<nn::IdentityImpl>(any, out, apply) || (wrap_if<ExtraImpls>(any, out, apply) || ...);
    if (!known)
      throw std::invalid_argument(
          fmt::format("baukit: cannot make element '{}' ({}) traceable: name its Impl type as a template argument, "
                      "make_traceable<{}>(seq)",
                      name, any.ptr()->name(), any.ptr()->name()));
  }
  if (!apply) return;
  index = 0;
  rebuild_sequential(seq, [&](const std::string&, const torch::nn::AnyModule&) { return wrapped[index++]; });
}

}  // namespace detail

/// Makes every element of `seq` traceable in place, wrapping known libtorch modules in `Traced<...>` (their
/// parameters are shared, not copied), and the elements of a `TracedSequential` inside it (libtorch's own
/// `Sequential` cannot be an element: its `forward` is a template). Elements already traceable are kept. Other module
/// types can be listed as template arguments: `make_traceable<MyBlockImpl>(seq)`. Throws, changing nothing, on an
/// element of another type. To trace the whole `seq` too, hold it as `baukit::TracedSequential` (`baukit::traced(seq)`
/// shares its elements).
template <class... ExtraImpls>
void make_traceable(torch::nn::Sequential& seq) {
  detail::make_traceable_elements<ExtraImpls...>(*seq, false, "");  // first only the check: nothing changes on error
  detail::make_traceable_elements<ExtraImpls...>(*seq, true, "");
}

/// A new Sequential holding the elements `first` up to, but not including, `last` (by element name) of `seq`,
/// sharing the modules. An empty `first` starts at the beginning; an empty `last` runs to the end.
inline torch::nn::Sequential subsequence(const torch::nn::Sequential& seq, const std::string& first = "",
                                         const std::string& last = "") {
  const auto children = seq->named_children();
  auto position = [&](const std::string& name, std::size_t fallback) {
    if (name.empty()) return fallback;
    for (std::size_t i = 0; i < children.size(); ++i)
      if (children[i].key() == name) return i;
    throw std::invalid_argument(fmt::format("baukit: subsequence: the Sequential has no element '{}'", name));
  };
  const std::size_t begin = position(first, 0), end = position(last, children.size());
  torch::OrderedDict<std::string, torch::nn::AnyModule> items;
  for (std::size_t i = begin; i < end; ++i)
    items.insert(children[i].key(), *(seq->begin() + static_cast<std::ptrdiff_t>(i)));
  return torch::nn::Sequential(std::move(items));
}

}  // namespace baukit
