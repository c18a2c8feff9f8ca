/// @file trace.hpp
/// @brief `Trace` and `TraceDict`: RAII objects that retain or edit what named modules compute, as baukit's
/// `nethook` does in Python.
///
/// A trace attaches to a module (`torch::nn::Module&`), a libtorch holder, a `models::CausalLM` or a
/// `std::shared_ptr` to one (anything with a `module()` member), by the dotted names `named_modules()` gives.
///
/// @code
/// auto model = baukit::models::from_pretrained("gpt2-xl");   // std::shared_ptr<baukit::models::CausalLM>
/// {
///   baukit::TraceDict tr(model, std::regex(R"(transformer\.h\.\d+)"));
///   model->forward(input_ids, {}, nullptr);
///   torch::Tensor h5 = tr["transformer.h.5"].output();   // [batch, tokens, n_embd]
/// }   // every hook is detached here, also when forward threw
/// @endcode
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11

#include <baukit/hook.hpp>
#include <baukit/modules.hpp>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace baukit {

/// Thrown by a trace with `stop(true)` after its layer ran, to end a forward early; see `run_until_stop`.
class StopForward : public std::exception {
 public:
  /// A fixed description.
  [[nodiscard]] const char* what() const noexcept override { return "baukit::StopForward"; }
};

/// Runs `forward` and swallows exactly `StopForward`; returns true when the forward was stopped.
///
/// @code
/// baukit::Trace tr(*model, "transformer.h.2", baukit::TraceOptions().stop(true));
/// baukit::run_until_stop([&] { model->forward(ids, {}, nullptr); });   // layers after h.2 do not run
/// @endcode
template <class Forward>
bool run_until_stop(Forward&& forward) {
  try {
    std::forward<Forward>(forward)();
    return false;
  } catch (const StopForward&) {
    return true;
  }
}

/// An output editor, normalised: (output, layer name, inputs) -> new output.
using EditOutput =
    std::function<torch::IValue(torch::IValue output, const std::string& layer, const torch::IValue& inputs)>;

/// An input editor, normalised: (the forward's arguments as a tuple, layer name) -> the arguments to compute with.
using EditInput = std::function<torch::IValue(torch::IValue inputs, const std::string& layer)>;

namespace detail {

/// Copies every tensor inside `value` (tensors, tuples, lists, dicts; other values pass through).
inline torch::IValue map_tensors(const torch::IValue& value,
                                 const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  if (value.isTensor()) return fn(value.toTensor());
  if (value.isTuple()) {
    std::vector<torch::IValue> items;
    for (const auto& item : value.toTupleRef().elements()) items.push_back(map_tensors(item, fn));
    return torch::ivalue::Tuple::create(std::move(items));
  }
  if (value.isTensorList()) {
    c10::List<torch::Tensor> items;
    for (const torch::Tensor& item : value.toTensorList()) items.push_back(fn(item));
    return items;
  }
  if (value.isList()) {
    c10::impl::GenericList items(c10::AnyType::get());
    for (const auto& item : value.toListRef()) items.push_back(map_tensors(item, fn));
    return items;
  }
  return value;
}

/// The first tensor in `value`, searching tuples and lists depth-first; undefined when there is none.
inline torch::Tensor first_tensor(const torch::IValue& value) {
  if (value.isTensor()) return value.toTensor();
  if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements())
      if (auto t = first_tensor(item); t.defined()) return t;
  }
  if (value.isList()) {
    for (const auto& item : value.toListRef())
      if (auto t = first_tensor(item); t.defined()) return t;
  }
  return {};
}

/// Replaces the first tensor in `value` (as `first_tensor` finds it) with `replacement`.
inline torch::IValue replace_first_tensor(const torch::IValue& value, const torch::Tensor& replacement) {
  bool done = false;
  return map_tensors(value, [&](const torch::Tensor& t) {
    if (done) return t;
    done = true;
    return replacement;
  });
}

