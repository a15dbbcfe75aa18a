/* Test agent for tests/it/windows.rs (built there with x86_64-w64-mingw32-gcc; never
 * shipped):
 *   tree.exe spawn MARKER   starts `tree.exe child MARKER`, says so, and both sleep five
 *                           minutes: a process tree for a run's timeout to end. The test
 *                           finds them by MARKER in their command lines (Wine's processes
 *                           are Linux processes) and checks that none outlives the run.
 *   tree.exe sleep MS       sleeps MS milliseconds, then prints "slept" (a run to drain).
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "sleep") == 0) {
        Sleep((DWORD)atol(argv[2]));
        printf("slept\n");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "spawn") == 0) {
        char self[MAX_PATH], cmd[2 * MAX_PATH + 64];
        STARTUPINFOA si;
        PROCESS_INFORMATION pi;
        GetModuleFileNameA(NULL, self, MAX_PATH);
        snprintf(cmd, sizeof cmd, "\"%s\" child %s", self, argv[2]);
        ZeroMemory(&si, sizeof si);
        si.cb = sizeof si;
        if (!CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) {
            printf("CreateProcess failed: %lu\n", GetLastError());
            return 2;
        }
        printf("started child %lu\n", pi.dwProcessId);
        fflush(stdout);
    }
    Sleep(300000);
    return 0;
}
