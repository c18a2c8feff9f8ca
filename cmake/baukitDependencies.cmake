# Finds baukit's dependencies and lists their targets in BAUKIT_DEPENDENCY_TARGETS; shared by the build and
# by the installed package config, so both find the same things.
include(CMakeFindDependencyMacro)
find_dependency(Torch)
find_dependency(range-v3)
find_dependency(nlohmann_json)
find_dependency(fmt)
find_dependency(simdjson)
find_package(PkgConfig QUIET)
# libtorch's OpenMP builds (Debian's, pytorch.org's) define at::parallel_for inline with `#pragma omp parallel`:
# without OpenMP in *our* compile it runs on one thread. baukit's kernels (the skinny product, the lens
# statistics) rely on it.
find_package(OpenMP QUIET)
# PCRE2 (the pre-tokenizers' regexes) and utf8proc (NFC) ship pkg-config files, not CMake packages; without
# pkg-config, look for the header and library.
function(baukit_find_c_library target module header library package)
  if(TARGET ${target})
    return()
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(${target}_pc QUIET IMPORTED_TARGET GLOBAL ${module})
  endif()
  if(TARGET PkgConfig::${target}_pc)
    target_link_libraries(${target} INTERFACE PkgConfig::${target}_pc)
    return()
  endif()
  find_path(${target}_INCLUDE_DIR ${header})
  find_library(${target}_LIBRARY ${library})
  if(NOT ${target}_INCLUDE_DIR OR NOT ${target}_LIBRARY)
    message(FATAL_ERROR "baukit: ${module} (${header} and lib${library}) not found; install ${package} or set CMAKE_PREFIX_PATH")
  endif()
  target_include_directories(${target} INTERFACE ${${target}_INCLUDE_DIR})
  target_link_libraries(${target} INTERFACE ${${target}_LIBRARY})
endfunction()
baukit_find_c_library(baukit_pcre2 libpcre2-8 pcre2.h pcre2-8 libpcre2-dev)
baukit_find_c_library(baukit_utf8proc libutf8proc utf8proc.h utf8proc libutf8proc-dev)
# Make the imported targets visible to a parent project that uses baukit through add_subdirectory.
get_property(_baukit_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_baukit_target IN LISTS _baukit_imported)
  get_target_property(_baukit_global ${_baukit_target} IMPORTED_GLOBAL)
  if(NOT _baukit_global)
    set_target_properties(${_baukit_target} PROPERTIES IMPORTED_GLOBAL TRUE)
  endif()
endforeach()
if(NOT TARGET baukit_torch)
  # Debian's TorchConfig gives a library list rather than one target: wrap it.
  add_library(baukit_torch INTERFACE IMPORTED GLOBAL)
  # pytorch.org's libtorch 2.5 and later exports the std::filesystem functions of the libstdc++ it was built with
  # (pytorch issue 133437); a program built by a newer GCC whose calls bind to those crashes. Linking libstdc++
  # ahead of libtorch binds them to libstdc++'s own (versioned) symbols.
  include(CheckCXXSymbolExists)
  check_cxx_symbol_exists(__GLIBCXX__ cstddef BAUKIT_USES_LIBSTDCXX)
  if(BAUKIT_USES_LIBSTDCXX)
    target_link_libraries(baukit_torch INTERFACE "-Wl,--push-state,--no-as-needed,-lstdc++,--pop-state")
  endif()
  target_link_libraries(baukit_torch INTERFACE ${TORCH_LIBRARIES})
  separate_arguments(_baukit_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(baukit_torch INTERFACE ${_baukit_torch_flags})
endif()
# fmt header-only: libtorch 2.x ships its own fmt headers, which can be found before the system's; used header-only
# they never meet a libfmt of another version at link time.
set(BAUKIT_DEPENDENCY_TARGETS baukit_torch range-v3::range-v3 nlohmann_json::nlohmann_json fmt::fmt-header-only baukit_pcre2 baukit_utf8proc simdjson::simdjson)
# torch.distributed's Gloo backend (baukit/distributed): libtorch's CPU library has it; its headers include Gloo's
# (Debian: libgloo-dev). Gloo's headers must sit beside libtorch's own (Debian's both in /usr/include, an archive's
# both in its include/): another libtorch than the one Gloo's headers came with was compiled against another Gloo.
# Without them a job of one process still runs.
if(NOT TARGET baukit_gloo)
  find_path(BAUKIT_C10D_INCLUDE_DIR torch/csrc/distributed/c10d/ProcessGroupGloo.hpp HINTS ${TORCH_INCLUDE_DIRS})
  if(BAUKIT_C10D_INCLUDE_DIR)
    find_path(BAUKIT_GLOO_INCLUDE_DIR gloo/config.h PATHS ${BAUKIT_C10D_INCLUDE_DIR} NO_DEFAULT_PATH)
  endif()
  if(BAUKIT_GLOO_INCLUDE_DIR AND BAUKIT_C10D_INCLUDE_DIR)
    add_library(baukit_gloo INTERFACE IMPORTED GLOBAL)
    target_include_directories(baukit_gloo INTERFACE ${BAUKIT_GLOO_INCLUDE_DIR})
    target_compile_definitions(baukit_gloo INTERFACE BAUKIT_WITH_GLOO USE_C10D_GLOO)
  else()
    message(STATUS "baukit: Gloo's headers not found beside libtorch's (Debian: libgloo-dev): distributed jobs of more than one process are off")
  endif()
endif()
if(TARGET baukit_gloo)
  list(APPEND BAUKIT_DEPENDENCY_TARGETS baukit_gloo)
endif()
# cpp-httplib (the explorer's local server, baukit/explorer; Debian: libcpp-httplib-dev, a compiled library whose
# pkg-config file carries the defines it was built with). Without it `baukit-lens serve` says so and exits.
if(NOT TARGET baukit_httplib AND PKG_CONFIG_FOUND)
  pkg_check_modules(baukit_httplib_pc QUIET IMPORTED_TARGET GLOBAL cpp-httplib)
  if(TARGET PkgConfig::baukit_httplib_pc)
    add_library(baukit_httplib INTERFACE IMPORTED GLOBAL)
    target_link_libraries(baukit_httplib INTERFACE PkgConfig::baukit_httplib_pc)
    target_compile_definitions(baukit_httplib INTERFACE BAUKIT_WITH_HTTPLIB)
  else()
    message(STATUS "baukit: cpp-httplib not found (Debian: libcpp-httplib-dev): baukit-lens serve is off")
  endif()
endif()
if(TARGET baukit_httplib)
  list(APPEND BAUKIT_DEPENDENCY_TARGETS baukit_httplib)
endif()
if(TARGET OpenMP::OpenMP_CXX)
  list(APPEND BAUKIT_DEPENDENCY_TARGETS OpenMP::OpenMP_CXX)
else()
  message(WARNING "baukit: OpenMP not found: at::parallel_for in baukit's kernels will run on one thread")
endif()
