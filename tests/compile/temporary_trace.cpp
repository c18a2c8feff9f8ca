// An unnamed temporary Trace detaches as soon as it is made, tracing nothing: the constructors are [[nodiscard]],
// so this file draws a warning (the test trace_temporary_warns builds it with -Werror=unused-result and expects the
// error naming the constructor).
#include <baukit/trace.hpp>

void trace_nothing(torch::nn::Module& model) { baukit::Trace(model, "layer"); }
