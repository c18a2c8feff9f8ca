# Finds baukit's dependencies and lists their targets in BAUKIT_DEPENDENCY_TARGETS; shared by the build and
# by the installed package config, so both find the same things.
include(CMakeFindDependencyMacro)
find_dependency(Torch)
find_dependency(range-v3)
find_dependency(nlohmann_json)
find_dependency(fmt)
find_dependency(PkgConfig)
pkg_check_modules(BAUKIT_PCRE2 REQUIRED IMPORTED_TARGET GLOBAL libpcre2-8)
if(NOT TARGET baukit_torch)
  # Debian's TorchConfig gives a library list rather than one target: wrap it.
  add_library(baukit_torch INTERFACE IMPORTED GLOBAL)
  target_link_libraries(baukit_torch INTERFACE ${TORCH_LIBRARIES})
  separate_arguments(_baukit_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(baukit_torch INTERFACE ${_baukit_torch_flags})
endif()
set(BAUKIT_DEPENDENCY_TARGETS baukit_torch range-v3::range-v3 nlohmann_json::nlohmann_json fmt::fmt PkgConfig::BAUKIT_PCRE2)
