/*
 * lib.h - liblockstep's insides, shared by its files (never installed): the client object and
 * the one HTTP transport every call goes through.
 *
 * Names here are prefixed ls_lib_ so that liblockstep.a, whose symbols all reach the
 * application's link, adds nothing outside the ls_ and lockstep_ prefixes; the shared library
 * exports only the LOCKSTEP_API functions of lockstep.h (-fvisibility=hidden).
 */
#ifndef LS_LIB_H
#define LS_LIB_H

#include "lockstep.h"

#include <curl/curl.h>
#include <stdatomic.h>

/* ls_lib_request() and ls_lib_pause(): lockstep_stop() was called (never returned to users) */
#define LS_LIB_STOPPED 100

struct lockstep_client {
    char *url; /* no trailing slash */
    CURLM *multi; /* its wakeup is how lockstep_stop() interrupts a wait */
    CURL *easy;   /* one, reused: the multi handle keeps its connection alive */
    struct curl_slist *headers;
    atomic_int stop;
    lockstep_log_fn log_fn;
    void *log_arg;
    char err[512];
};

/* A reply's status and body; the body is NUL-terminated and capped (LS_LIB_REPLY_MAX). */
struct ls_lib_reply {
    long status;
    char *body;
    size_t len, cap;
    int too_big, out_of_memory;
};

void ls_lib_reply_release(struct ls_lib_reply *r);

/*
 * One request: method on url + path_query ("/v1/..."), body (JSON text) or NULL, for at most
 * timeout_ms. Returns 0 once an HTTP answer came back (any status: r holds it),
 * LOCKSTEP_EUNREACHABLE when none did, LOCKSTEP_EPROTO when it was too large, LOCKSTEP_ENOMEM,
 * or, when interruptible, LS_LIB_STOPPED as soon as lockstep_stop() is called. The message of a
 * failure is in c->err.
 */
int ls_lib_request(lockstep_client *c, const char *method, const char *path_query,
                   const char *body, long timeout_ms, int interruptible, struct ls_lib_reply *r);

/* Waits ms milliseconds, or less: LS_LIB_STOPPED when lockstep_stop() is called meanwhile. */
int ls_lib_pause(lockstep_client *c, long ms);

/* Sets c->err and returns code. */
int ls_lib_error(lockstep_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A non-2xx reply as LOCKSTEP_EREFUSED, with the server's message when it gave one. */
int ls_lib_refused(lockstep_client *c, const char *what, const struct ls_lib_reply *r);

/* Hands a line to the application's log function, if any. */
void ls_lib_log(lockstep_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
