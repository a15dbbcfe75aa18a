/* Test agent (tests/it/windows.rs): prints each argument it received, one per line, as the
 * C runtime split the command line, so a test sees whether {prompt} stayed one argument. */
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("[%s]\n", argv[i]);
    return 0;
}
