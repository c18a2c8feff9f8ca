# ctest fixture: installs the browser test's npm package (playwright-core, pinned by package-lock.json) into DEST.
foreach(file package.json package-lock.json explorer.mjs)
  configure_file(${SOURCE}/${file} ${DEST}/${file} COPYONLY)
endforeach()
include(${CMAKE_CURRENT_LIST_DIR}/../npm_ci.cmake)
baukit_npm_ci("browser tests")
