/// @file hook.hpp
/// @brief Forward hooks for libtorch modules: the mechanism every trace is built on.
///
/// libtorch's C++ modules have no forward hooks (pytorch issue 25888) and their `forward` is not virtual, so a
/// module can only run hooks if its own `forward` calls them. This header gives two ways to get there:
///  - `Hookable`, a mixin for modules written for baukit-cpp: end `forward` with `apply_forward_hooks(out, args...)`;
///  - `Traced<Impl>`, an adapter that makes any stock libtorch module (`torch::nn::LinearImpl`, a user's
///    `MyBlockImpl`, ...) traceable without rewriting it, keeping its parameters, names and `forward` signature.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace baukit {

/// A forward hook: receives the forward's arguments (a tuple; arguments that are not IValue-convertible
/// appear as None) and its output, and returns the output the caller will see.
using ForwardHook = std::function<torch::IValue(const torch::IValue& inputs, torch::IValue output)>;

/// An input hook: receives the forward's arguments (a tuple, as for `ForwardHook`) before the module computes,
/// and returns the arguments it will compute with (the same tuple shape; None entries are left as they were).
using InputHook = std::function<torch::IValue(torch::IValue inputs)>;

namespace detail {

/// Converts a forward argument or result to an IValue; anything that has no IValue form becomes None.
template <class T>
torch::IValue to_ivalue(const T& value) {
  using Plain = std::remove_cv_t<std::remove_reference_t<T>>;
  if constexpr (std::is_same_v<Plain, torch::IValue>) {
    return value;
  } else if constexpr (!std::is_pointer_v<Plain> && std::is_constructible_v<torch::IValue, const Plain&>) {
    return torch::IValue(value);  // pointers are excluded: IValue would silently turn them into a bool
  } else {
    return torch::IValue();
  }
}

/// Converts a hook's result back to the type the module's `forward` returns.
template <class T>
T from_ivalue(torch::IValue value) {
  if constexpr (std::is_same_v<T, torch::IValue>) {
    return value;
  } else {
    return std::move(value).to<T>();
  }
}

}  // namespace detail

/// Mixin that stores forward hooks and runs them; derive a module from it to make it traceable.
///
/// @code
/// struct ScaleImpl : torch::nn::Cloneable<ScaleImpl>, baukit::Hookable {
///   void reset() override {}
///   torch::Tensor forward(const torch::Tensor& x) { return apply_forward_hooks(x * 2, x); }
/// };
/// TORCH_MODULE(Scale);
/// @endcode
///
/// Copies of a module do not inherit its hooks: a hook belongs to the object it was attached to.
class Hookable {
 public:
  /// Identifies an attached hook, for removal.
  using HookId = std::uint64_t;

  Hookable() = default;
  /// Copying a module copies no hooks.
  Hookable(const Hookable& /*other*/) noexcept {}
  /// Assigning a module keeps this object's own hooks.
  Hookable& operator=(const Hookable& /*other*/) noexcept { return *this; }
  virtual ~Hookable() = default;

  /// Attaches `hook`; hooks run in the order they were attached, each seeing the previous one's output.
  HookId add_forward_hook(ForwardHook hook) {
    hooks_.emplace_back(next_id_, std::move(hook));
    return next_id_++;
  }

  /// Detaches the hook `id`; returns false when it is not attached.
  bool remove_forward_hook(HookId id) noexcept { return remove(hooks_, id); }

  /// The number of hooks attached now.
  [[nodiscard]] std::size_t num_forward_hooks() const noexcept { return hooks_.size() + input_hooks_.size(); }

  /// Whether this module runs input hooks (`Traced<Impl>` does; a module's own `apply_forward_hooks` does not).
  [[nodiscard]] virtual bool runs_input_hooks() const noexcept { return false; }

  /// Attaches an input hook, run before the module computes, in attach order; see `InputHook`.
  HookId add_input_hook(InputHook hook) {
    input_hooks_.emplace_back(next_id_, std::move(hook));
    return next_id_++;
  }

  /// Detaches the input hook `id`; returns false when it is not attached.
  bool remove_input_hook(HookId id) noexcept { return remove(input_hooks_, id); }

 protected:
  /// Runs the attached hooks on `output`, with `inputs` as the forward's arguments, and returns the
  /// (possibly edited) output. With no hook attached this is a single branch.
  template <class Out, class... In>
  Out apply_forward_hooks(Out output, const In&... inputs) {
    if (hooks_.empty()) return output;
    return detail::from_ivalue<Out>(
        run_hooks(torch::ivalue::Tuple::create({detail::to_ivalue(inputs)...}), detail::to_ivalue(output)));
  }

  /// Runs the hooks on type-erased values.
  torch::IValue run_hooks(const torch::IValue& inputs, torch::IValue output) {
    // A copy, so that a hook may attach or detach hooks without invalidating this loop.
    const auto hooks = hooks_;
    for (const auto& [id, hook] : hooks) output = hook(inputs, std::move(output));
    return output;
  }

