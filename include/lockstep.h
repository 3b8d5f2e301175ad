/*
 * lockstep.h - the C client of lockstep's cluster messenger (docs/messenger.md): publish
 * notifications and receive them, in order, from a lockstep server.
 *
 * Link with -llockstep (liblockstep.so.0, or liblockstep.a with -lcurl -ljansson);
 * `pkg-config --cflags --libs lockstep` gives the flags of an installed copy.
 *
 *     lockstep_client *c = lockstep_open("http://127.0.0.1:7070", NULL, err, sizeof err);
 *     const char *channels[] = {"cache"};
 *     lockstep_subscribe(c, "web1", channels, 1, 0, on_note, NULL);  // until lockstep_stop()
 *     lockstep_close(c);
 *
 * Delivery is in order and at least once. Each notification is given to the callback in id
 * order; after the callback returned for every notification of a batch (a page of up to 100),
 * a named consumer acknowledges the batch, and the server moves the consumer's position. A
 * process that dies before that acknowledgement receives the batch again when it subscribes
 * with the same consumer name, so a callback must tolerate seeing a notification twice (compare
 * its id with the last one handled). Nothing is skipped: a notification is never acknowledged
 * before its callback returned 0.
 *
 * Threads: a lockstep_client is used by one thread at a time (open one client per thread; they
 * are cheap). The exception is lockstep_stop(), which any thread may call at any time between
 * lockstep_open() and lockstep_close(). The library calls curl_global_init() once, the first
 * time lockstep_open() is called, and never curl_global_cleanup(): an application that uses
 * libcurl itself and is single-threaded until then need do nothing.
 *
 * Errors: functions return 0 (or a positive value, described with each) on success and a
 * negative LOCKSTEP_E* code on failure; lockstep_errmsg() then says what happened in a sentence.
 */
#ifndef LOCKSTEP_H
#define LOCKSTEP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOCKSTEP_API __attribute__((visibility("default")))
#else
#define LOCKSTEP_API
#endif

#define LOCKSTEP_VERSION "0.1.0"

/* Return codes. */
#define LOCKSTEP_OK 0
#define LOCKSTEP_QUEUED 1        /* lockstep_notify: accepted by a replica, not yet published */
#define LOCKSTEP_EINVAL (-1)     /* a bad argument (a NULL client, a payload that is not JSON) */
#define LOCKSTEP_ENOMEM (-2)     /* out of memory */
#define LOCKSTEP_EUNREACHABLE (-3) /* no HTTP answer: connection refused, reset, timed out */
#define LOCKSTEP_EREFUSED (-4)   /* the server answered with an error (bad token, bad channel) */
#define LOCKSTEP_EPROTO (-5)     /* the server's reply is not what lockstep sends */

/* lockstep_subscribe() flags */
#define LOCKSTEP_FROM_START 1 /* a new consumer starts at the oldest retained notification, not
                                 at the head (only when the consumer is created) */

typedef struct lockstep_client lockstep_client;

/*
 * One notification, valid only during the callback (copy what you keep).
 *
 * A reset (is_reset = 1) is not a notification: it says that the consumer's position was older
 * than what the server still keeps, so notifications were lost to it, and it continues from the
 * oldest one retained. Rebuild whatever the notifications keep up to date. reset_json is the
 * server's event ({"type":"reset","reason":...,"oldest":N,...}), id is the position delivery
 * continues after, channel is "" and payload_json "null".
 */
typedef struct lockstep_notification {
    int64_t id;               /* the same on every server of the site, increasing */
    const char *channel;      /* "content" for the store's own changes */
    const char *payload_json; /* the payload as compact JSON text */
    int64_t time_ms;          /* when it was published, ms since the Unix epoch (UTC) */
    int is_reset;
    const char *reset_json; /* NULL unless is_reset */
} lockstep_notification;

/*
 * Called for each notification in order. Return 0 when it is handled; any other value stops
 * lockstep_subscribe(), which returns that value, without acknowledging this notification (the
 * ones before it are acknowledged). To stop after this one and keep it acknowledged, call
 * lockstep_stop() and return 0. Return positive values, so that they cannot be taken for the
 * library's own (negative) errors. The callback must not call other functions of this client
 * but lockstep_stop().
 */
