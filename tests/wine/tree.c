/* Test agent (tests/it/windows.rs): `tree.exe MARKER` starts `tree.exe child MARKER` and
 * both sleep (about five minutes), so a run's timeout has a process tree to end. The test
 * finds them by MARKER in their command lines (Wine's processes are Linux processes) and
 * checks that none outlives the run. */
#include <windows.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc == 2) {
        char self[MAX_PATH], cmd[2 * MAX_PATH + 64];
        STARTUPINFOA si;
        PROCESS_INFORMATION pi;
        GetModuleFileNameA(NULL, self, MAX_PATH);
        snprintf(cmd, sizeof cmd, "\"%s\" child %s", self, argv[1]);
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