  /// Runs the input hooks on the arguments.
  torch::IValue run_input_hooks(torch::IValue inputs) {
    const auto hooks = input_hooks_;
    for (const auto& [id, hook] : hooks) inputs = hook(std::move(inputs));
    return inputs;
  }

  /// True when at least one hook is attached.
  [[nodiscard]] bool has_forward_hooks() const noexcept { return !hooks_.empty(); }
  /// True when at least one input hook is attached.
  [[nodiscard]] bool has_input_hooks() const noexcept { return !input_hooks_.empty(); }

 private:
  template <class Hook>
  static bool remove(std::vector<std::pair<HookId, Hook>>& hooks, HookId id) noexcept {
    for (auto it = hooks.begin(); it != hooks.end(); ++it) {
      if (it->first == id) {
        hooks.erase(it);
        return true;
      }
    }
    return false;
  }

  std::vector<std::pair<HookId, ForwardHook>> hooks_;
  std::vector<std::pair<HookId, InputHook>> input_hooks_;
  HookId next_id_ = 1;
};

namespace detail {

template <class Impl, class Forward>
class TracedForward;

/// Re-declares `Impl::forward` with the same signature, running the hooks around it.
template <class Impl, class Result, class Class, class... Args>
class TracedForward<Impl, Result (Class::*)(Args...)> : public Impl, public Hookable {
 public:
  using Impl::Impl;
  TracedForward() = default;
  /// Copies `module`'s own members (and, where `Module` is a plain base, that too).
  explicit TracedForward(const Impl& module) : Impl(module) {}

  /// The wrapped module's forward, with input hooks run on its arguments and hooks run on its result.
  Result forward(Args... args) {
    if (has_input_hooks()) return forward_edited(std::index_sequence_for<Args...>{}, std::forward<Args>(args)...);
    if (!has_forward_hooks()) return Impl::forward(std::forward<Args>(args)...);
    auto inputs = torch::ivalue::Tuple::create({detail::to_ivalue(args)...});
    auto output = detail::to_ivalue(Impl::forward(std::forward<Args>(args)...));
    return detail::from_ivalue<Result>(run_hooks(inputs, std::move(output)));
  }

  /// True: the wrapper runs input hooks.
  [[nodiscard]] bool runs_input_hooks() const noexcept override { return true; }

 private:
  // The arguments as the input hooks leave them (each one that has an IValue form), then the forward on those.
  template <std::size_t... I>
  Result forward_edited(std::index_sequence<I...>, Args... args) {
    const auto edited = run_input_hooks(torch::ivalue::Tuple::create({detail::to_ivalue(args)...}));
    if (!edited.isTuple() || edited.toTupleRef().elements().size() != sizeof...(Args))
      throw std::invalid_argument("baukit: an input hook must return the tuple of the forward's arguments");
    std::tuple<std::decay_t<Args>...> values(args...);
    const auto& items = edited.toTupleRef().elements();
    ((std::get<I>(values) = take_argument<std::decay_t<Args>>(items[I], std::get<I>(values))), ...);
    auto output = detail::to_ivalue(Impl::forward(std::forward<Args>(std::get<I>(values))...));
    if (!has_forward_hooks()) return detail::from_ivalue<Result>(std::move(output));
    return detail::from_ivalue<Result>(run_hooks(edited, std::move(output)));
  }

  template <class T>
  static T take_argument(const torch::IValue& edited, const T& original) {
    if constexpr (std::is_pointer_v<T> || !std::is_constructible_v<torch::IValue, const T&>)
      return original;  // no IValue form: passed through as it was
    else
      return edited.isNone() && !detail::to_ivalue(original).isNone() ? original : detail::from_ivalue<T>(edited);
  }
};

/// The same for a `forward` declared `const`.
template <class Impl, class Result, class Class, class... Args>
class TracedForward<Impl, Result (Class::*)(Args...) const> : public TracedForward<Impl, Result (Class::*)(Args...)> {
  using TracedForward<Impl, Result (Class::*)(Args...)>::TracedForward;
};

/// Whether `torch::nn::Module` is a virtual base of `Impl`, as libtorch 1.x's `Cloneable` makes it (2.x's does
/// not): a static_cast down from a virtual base is ill-formed.
template <class Impl>
inline constexpr bool module_is_virtual_base = !requires(torch::nn::Module * module) {
  static_cast<Impl*>(module);
};

}  // namespace detail

/// The `forward` that `Traced<Impl>` re-declares, as a member-function pointer type: `Impl::forward`'s own. A module
/// whose `forward` is a template or overloaded names one signature by specializing this, as baukit-cpp does for
/// `torch::nn::SequentialImpl` (a tensor to a tensor).
template <class Impl>
struct TracedSignature {
  using type = decltype(&Impl::forward);  ///< The signature.
};

/// A whole `torch::nn::Sequential` is traced as a function of one tensor.
template <>
struct TracedSignature<torch::nn::SequentialImpl> {
  using type = torch::Tensor (torch::nn::SequentialImpl::*)(torch::Tensor);  ///< The signature.
};