typedef int (*lockstep_callback)(const lockstep_notification *n, void *arg);

/*
 * Messages about the connection, for a log: "cannot reach ...; trying again", "connected again".
 * Called on the thread that runs lockstep_subscribe(). msg is valid during the call.
 */
typedef void (*lockstep_log_fn)(const char *msg, void *arg);

/*
 * A client of the server at url ("http://host:port" or "https://..."; a trailing slash is
 * ignored). token: a bearer token, or NULL when the server needs none. Nothing is sent yet, so
 * this succeeds while the server is away. Returns NULL on failure, with a message in err
 * (err may be NULL).
 */
LOCKSTEP_API lockstep_client *lockstep_open(const char *url, const char *token, char *err,
                                            size_t errlen);

/* Frees the client. Not while lockstep_subscribe() runs on it. NULL is allowed. */
LOCKSTEP_API void lockstep_close(lockstep_client *c);

/*
 * Publishes payload_json (any JSON text, at most 64 KiB once compacted) on channel. Returns 0
 * with the notification's id in *id_out (id_out may be NULL), or LOCKSTEP_QUEUED when a replica
 * accepted it durably but could not reach the primary in time: it is published as soon as the
 * primary is reachable, and *id_out is -1. Does not retry: a LOCKSTEP_EUNREACHABLE left the
 * notification unpublished, or published with its reply lost.
 */
LOCKSTEP_API int lockstep_notify(lockstep_client *c, const char *channel, const char *payload_json,
                                 int64_t *id_out);

/*
 * Receives the notifications on channels (nchannels of them; 0: every channel, "content"
 * included) and calls cb for each, in order, until lockstep_stop() is called or cb returns
 * non-zero. Long polls the server; when the server is away (connection refused or cut, HTTP
 * 5xx) it tries again, with a pause growing from 0.1 s to 5 s, for as long as it takes.
 *
 * consumer: a name (1 to 64 of A-Z a-z 0-9 . _ : -) whose position the server keeps. The server
 * creates it at the first use, at the head or with LOCKSTEP_FROM_START at the oldest retained
 * notification; later it continues after the position acknowledged last (so an operator's
 * `lockstep consumers rewind` is followed). Channels given replace the consumer's stored ones;
 * none keeps them. consumer NULL: an anonymous reader, whose position lives in this call only.
 *
 * Returns 0 after lockstep_stop(), cb's value when cb stopped it, or a negative code when the
 * server refused the request (a bad token or role, a bad channel or consumer name, a position
 * this server does not have): those do not pass by trying again. When lockstep_stop() or the
 * callback ends it, what was handled is acknowledged before it returns (one try of at most 2 s).
 */
LOCKSTEP_API int lockstep_subscribe(lockstep_client *c, const char *consumer,
                                    const char *const *channels, size_t nchannels, int flags,
                                    lockstep_callback cb, void *arg);

/*
 * Makes lockstep_subscribe() return 0 soon: at once when it is waiting for the server or
 * pausing between tries, after the current callback when it is delivering. Any thread may call
 * it, once lockstep_open() returned and until lockstep_close() is called. A stop that comes
 * while no lockstep_subscribe() runs makes the next one return at once.
 */
LOCKSTEP_API void lockstep_stop(lockstep_client *c);

/* Where connection messages go (default: nowhere). */
LOCKSTEP_API void lockstep_set_log(lockstep_client *c, lockstep_log_fn fn, void *arg);

/* The last error on this client, in a sentence ("" when none); valid until the next call. */
LOCKSTEP_API const char *lockstep_errmsg(const lockstep_client *c);

/* A short text for a return code. */
LOCKSTEP_API const char *lockstep_strerror(int code);

/* The library's version (LOCKSTEP_VERSION of the build). */
LOCKSTEP_API const char *lockstep_version(void);

#ifdef __cplusplus
}
#endif

#endif