/// Calls `edit` with the output as IValue or Tensor, and as many of (layer, inputs) as it accepts.
template <class Edit, class Output>
auto invoke_edit(Edit& edit, Output&& output, const std::string& layer, const torch::IValue& inputs) {
  if constexpr (std::is_invocable_v<Edit&, Output, const std::string&, const torch::IValue&>)
    return edit(std::forward<Output>(output), layer, inputs);
  else if constexpr (std::is_invocable_v<Edit&, Output, const std::string&>)
    return edit(std::forward<Output>(output), layer);
  else
    return edit(std::forward<Output>(output));
}

template <class Edit, class Output>
constexpr bool accepts_output =
    std::is_invocable_v<Edit&, Output, const std::string&, const torch::IValue&> ||
    std::is_invocable_v<Edit&, Output, const std::string&> || std::is_invocable_v<Edit&, Output>;

/// `edited` must have `original`'s dtype, device and shape: the rest of the forward is written for them, and
/// would otherwise fail later with an error that names no layer. `editor` is "edit_output" or "edit_input".
inline void check_edited(const torch::Tensor& original, const torch::Tensor& edited, const std::string& layer,
                         const char* editor) {
  if (!edited.defined())
    throw std::invalid_argument(fmt::format("baukit: {} of layer '{}' returned an undefined tensor", editor, layer));
  if (edited.scalar_type() != original.scalar_type() || edited.device() != original.device() ||
      edited.sizes() != original.sizes())
    throw std::invalid_argument(fmt::format(
        "baukit: {} of layer '{}' returned a {} tensor of shape [{}] on {}, but the layer {} {} of shape [{}] on {}; "
        "return the same dtype, device and shape (e.g. `.to(x.dtype())`)",
        editor, layer, c10::toString(edited.scalar_type()), fmt::join(edited.sizes(), ", "), edited.device().str(),
        std::string_view(editor) == "edit_input" ? "receives" : "gives", c10::toString(original.scalar_type()),
        fmt::join(original.sizes(), ", "), original.device().str()));
}

/// Runs an editor, rethrowing libtorch's errors (which name no layer) with the editor and layer and the first line
/// of libtorch's message.
template <class Run>
auto run_editor(const char* editor, const std::string& layer, Run&& run) {
  try {
    return std::forward<Run>(run)();
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    throw std::runtime_error(
        fmt::format("baukit: {} of layer '{}' failed: {}", editor, layer, what.substr(0, what.find('\n'))));
  }
}

/// Turns any supported editor into an `EditOutput`.
template <class Edit>
EditOutput make_edit_output(Edit edit) {
  if constexpr (accepts_output<Edit, torch::IValue>) {
    return
        [edit = std::move(edit)](torch::IValue output, const std::string& layer, const torch::IValue& inputs) mutable {
          if constexpr (std::is_void_v<decltype(invoke_edit(edit, output, layer, inputs))>) {
            invoke_edit(edit, output, layer, inputs);
            return output;
          } else {
            return torch::IValue(invoke_edit(edit, std::move(output), layer, inputs));
          }
        };
  } else {
    static_assert(accepts_output<Edit, torch::Tensor&>,
                  "edit_output takes a callable (output), (output, layer) or (output, layer, inputs), where output "
                  "is torch::Tensor or torch::IValue");
    return
        [edit = std::move(edit)](torch::IValue output, const std::string& layer, const torch::IValue& inputs) mutable {
          torch::Tensor tensor = first_tensor(output);
          if (!tensor.defined())
            throw std::runtime_error(
                fmt::format("baukit: edit_output for layer '{}' takes a tensor, but the layer's "
                            "output holds none (a {})",
                            layer, output.tagKind()));
          if constexpr (std::is_void_v<decltype(invoke_edit(edit, tensor, layer, inputs))>) {
            invoke_edit(edit, tensor, layer, inputs);  // edits in place
            return output;
          } else {
            torch::Tensor edited = invoke_edit(edit, tensor, layer, inputs);
            check_edited(first_tensor(output), edited, layer, "edit_output");
            return output.isTensor() ? torch::IValue(edited) : replace_first_tensor(output, edited);
          }
        };
  }
}

template <class T>
struct is_shared_ptr : std::false_type {};
template <class T>
struct is_shared_ptr<std::shared_ptr<T>> : std::true_type {};

