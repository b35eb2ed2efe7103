/*
Copyright 2026 Flant JSC

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

/* Measurement aid for bench/exporter-callgrind.sh only: valgrind 3.19 (Debian bookworm) does not
 * know the openat2 system call, so under callgrind the exporter would refuse to start. Preloaded into
 * the process under valgrind, this maps openat2 to openat with the same flags. It drops the
 * RESOLVE_* restrictions, so it must never be used outside that instruction count: path safety is
 * tested by crates/exporter/tests/hostile.rs on the real system call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/syscall.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct how { uint64_t flags, mode, resolve; };

long syscall(long number, ...) {
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_openat2) {
        const struct how *h = (const struct how *)a[2];
        return openat((int)a[0], (const char *)a[1], (int)h->flags, (mode_t)h->mode);
    }
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
