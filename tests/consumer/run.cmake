# Installs baukit-cpp from BINARY into a fresh prefix, then configures, builds and runs tests/consumer against it.
set(prefix "${BINARY}/consumer-prefix")
file(REMOVE_RECURSE "${prefix}" "${BINARY}/consumer-build")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BINARY}" --prefix "${prefix}" COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE}/tests/consumer" -B "${BINARY}/consumer-build" -G Ninja
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER} COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY}/consumer-build" COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${BINARY}/consumer-build/consumer" COMMAND_ERROR_IS_FATAL ANY)
