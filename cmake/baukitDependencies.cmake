# Finds baukit's dependencies and lists their targets in BAUKIT_DEPENDENCY_TARGETS; shared by the build and
# by the installed package config, so both find the same things.
include(CMakeFindDependencyMacro)
find_dependency(Torch)
find_dependency(range-v3)
find_dependency(nlohmann_json)
find_dependency(fmt)
find_dependency(PkgConfig)
# libtorch's OpenMP builds (Debian's, pytorch.org's) define at::parallel_for inline with `#pragma omp parallel`:
# without OpenMP in *our* compile it runs on one thread. baukit's kernels (the skinny product, the lens
# statistics) rely on it.
find_package(OpenMP QUIET)
pkg_check_modules(BAUKIT_PCRE2 REQUIRED IMPORTED_TARGET GLOBAL libpcre2-8)
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
  target_link_libraries(baukit_torch INTERFACE ${TORCH_LIBRARIES})
  separate_arguments(_baukit_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(baukit_torch INTERFACE ${_baukit_torch_flags})
endif()
set(BAUKIT_DEPENDENCY_TARGETS baukit_torch range-v3::range-v3 nlohmann_json::nlohmann_json fmt::fmt PkgConfig::BAUKIT_PCRE2)
if(TARGET OpenMP::OpenMP_CXX)
  list(APPEND BAUKIT_DEPENDENCY_TARGETS OpenMP::OpenMP_CXX)
else()
  message(WARNING "baukit: OpenMP not found: at::parallel_for in baukit's kernels will run on one thread")
endif()
