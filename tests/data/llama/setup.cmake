# ctest fixture: writes the test checkpoints of SOURCE/fixtures.json (the Llama architecture's here, Gemma's and
# GPT-NeoX's in ../families) into DEST with make-random-checkpoint
# (TOOL), each with its real tokenizer from VOCABULARIES, and checks each weight file's SHA-256 against the
# checksums the references (<fixture>.json) were computed on: the weights are a deterministic hash of the seed,
# the same bits on every machine, so a mismatch means the generator changed and the references must be remade.
file(READ ${SOURCE}/fixtures.json spec)
string(JSON count LENGTH "${spec}" fixtures)
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  foreach(key name family preset tokenizer seed shards)
    string(JSON ${key} GET "${spec}" fixtures ${i} ${key})
  endforeach()
  string(JSON dtype ERROR_VARIABLE no_dtype GET "${spec}" fixtures ${i} dtype)  # optional: the preset's otherwise
  set(dtype_option)
  if(NOT no_dtype)
    set(dtype_option --dtype ${dtype})
  endif()
  set(out ${DEST}/${name})
  file(REMOVE_RECURSE ${out})
  execute_process(COMMAND ${TOOL} --family ${family} --preset ${preset} --tokenizer ${VOCABULARIES}/${tokenizer}
                          --seed ${seed} --shards ${shards} ${dtype_option} --threads 1 --out ${out}
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "fixtures: make-random-checkpoint for ${name} failed (${rc})")
  endif()
  file(READ ${SOURCE}/${name}.json reference)
  string(JSON files LENGTH "${reference}" checksums)
  math(EXPR last_file "${files} - 1")
  foreach(f RANGE ${last_file})
    string(JSON file MEMBER "${reference}" checksums ${f})
    string(JSON expected GET "${reference}" checksums ${file})
    file(SHA256 ${out}/${file} actual)
    if(NOT actual STREQUAL expected)
      message(FATAL_ERROR "fixtures: ${name}/${file} has SHA-256 ${actual}, but the reference was computed on "
                          "${expected}: remake the references (${SOURCE}/README.md)")
    endif()
  endforeach()
endforeach()
