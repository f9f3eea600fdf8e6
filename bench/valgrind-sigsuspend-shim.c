/* Preloaded into raftdb when it runs under valgrind 3.19 (bench/profile.sh).
 *
 * Swift's async main ends in dispatch_main(), whose signal thread calls sigsuspend() with a mask in
 * libdispatch's read-only data. Valgrind 3.19 sanitises the mask in place before the syscall, faults
 * on the read-only page and aborts ("VALGRIND INTERNAL ERROR ... SIGSEGV"). Passing a writable copy
 * changes nothing for the program and lets callgrind run it. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int sigsuspend(const sigset_t *mask) {
  sigset_t copy = *mask;
  return (int)syscall(SYS_rt_sigsuspend, &copy, _NSIG / 8);
}
