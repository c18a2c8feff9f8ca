# Installs baukit-cpp from BINARY into a fresh prefix, then configures, builds and runs tests/consumer against it;
# then runs the installed baukit-lens from a copy of the prefix elsewhere, with the source tree hidden, on the
# embedded default model it must find beside itself.
set(prefix "${BINARY}/consumer-prefix")
file(REMOVE_RECURSE "${prefix}" "${BINARY}/consumer-build")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BINARY}" --prefix "${prefix}" COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE}/tests/consumer" -B "${BINARY}/consumer-build" -G Ninja
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER} COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY}/consumer-build" COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${BINARY}/consumer-build/consumer" COMMAND_ERROR_IS_FATAL ANY)

# my-lens: a family registered outside the library ("my_gpt2"), through baukit-lens's command as a library call,
# gives the same lens as baukit-lens on the same weights under model_type "gpt2".
set(mine "${BINARY}/consumer-build/my-gpt2")
file(REMOVE_RECURSE "${mine}")
file(COPY "${SOURCE}/models/default/" DESTINATION "${mine}")
file(READ "${mine}/config.json" config)
string(JSON config SET "${config}" model_type "\"my_gpt2\"")
file(WRITE "${mine}/config.json" "${config}")
execute_process(COMMAND "${BINARY}/consumer-build/my-lens" --model "${mine}" --json "${mine}/mine.json"
                        --out "${mine}/mine.html" --threads 1 COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
execute_process(COMMAND "${prefix}/bin/baukit-lens" --model "${SOURCE}/models/default" --json "${mine}/theirs.json"
                        --out "${mine}/theirs.html" --threads 1 COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
file(READ "${mine}/mine.json" mine_json)
file(READ "${mine}/theirs.json" theirs_json)
# (The consumer is built with its own flags, so probabilities may differ in the last float bits: the discrete
# results must be the same.)
foreach(view lens delta_lens)
  foreach(field rows tokens token_strings rank_of_final_top1)
    string(JSON mine_field GET "${mine_json}" ${view} ${field})
    string(JSON theirs_field GET "${theirs_json}" ${view} ${field})
    if(NOT mine_field STREQUAL theirs_field)
      message(FATAL_ERROR "my-lens on model_type my_gpt2 gave another ${view} ${field} than baukit-lens on gpt2")
    endif()
  endforeach()
endforeach()
execute_process(COMMAND "${BINARY}/consumer-build/my-lens" --model "${mine}" --topk 0 RESULT_VARIABLE status
                        ERROR_VARIABLE err OUTPUT_QUIET)
if(status EQUAL 0 OR NOT err MATCHES "topk")
  message(FATAL_ERROR "my-lens --topk 0 did not fail naming the option (${status}): ${err}")
endif()
message(STATUS "my-lens (a family registered outside the library) matches baukit-lens")

foreach(installed bin/baukit-lens bin/make-random-checkpoint share/baukit/models/default/config.json
                  share/baukit/models/default/model.safetensors share/baukit/models/default/vocab.json)
  if(NOT EXISTS "${prefix}/${installed}")
    message(FATAL_ERROR "cmake --install did not install ${installed}")
  endif()
endforeach()

# A relocated copy of the prefix, outside the source tree (which holds the build folder and the first prefix).
string(RANDOM LENGTH 8 suffix)
set(moved "/tmp/baukit-installed-${suffix}")
file(REMOVE_RECURSE "${moved}")
file(COPY "${prefix}/" DESTINATION "${moved}")
set(lens "${moved}/bin/baukit-lens" --out "${moved}/lens.html" --json "${moved}/lens.json" --threads 1)
# Root (as CI is) hides the source tree in a private mount namespace; elsewhere the relocated copy runs in place,
# and the model it reports using must still be the installed one.
set(hide unshare --mount --propagation private sh -c "mount -t tmpfs tmpfs \"$0\" && exec \"$@\"" "${SOURCE}")
execute_process(COMMAND ${hide} test ! -e "${SOURCE}/CMakeLists.txt" RESULT_VARIABLE can_hide OUTPUT_QUIET ERROR_QUIET)
if(can_hide EQUAL 0)
  message(STATUS "running the installed baukit-lens with ${SOURCE} hidden")
else()
  message(STATUS "no private mount namespace here: running the relocated baukit-lens in place")
  set(hide)
endif()
execute_process(COMMAND ${hide} ${lens} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the installed baukit-lens failed (${status}): ${err}")
endif()
file(READ "${moved}/lens.json" json)
string(JSON model GET "${json}" model)
file(REMOVE_RECURSE "${moved}")
if(NOT model STREQUAL "${moved}/share/baukit/models/default")
  message(FATAL_ERROR "the installed baukit-lens used the model ${model}, not the one installed beside it")
endif()
message(STATUS "installed baukit-lens: ${out}")
