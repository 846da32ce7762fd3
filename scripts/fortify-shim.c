/* Debian builds LLVM's libunwind.a with _FORTIFY_SOURCE, so it calls glibc's __fprintf_chk on its
 * error paths; musl has no such function. This one forwards to vfprintf (the fortify checks are
 * glibc's own and have no musl equivalent). Linked into the static builds only. */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *stream, int flag, const char *format, ...) {
    (void)flag;
    va_list args;
    va_start(args, format);
    int written = vfprintf(stream, format, args);
    va_end(args);
    return written;
}
