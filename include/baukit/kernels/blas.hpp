/// @file kernels/blas.hpp
/// @brief libtorch's BLAS on this CPU: whether it is OpenBLAS running generic kernels, and switching it to the
/// kernels for the CPU's instruction set. OpenBLAS picks its kernels from the CPU model, and a model it does not
/// know gets its generic SSE3 kernels: Debian's OpenBLAS 0.3.21 on CPU model 207 runs "Prescott" kernels (measured
/// here: 30-60 GFLOP/s on 2 cores, against 210-270 with its AVX-512 "SkylakeX" kernels). `OPENBLAS_CORETYPE` set
/// before the process starts fixes that; `use_openblas_kernels_for_this_cpu` does the same from inside it.
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <set>
#include <string>

namespace baukit::kernels {

namespace detail {

/// OpenBLAS's name for the kernels it runs (`openblas_get_corename`), or "" where libtorch's BLAS is not OpenBLAS.
inline std::string openblas_core_name() {
  using CoreName = char* (*)();
  static const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = core_name ? core_name() : nullptr;
  return name ? name : "";
}

}  // namespace detail

/// Whether libtorch's BLAS is OpenBLAS running kernels older than the CPU (no AVX2 kernels on a CPU with AVX2,
/// as when it does not know the CPU model), so that oneDNN is the faster way to multiply many rows; false for
/// OpenBLAS with kernels for the CPU, for other BLAS libraries (MKL), and off x86-64.
inline bool blas_runs_generic_kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const std::set<std::string> avx2_cores = {"Haswell",        "Zen",  "SkylakeX", "Cooperlake",
                                                   "SapphireRapids", "Zen2", "Zen3",     "Zen4"};
  const auto core = detail::openblas_core_name();
  return !core.empty() && __builtin_cpu_supports("avx2") && avx2_cores.count(core) == 0;
#else
  return false;
#endif
}

/// Where `blas_runs_generic_kernels()`, switches OpenBLAS to its kernels for this CPU's instruction set
/// ("SkylakeX" with AVX-512, "Haswell" with AVX2 and FMA), as `OPENBLAS_CORETYPE` would have at start-up; returns
/// that name, or "" when nothing changed: not OpenBLAS, kernels already fitting the CPU, `OPENBLAS_CORETYPE` set by
/// the user (respected), or an OpenBLAS built for one CPU only. Same results up to float rounding order. Changes
/// process-wide state: call it at start-up, before any thread runs BLAS.
inline std::string use_openblas_kernels_for_this_cpu() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!blas_runs_generic_kernels() || std::getenv("OPENBLAS_CORETYPE")) return "";
  // A DYNAMIC_ARCH OpenBLAS (as Debian's) chooses its kernel table in gotoblas_dynamic_init, from
  // OPENBLAS_CORETYPE when set; gotoblas_dynamic_quit clears the choice.
  using Hook = void (*)();
  const auto dynamic_init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  const auto dynamic_quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  if (!dynamic_init || !dynamic_quit) return "";
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const std::string wanted = avx512 ? "SkylakeX" : avx2 ? "Haswell" : "";
  if (wanted.empty()) return "";
  const auto before = detail::openblas_core_name();
  ::setenv("OPENBLAS_CORETYPE", wanted.c_str(), 0);
  dynamic_quit();
  dynamic_init();
  ::unsetenv("OPENBLAS_CORETYPE");
  if (detail::openblas_core_name() == wanted) return wanted;
  // Not taken (an OpenBLAS without those kernels): back to what it chose itself.
  ::setenv("OPENBLAS_CORETYPE", before.c_str(), 0);
  dynamic_quit();
  dynamic_init();
  ::unsetenv("OPENBLAS_CORETYPE");
  return "";
#else
  return "";
#endif
}

}  // namespace baukit::kernels
