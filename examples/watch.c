/*
 * watch.c - liblockstep's example: prints the notifications of a lockstep server, one line
 * each, as they come; stops cleanly on SIGINT or SIGTERM (lockstep_stop() from another thread).
 *
 *   lockstep-example-watch [--server URL] [--consumer NAME] [--from-start] [--count N]
 *                          [CHANNEL]...
 *
 * Lines: "ID CHANNEL PAYLOAD" (PAYLOAD as compact JSON), or "RESET {...}". Each line is written
 * and flushed before the callback returns, so that the library acknowledges only what is out:
 * killed at any point and run again with the same --consumer, it continues after the last line
 * it printed, or prints again the lines whose acknowledgement did not reach the server.
 * --count N: exits after N lines. $LOCKSTEP_SERVER and $LOCKSTEP_TOKEN are read.
 */
#include <lockstep.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct watch {
    lockstep_client *client;
    long count, printed; /* count 0: no limit */
};

static int
on_notification(const lockstep_notification *n, void *arg)
{
    struct watch *w = arg;
    if (n->is_reset) printf("RESET %s\n", n->reset_json);
    else printf("%lld %s %s\n", (long long)n->id, n->channel, n->payload_json);
    if (fflush(stdout) != 0) return 1; /* not written: not acknowledged either */
    if (w->count && ++w->printed == w->count) lockstep_stop(w->client); /* this one is acked */
    return 0;
}

static void
on_log(const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "lockstep-example-watch: %s\n", msg);
}

/* Waits for SIGINT or SIGTERM (blocked in every thread) and stops the subscription. */
static void *
signal_thread(void *arg)
{
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigwait(&set, &sig);
    lockstep_stop(arg);
    return NULL;
}

static int
usage(void)
{
    fprintf(stderr, "usage: lockstep-example-watch [--server URL] [--consumer NAME] "
                    "[--from-start] [--count N] [CHANNEL]...\n");
    return 2;
}

int
main(int argc, char **argv)
{
    const char *server = getenv("LOCKSTEP_SERVER"), *consumer = NULL;
    const char **channels = calloc((size_t)argc, sizeof *channels);
    struct watch w = {0};
    size_t nchannels = 0;
    int flags = 0, rc;
    char err[256];
    sigset_t set;
    pthread_t sigthread;

    if (!channels) return 1;
    for (int i = 1; i < argc; i++) {
        int more = i + 1 < argc;
        if (strcmp(argv[i], "--server") == 0 && more) server = argv[++i];
        else if (strcmp(argv[i], "--consumer") == 0 && more) consumer = argv[++i];
        else if (strcmp(argv[i], "--count") == 0 && more) w.count = atol(argv[++i]);
        else if (strcmp(argv[i], "--from-start") == 0) flags |= LOCKSTEP_FROM_START;
        else if (argv[i][0] == '-') return free(channels), usage();
        else channels[nchannels++] = argv[i];
    }
    if (!(w.client = lockstep_open(server ? server : "http://127.0.0.1:7070",
                                   getenv("LOCKSTEP_TOKEN"), err, sizeof err))) {
        fprintf(stderr, "lockstep-example-watch: %s\n", err);
        free(channels);
        return 1;
    }
    lockstep_set_log(w.client, on_log, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* the threads made from here on inherit it */
    pthread_create(&sigthread, NULL, signal_thread, w.client);

    rc = lockstep_subscribe(w.client, consumer, channels, nchannels, flags, on_notification, &w);
    if (rc < 0)
        fprintf(stderr, "lockstep-example-watch: %s\n", lockstep_errmsg(w.client));

    pthread_kill(sigthread, SIGTERM); /* when --count ended it: the signal thread ends too */
    pthread_join(sigthread, NULL);
    lockstep_close(w.client);
    free(channels);
    return rc == 0 ? 0 : 1;
}
