/* libFuzzer target: the parser, verifier and printer must never crash, leak
 * or hit undefined behaviour, whatever bytes they are given.
 *
 * Built by a separate clang configure (-DARJIT_FUZZ=ON, see docs/fuzzing.md);
 * tests/fuzz_replay.c runs the same entry point over the seed corpus in the
 * ordinary (gcc, sanitizer) builds. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#include "arjit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* opened once: printing is exercised for crashes, its text is not kept */
    static FILE *devnull;
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        return 0;

    aj_diag d = {0};
    aj_module *m = aj_parse_string((const char *)data, size, "fuzz.graph", &d);
    if (!m) {
        aj_diag_print(&d, devnull);   /* the diagnostic path must be safe too */
        return 0;
    }
    aj_bind b;
    aj_bind_defaults(m, &b);
    if (aj_module_infer(m, &b, &d) != 0)
        aj_diag_print(&d, devnull);
    aj_module_print(m, devnull);
    aj_module_free(m);
    return 0;
}