/// Makes the libtorch module `Impl` traceable: same parameters, buffers, submodules, names and `forward`
/// signature, plus hooks. `Impl::forward` must not be overloaded or a template, unless `TracedSignature<Impl>`
/// names the one to trace (`Traced<torch::nn::SequentialImpl>`, a whole Sequential, is one).
///
/// @code
/// baukit::TracedLinear proj(torch::nn::LinearOptions(16, 4));   // a traceable torch::nn::Linear
/// auto seq = torch::nn::Sequential(torch::nn::Linear(4, 4), torch::nn::ReLU());
/// baukit::make_traceable(seq);                                   // every element, in place
/// @endcode
template <class Impl>
class Traced : public detail::TracedForward<Impl, typename TracedSignature<Impl>::type> {
  using Base = detail::TracedForward<Impl, typename TracedSignature<Impl>::type>;

  template <class... Args>
  static constexpr bool is_copy_of_impl = sizeof...(Args) == 1 &&
                                          (std::is_base_of_v<Impl, std::remove_cvref_t<Args>> && ...);

 public:
  /// Constructs the module as `Impl(args...)` would, e.g. `Traced<torch::nn::LinearImpl>(16, 4)`.
  template <class... Args>
  requires(std::is_constructible_v<Impl, Args...> && !is_copy_of_impl<Args...>) explicit Traced(Args&&... args)
      : Base(std::forward<Args>(args)...) {}

  /// Wraps a copy of `module` that shares its parameters, buffers and submodules. Where `Module` is a virtual
  /// base (libtorch 1.x's `Cloneable`), the most derived class copies it.
  explicit Traced(const Impl& module) requires detail::module_is_virtual_base<Impl> : torch::nn::Module(module),
                                                                                      Base(module) {}
  /// As above, where `Module` is a plain base (libtorch 2.x's `Cloneable`, or a module deriving from it directly).
  explicit Traced(const Impl& module) requires(!detail::module_is_virtual_base<Impl>) : Base(module) {}

  /// Deep-copies the module (as `Impl::clone` does) and keeps it traceable; hooks are not copied.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto copy = std::dynamic_pointer_cast<Impl>(Impl::clone(device));
    return std::make_shared<Traced>(*copy);
  }
};

/// Wraps an existing module in a traceable one that shares its parameters and submodules.
///
/// The wrapper is a new module: a network that already holds `module` (as `plain->out`, a member its `forward`
/// calls) keeps calling the original, so hooks on the wrapper never run there. Call the wrapper yourself, register
/// it in the network's place when you build it (`out = register_module("out", traced(torch::nn::Linear(8, 3)))`),
/// or, inside a `torch::nn::Sequential`, use `make_traceable`.
template <class Impl>
std::shared_ptr<Traced<Impl>> traced(const std::shared_ptr<Impl>& module) {
  return std::make_shared<Traced<Impl>>(*module);
}

/// Wraps the module held by a libtorch holder (`torch::nn::Linear`, ...) in a traceable one sharing its state.
template <class Impl>
torch::nn::ModuleHolder<Traced<Impl>> traced(const torch::nn::ModuleHolder<Impl>& holder) {
  return torch::nn::ModuleHolder<Traced<Impl>>(traced(holder.ptr()));
}

/// Declares the holder `Name` for the traceable `Traced<NameImpl>`, as `TORCH_MODULE(Name)` does for `NameImpl`.
#define BAUKIT_TRACED_MODULE(Name)                                             \
  class Name : public torch::nn::ModuleHolder<::baukit::Traced<Name##Impl>> {  \
   public:                                                                     \
    using torch::nn::ModuleHolder<::baukit::Traced<Name##Impl>>::ModuleHolder; \
    using Impl = ::baukit::Traced<Name##Impl>;                                 \
  }

/// A traceable `torch::nn::Linear`.
using TracedLinear = torch::nn::ModuleHolder<Traced<torch::nn::LinearImpl>>;
/// A traceable `torch::nn::LayerNorm`.
using TracedLayerNorm = torch::nn::ModuleHolder<Traced<torch::nn::LayerNormImpl>>;
/// A traceable `torch::nn::Embedding`.
using TracedEmbedding = torch::nn::ModuleHolder<Traced<torch::nn::EmbeddingImpl>>;
/// A traceable `torch::nn::Dropout`.
using TracedDropout = torch::nn::ModuleHolder<Traced<torch::nn::DropoutImpl>>;
/// A traceable `torch::nn::Softmax`.
using TracedSoftmax = torch::nn::ModuleHolder<Traced<torch::nn::SoftmaxImpl>>;
/// A traceable `torch::nn::GELU`.
using TracedGELU = torch::nn::ModuleHolder<Traced<torch::nn::GELUImpl>>;
/// A traceable `torch::nn::ReLU`.
using TracedReLU = torch::nn::ModuleHolder<Traced<torch::nn::ReLUImpl>>;
/// A whole traceable `torch::nn::Sequential` (a tensor in, a tensor out), e.g. a member of your own network.
using TracedSequential = torch::nn::ModuleHolder<Traced<torch::nn::SequentialImpl>>;

}  // namespace baukit