/// A libtorch holder (`torch::nn::ModuleHolder`), which a trace reaches through `ptr()`.
template <class T>
concept module_holder = requires(const T& m) {
  typename T::ContainedType;
  m.ptr();
};

/// Something with a `module()`, as `models::CausalLM`.
template <class T>
concept has_module = requires(T& m) {
  m.module();
};

/// Whether a trace can attach to a `Model`: a libtorch holder, something with `module()` (a `CausalLM`), or a
/// `std::shared_ptr` to one of those. A module itself binds to the `torch::nn::Module&` constructors, and a
/// `std::shared_ptr` to a module to the "module itself" one.
template <class Model>
constexpr bool is_model_like() {
  using Plain = std::remove_cv_t<std::remove_reference_t<Model>>;
  if constexpr (std::is_base_of_v<torch::nn::Module, Plain>)
    return false;
  else if constexpr (module_holder<Plain> || has_module<Plain>)
    return true;
  else if constexpr (is_shared_ptr<Plain>::value)
    return !std::is_base_of_v<torch::nn::Module, typename Plain::element_type> &&
           is_model_like<typename Plain::element_type>();
  else
    return false;
}

/// The module a trace attaches to, for anything `is_model_like` accepts.
template <class Model>
torch::nn::Module& module_of(Model& model) {
  using Plain = std::remove_cv_t<std::remove_reference_t<Model>>;
  if constexpr (module_holder<Plain>) {
    return *model.ptr();
  } else if constexpr (has_module<Plain>) {
    return model.module();
  } else {
    if (!model) throw std::invalid_argument("baukit: a trace was given a null model");
    return module_of(*model);
  }
}

/// Turns any supported input editor into an `EditInput`: `(in)` or `(in, layer)`, where `in` is a `torch::Tensor`
/// (the first tensor argument) or a `torch::IValue` (the tuple of all arguments), returning the new value or
/// nothing after editing in place.
template <class Edit>
EditInput make_edit_input(Edit edit) {
  return [edit = std::move(edit)](torch::IValue inputs, const std::string& layer) mutable -> torch::IValue {
    auto call = [&](auto&& value) {
      if constexpr (std::is_invocable_v<Edit&, decltype(value), const std::string&>)
        return edit(std::forward<decltype(value)>(value), layer);
      else
        return edit(std::forward<decltype(value)>(value));
    };
    if constexpr (std::is_invocable_v<Edit&, torch::IValue, const std::string&> ||
                  std::is_invocable_v<Edit&, torch::IValue>) {
      if constexpr (std::is_void_v<decltype(call(inputs))>) {
        call(inputs);
        return inputs;
      } else {
        return torch::IValue(call(std::move(inputs)));
      }
    } else {
      static_assert(
          std::is_invocable_v<Edit&, torch::Tensor&, const std::string&> || std::is_invocable_v<Edit&, torch::Tensor&>,
          "edit_input takes a callable (input) or (input, layer), where input is torch::Tensor (the first "
          "tensor argument) or torch::IValue (all arguments)");
      torch::Tensor tensor = first_tensor(inputs);
      if (!tensor.defined())
        throw std::runtime_error(
            fmt::format("baukit: edit_input for layer '{}' takes a tensor, but the layer's "
                        "arguments hold none",
                        layer));
      if constexpr (std::is_void_v<decltype(call(tensor))>) {
        call(tensor);  // edits in place
        return inputs;
      } else {
        torch::Tensor edited = call(tensor);
        check_edited(tensor, edited, layer, "edit_input");
        return replace_first_tensor(inputs, edited);
      }
    }
  };
}

}  // namespace detail

