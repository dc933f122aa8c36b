# The libFuzzer build of tests/fuzz_parse.c: a configure of its own with
#   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DARJIT_FUZZ=ON
# (tests/run.sh does this; docs/fuzzing.md says how to fuzz longer).
# The parser, verifier and printer are the IR layer alone, so this build
# compiles ir/*.c into the target and needs neither LLVM nor OpenMP.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "ARJIT_FUZZ needs clang (libFuzzer): configure with -DCMAKE_C_COMPILER=clang")
endif()
set(ARJIT_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
                     -fno-omit-frame-pointer -g)
file(GLOB ARJIT_IR_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/ir/*.c)
add_executable(fuzz_parse ${PROJECT_SOURCE_DIR}/tests/fuzz_parse.c ${ARJIT_IR_SOURCES})
target_include_directories(fuzz_parse PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
target_compile_options(fuzz_parse PRIVATE ${ARJIT_WARNINGS} ${ARJIT_FUZZ_FLAGS})
target_link_options(fuzz_parse PRIVATE ${ARJIT_FUZZ_FLAGS})
target_link_libraries(fuzz_parse PRIVATE m)
