/* Test-harness shim, never shipped: Debian's Wine 8 has no bcryptprimitives.dll, whose
 * ProcessPrng Rust's std (1.78+) calls on Windows for its random numbers (HashMap keys), so
 * a Rust .exe does not even load under it. This DLL, placed beside the .exe under test,
 * exports ProcessPrng implemented with advapi32's RtlGenRandom (SystemFunction036), which
 * Wine has. Built by tests/wine/run with x86_64-w64-mingw32-gcc. Real Windows (10+) has the
 * DLL and never sees this one. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