/// What a trace does at its layer. Setters chain, as libtorch's options do:
/// `TraceOptions().retain_input(true).clone(true)`.
///
/// - `retain_output` (default true): keep the layer's output for `Trace::output()`.
/// - `retain_input`: keep the layer's arguments for `Trace::input()`.
/// - `clone`: keep copies, not views that a later in-place operation may change.
/// - `detach`: keep tensors detached from the autograd graph.
/// - `retain_grad`: make the kept output retain its gradient, so that after `backward()` its `.grad()` is set.
///   The model then continues from a clone of the kept tensor, so later in-place operations are safe. With
///   `detach` as well, the kept output becomes a leaf the rest of the forward is computed from: backward fills
///   its `.grad()` and stops there (earlier layers get no gradient).
/// - `edit_output`: a callable that replaces the layer's output: `(out)`, `(out, layer)` or
///   `(out, layer, inputs)`, where `out` is a `torch::Tensor` (the output, or its first tensor) or a
///   `torch::IValue` (the whole output); it returns the new output, or nothing after editing in place.
/// - `edit_input`: a callable that replaces what the layer receives, before it computes: `(in)` or `(in, layer)`,
///   where `in` is a `torch::Tensor` (the first tensor argument) or a `torch::IValue` (the tuple of all arguments);
///   it returns the new value, or nothing after editing in place. Needs a module held as `Traced<Impl>` (every
///   model module is); `retain_input` keeps the edited input.
/// - `stop`: throw `StopForward` once this layer has run (for a `TraceDict`, after the last listed layer).
/// - `allow_no_match`: a `TraceDict` given a regex may match no module (otherwise that is an error listing some
///   module names: Python habits such as `h\.\d+$` match nothing under `regex_match`, which needs the whole name).
struct TraceOptions {
  /// Keep the output.
  TORCH_ARG(bool, retain_output) = true;
  /// Keep the inputs.
  TORCH_ARG(bool, retain_input) = false;
  /// Keep copies.
  TORCH_ARG(bool, clone) = false;
  /// Keep detached tensors.
  TORCH_ARG(bool, detach) = false;
  /// Keep the output's gradient.
  TORCH_ARG(bool, retain_grad) = false;
  /// End the forward after this layer.
  TORCH_ARG(bool, stop) = false;
  /// Let a regex match no module.
  TORCH_ARG(bool, allow_no_match) = false;

 public:
  /// Sets the output editor; see the struct's description for the forms accepted.
  template <class Edit>
  TraceOptions& edit_output(Edit edit) {
    edit_output_ = detail::make_edit_output(std::move(edit));
    return *this;
  }
  /// The output editor, empty when none is set.
  [[nodiscard]] const EditOutput& edit_output() const noexcept { return edit_output_; }

  /// Sets the input editor; see the struct's description for the forms accepted.
  template <class Edit>
  TraceOptions& edit_input(Edit edit) {
    edit_input_ = detail::make_edit_input(std::move(edit));
    return *this;
  }
  /// The input editor, empty when none is set.
  [[nodiscard]] const EditInput& edit_input() const noexcept { return edit_input_; }

 private:
  EditOutput edit_output_;
  EditInput edit_input_;
};

/// Retains (or edits) the inputs and output of one named module while it lives; detaches on destruction.
///
/// @code
/// baukit::Trace tr(*model, "transformer.h.3.mlp", baukit::TraceOptions().retain_input(true));
/// model->forward(ids, {}, nullptr);
/// torch::Tensor in = tr.input(), out = tr.output();
/// @endcode
class Trace {
 public:
  /// Attaches to the module `layer` of `model` (a dotted name as `named_modules()` gives; "" for `model` itself).
  /// Throws before attaching anything if the name is unknown or the module is not traceable. The hooks detach
  /// when the trace is destroyed, so an unnamed temporary traces nothing (compilers warn: `[[nodiscard]]`).
  [[nodiscard]] Trace(torch::nn::Module& model, const std::string& layer, TraceOptions options = {})
      : Trace(find_traceable(model, layer), layer, std::move(options)) {}

  /// The same, for a libtorch holder, a `models::CausalLM`, or a `std::shared_ptr` to one.
  template <class Model>
  requires(detail::is_model_like<Model>())
      [[nodiscard]] Trace(Model&& model, const std::string& layer, TraceOptions options = {})
      : Trace(detail::module_of(model), layer, std::move(options)) {}

  /// Attaches to `module` itself, already looked up; `layer` names it in messages and for editors.
  [[nodiscard]] Trace(std::shared_ptr<torch::nn::Module> module, const std::string& layer, TraceOptions options = {})
      : Trace(checked_target(std::move(module), layer), layer, std::move(options)) {}

