#define _GNU_SOURCE
#include "COffloadShim.h"
#include <errno.h>
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_stop(int signal_number) { stop_signal = signal_number; }

int offload_stop_signals_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; /* no SA_RESTART: a blocking wait returns EINTR */
    if (sigaction(SIGINT, &action, NULL) != 0) return -errno;
    if (sigaction(SIGTERM, &action, NULL) != 0) return -errno;
    /* A process may start with them blocked (a parent's spawn passes its mask on): unblock. */
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    if (sigprocmask(SIG_UNBLOCK, &stops, NULL) != 0) return -errno;
    return 0;
}

int offload_stop_requested(void) { return stop_signal; }
