#ifdef __linux__
#define _GNU_SOURCE
#include "OffloadLinux.h"

#include <errno.h>
#include <sched.h>
#include <sys/resource.h>

/* PRIO_PROCESS with who 0 names the calling thread: Linux keeps a nice value per thread. */
int offload_thread_set_nice(int nice) {
    return setpriority(PRIO_PROCESS, 0, nice) == 0 ? 0 : -errno;
}

int offload_thread_nice(int *nice) {
    errno = 0;
    int value = getpriority(PRIO_PROCESS, 0);
    if (value == -1 && errno != 0) return -errno;
    *nice = value;
    return 0;
}
int offload_cpus_available(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
    return CPU_COUNT(&set);
}
#endif // __linux__