  /// Takes over `other`'s hook; `other` is left empty.
  Trace(Trace&& other) noexcept = default;
  /// Detaches this trace's hook, then takes over `other`'s.
  Trace& operator=(Trace&& other) noexcept {
    if (this != &other) {
      close();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  Trace(const Trace&) = delete;
  Trace& operator=(const Trace&) = delete;
  ~Trace() { close(); }

  /// Detaches the hook now; retained values stay readable.
  void close() noexcept {
    if (state_ && state_->target) {
      state_->target->remove_forward_hook(state_->hook_id);
      if (state_->input_hook_id) state_->target->remove_input_hook(state_->input_hook_id);
      state_->target = nullptr;
      state_->keep_alive.reset();
    }
  }

  /// The layer's name.
  [[nodiscard]] const std::string& layer() const { return state().layer; }

  /// The retained output: a tensor (the output, or the first tensor of a tuple) by default, or any type
  /// `torch::IValue::to<T>()` gives (`torch::IValue` for the whole output).
  template <class T = torch::Tensor>
  [[nodiscard]] T output() const {
    return convert<T>(state().output, "output", "retain_output");
  }

  /// The retained input: the first tensor argument by default, or `torch::IValue` for the tuple of all arguments.
  template <class T = torch::Tensor>
  [[nodiscard]] T input() const {
    return convert<T>(state().input, "input", "retain_input");
  }

  /// True when the layer has run since the trace was attached.
  [[nodiscard]] bool has_run() const { return state().calls > 0; }

 private:
  struct State {
    std::string layer;
    TraceOptions options;
    Hookable* target = nullptr;
    std::shared_ptr<torch::nn::Module> keep_alive;
    Hookable::HookId hook_id = 0, input_hook_id = 0;
    torch::IValue input, output;
    std::size_t calls = 0;
  };

  struct Target {
    Hookable* hookable;
    std::shared_ptr<torch::nn::Module> module;
  };

  static Target find_traceable(torch::nn::Module& model, const std::string& layer) {
    if (layer.empty()) {
      auto* hookable = dynamic_cast<Hookable*>(&model);
      if (!hookable) throw untraceable_error(model, "(the model itself)");
      return {hookable, nullptr};
    }
    return checked_target(get_module(model, layer), layer);
  }

  static Target checked_target(std::shared_ptr<torch::nn::Module> module, const std::string& layer) {
    if (!module) throw std::invalid_argument(fmt::format("baukit: no module given for layer '{}'", layer));
    auto* hookable = dynamic_cast<Hookable*>(module.get());
    if (!hookable) throw untraceable_error(*module, layer);
    return {hookable, std::move(module)};
  }

  static std::invalid_argument untraceable_error(const torch::nn::Module& module, const std::string& layer) {
    return std::invalid_argument(
        fmt::format("baukit: module '{}' of type {} is not traceable: its forward runs no hooks. Derive it from "
                    "baukit::Hookable, hold it as baukit::Traced<{}>, or, inside a torch::nn::Sequential, call "
                    "baukit::make_traceable on the Sequential",
                    layer, module.name(), module.name()));
  }

  Trace(Target target, const std::string& layer, TraceOptions options) : state_(std::make_unique<State>()) {
    state_->layer = layer;
    state_->options = std::move(options);
    state_->keep_alive = std::move(target.module);
    State* state = state_.get();  // stable across moves of the Trace
    if (state_->options.edit_input()) {
      if (!target.hookable->runs_input_hooks())
        throw std::invalid_argument(
            fmt::format("baukit: edit_input on '{}': the module runs only output hooks (its own forward calls "
                        "apply_forward_hooks); hold it as baukit::Traced<...> (BAUKIT_TRACED_MODULE) to edit its input",
                        layer));
      state_->input_hook_id = target.hookable->add_input_hook([state](torch::IValue inputs) {
        return detail::run_editor("edit_input", state->layer,
                                  [&] { return state->options.edit_input()(std::move(inputs), state->layer); });
      });
    }
    state_->hook_id = target.hookable->add_forward_hook([state](const torch::IValue& inputs, torch::IValue output) {
      return on_forward(*state, inputs, std::move(output));
    });
    state_->target = target.hookable;
  }

  static torch::IValue copy_for_retention(const torch::IValue& value, const TraceOptions& options, bool retain_grad) {
    return detail::map_tensors(value, [&](const torch::Tensor& tensor) {
      torch::Tensor kept = tensor;
      if (options.clone()) kept = kept.clone();
      if (options.detach()) kept = kept.detach();
      if (retain_grad && kept.is_floating_point()) {
        if (!kept.requires_grad()) kept.requires_grad_(true);
        kept.retain_grad();
      }
      return kept;
    });
  }

  static torch::IValue on_forward(State& state, const torch::IValue& inputs, torch::IValue output) {
    const TraceOptions& options = state.options;
    ++state.calls;
    if (options.retain_input()) state.input = copy_for_retention(inputs, options, false);
    if (options.edit_output())
      output = detail::run_editor("edit_output", state.layer,
                                  [&] { return options.edit_output()(std::move(output), state.layer, inputs); });
    if (options.retain_output()) {
      state.output = copy_for_retention(output, options, options.retain_grad());
      // Continue from a copy of what was retained, so that its gradient is the one the model uses and
      // in-place operations downstream cannot clobber it.
      if (options.retain_grad())
        output = detail::map_tensors(state.output, [](const torch::Tensor& t) { return t.clone(); });
    }
    if (options.stop()) throw StopForward();
    return output;
  }

  template <class T>
  T convert(const torch::IValue& value, const char* what, const char* option) const {
    if (state().calls == 0)
      throw std::logic_error(
          fmt::format("baukit: no {} for layer '{}': the layer has not run its hooks since the trace was "
                      "attached (if the network did call it: a traced module called through its plain type, as "
                      "list[i]->as<torch::nn::Linear>(), skips them; call it as as<baukit::TracedLinear>())",
                      what, state().layer));
    if (value.isNone())
      throw std::logic_error(fmt::format("baukit: no {} for layer '{}': the trace was made without {}(true)", what,
                                         state().layer, option));
    if constexpr (std::is_same_v<T, torch::Tensor>) {
      torch::Tensor tensor = detail::first_tensor(value);
      if (!tensor.defined())
        throw std::logic_error(fmt::format("baukit: the {} of layer '{}' holds no tensor", what, state().layer));
      return tensor;
    } else {
      try {
        return detail::from_ivalue<T>(value);
      } catch (const c10::Error&) {  // IValue::to<T>() fails with an internal assertion, naming nothing
        throw std::logic_error(fmt::format("baukit: the {} of layer '{}' is a {}, which does not convert to {}", what,
                                           state().layer, value.tagKind(), c10::demangle_type<T>()));
      }
    }
  }

  const State& state() const {
    if (!state_) throw std::logic_error("baukit: use of a moved-from Trace");
    return *state_;
  }

  std::unique_ptr<State> state_;
};

/// Traces several layers at once; `tr["name"]` is each layer's `Trace`. All layers are checked before any
/// hook is attached, so a bad name leaves nothing attached.
///
/// @code
/// baukit::TraceDict tr(*model, std::regex(R"(^transformer\.h\.\d+$)"));
/// model->forward(ids, {}, nullptr);
/// for (const auto& name : tr.layers()) std::cout << name << ' ' << tr[name].output().sizes() << '\n';
/// @endcode
class TraceDict {
 public:
  /// Per-layer options: called once for each layer, in order.
  using OptionsFor = std::function<TraceOptions(const std::string& layer)>;

  /// Traces the listed layers with the same options (`stop` applies after the last listed layer only).
  [[nodiscard]] TraceDict(torch::nn::Module& model, std::vector<std::string> layers, TraceOptions options = {})
      : TraceDict(model, std::move(layers), OptionsFor([options](const std::string&) { return options; })) {}

  /// A braced list of names: `TraceDict tr(model, {"transformer.h.0", "transformer.h.1"})`.
  [[nodiscard]] TraceDict(torch::nn::Module& model, std::initializer_list<std::string> layers,
                          TraceOptions options = {})
      : TraceDict(model, std::vector<std::string>(layers), std::move(options)) {}

  /// Traces the listed layers, asking `options_for` for each layer's options.
  [[nodiscard]] TraceDict(torch::nn::Module& model, std::vector<std::string> layers, const OptionsFor& options_for) {
    // Look every name up in one walk of the module tree, and fail before attaching anything.
    const auto modules = model.named_modules("", /*include_self=*/false);
    std::vector<std::shared_ptr<torch::nn::Module>> found;
    for (const auto& layer : layers) {
      const auto* module = modules.find(layer);
      if (!module) (void)get_module(model, layer);                               // throws the error naming the layer
      if (!dynamic_cast<Hookable*>(module->get())) (void)Trace(*module, layer);  // throws the untraceable error
      found.push_back(*module);
    }
    traces_.reserve(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) {
      TraceOptions options = options_for(layers[i]);
      if (i + 1 < layers.size()) options.stop(false);
      if (index_.count(layers[i]))
        throw std::invalid_argument(fmt::format("baukit: layer '{}' is listed twice in a TraceDict", layers[i]));
      index_.emplace(layers[i], traces_.size());
      traces_.emplace_back(found[i], layers[i], std::move(options));
    }
    layers_ = std::move(layers);
  }

  /// Traces every module whose full name matches `pattern` (`std::regex_match`, in module order). Matching
  /// nothing is an error listing some module names, unless `options.allow_no_match(true)`.
  [[nodiscard]] TraceDict(torch::nn::Module& model, const std::regex& pattern, TraceOptions options = {})
      : TraceDict(model, matching(model, pattern, options), std::move(options)) {}

  /// The forms above for a libtorch holder, a `models::CausalLM`, or a `std::shared_ptr` to one.
  template <class Model>
  requires(detail::is_model_like<Model>())
      [[nodiscard]] TraceDict(Model&& model, std::vector<std::string> layers, TraceOptions options = {})
      : TraceDict(detail::module_of(model), std::move(layers), std::move(options)) {}
  /// A braced list of names, for a holder or `CausalLM`.
  template <class Model>
  requires(detail::is_model_like<Model>())
      [[nodiscard]] TraceDict(Model&& model, std::initializer_list<std::string> layers, TraceOptions options = {})
      : TraceDict(detail::module_of(model), std::vector<std::string>(layers), std::move(options)) {}
  /// A regex, for a holder or `CausalLM`.
  template <class Model>
  requires(detail::is_model_like<Model>())
      [[nodiscard]] TraceDict(Model&& model, const std::regex& pattern, TraceOptions options = {})
      : TraceDict(detail::module_of(model), pattern, std::move(options)) {}

  /// The trace of `layer`; throws naming the layer when it is not traced here.
  [[nodiscard]] const Trace& operator[](const std::string& layer) const {
    auto it = index_.find(layer);
    if (it == index_.end())
      throw std::out_of_range(fmt::format("baukit: layer '{}' is not traced by this TraceDict", layer));
    return traces_[it->second];
  }

  /// The traced layer names, in the order given.
  [[nodiscard]] const std::vector<std::string>& layers() const noexcept { return layers_; }

  /// The number of traced layers.
  [[nodiscard]] std::size_t size() const noexcept { return traces_.size(); }

  /// Detaches every hook now; retained values stay readable.
  void close() noexcept {
    for (auto it = traces_.rbegin(); it != traces_.rend(); ++it) it->close();
  }

 private:
  static std::vector<std::string> matching(torch::nn::Module& model, const std::regex& pattern,
                                           const TraceOptions& options) {
    auto names = module_names(model, pattern);
    if (names.empty() && !options.allow_no_match())
      throw std::invalid_argument(fmt::format(
          "baukit: the regex matches no module of {} (it must match a whole name, as std::regex_match does); its "
          "modules include {}. Pass TraceOptions().allow_no_match(true) if none is fine",
          model.name(), detail::some_module_names(model)));
    return names;
  }

  std::vector<Trace> traces_;
  std::map<std::string, std::size_t> index_;
  std::vector<std::string> layers_;
};

}  // namespace baukit
