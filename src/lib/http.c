/*
 * http.c - liblockstep's transport: each request runs on the client's libcurl multi handle, so
 * that lockstep_stop() can end a long poll or a pause at once from another thread
 * (curl_multi_wakeup), and so that consecutive requests reuse one kept-alive connection.
 *
 * Not for: what the requests mean (client.c, subscribe.c).
 */
#include "lib/lib.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A page is at most 100 notifications of at most 64 KiB each: well under this. */
#define LS_LIB_REPLY_MAX (32u << 20)
#define CONNECT_TIMEOUT_MS 5000L
/* curl_multi_poll() returns sooner for curl's own timers, and at once on lockstep_stop() */
#define POLL_SLICE_MS 30000

/* ---------------------------------------------------------------- errors and log */

int
ls_lib_error(lockstep_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

int
ls_lib_refused(lockstep_client *c, const char *what, const struct ls_lib_reply *r)
{
    json_t *o = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    if (msg) ls_lib_error(c, LOCKSTEP_EREFUSED, "%s: %s (HTTP %ld)", what, msg, r->status);
    else ls_lib_error(c, LOCKSTEP_EREFUSED, "%s: the server answered HTTP %ld", what, r->status);
    json_decref(o);
    return LOCKSTEP_EREFUSED;
}

void
ls_lib_log(lockstep_client *c, const char *fmt, ...)
{
    char line[640];
    va_list ap;
    if (!c->log_fn) return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->log_fn(line, c->log_arg);
}

/* ---------------------------------------------------------------- replies */

void
ls_lib_reply_release(struct ls_lib_reply *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
    struct ls_lib_reply *r = arg;
    size_t len = size * n;
    if (r->len + len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        char *p;
        while (cap < r->len + len + 1) cap *= 2;
        if (r->len + len + 1 > LS_LIB_REPLY_MAX) {
            r->too_big = 1;
            return 0; /* makes curl stop with CURLE_WRITE_ERROR */
        }
        if (!(p = realloc(r->body, cap))) {
            r->out_of_memory = 1;
            return 0;
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

/* ---------------------------------------------------------------- requests */

static void
prepare(lockstep_client *c, const char *method, const char *url, const char *body,
        long timeout_ms, struct ls_lib_reply *r)
{
    CURL *e = c->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);  /* a library does not touch signals */
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (body || strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? strlen(body) : 0));
    }
}

/* Drives the transfer until it ends, or until a stop when interruptible. */
static int
run(lockstep_client *c, int interruptible, CURLcode *result)
{
    for (;;) {
        int running = 0, left;
        CURLMsg *m;
        if (curl_multi_perform(c->multi, &running) != CURLM_OK) return LOCKSTEP_ENOMEM;
        while ((m = curl_multi_info_read(c->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                *result = m->data.result;
                return 0;
            }
        if (interruptible && atomic_load(&c->stop)) return LS_LIB_STOPPED;
        if (curl_multi_poll(c->multi, NULL, 0, POLL_SLICE_MS, NULL) != CURLM_OK)
            return LOCKSTEP_ENOMEM;
    }
}

int
ls_lib_request(lockstep_client *c, const char *method, const char *path_query,
               const char *body, long timeout_ms, int interruptible, struct ls_lib_reply *r)
{
    size_t n = strlen(c->url) + strlen(path_query) + 1;
    char *url = malloc(n);
    CURLcode result = CURLE_OK;
    int rc;
    memset(r, 0, sizeof *r);
    if (!url) return ls_lib_error(c, LOCKSTEP_ENOMEM, "out of memory");
    snprintf(url, n, "%s%s", c->url, path_query);
    prepare(c, method, url, body, timeout_ms, r);
    free(url);
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
        return ls_lib_error(c, LOCKSTEP_ENOMEM, "cannot start a request (libcurl)");
    rc = run(c, interruptible, &result);
    curl_multi_remove_handle(c->multi, c->easy);
    if (rc == LS_LIB_STOPPED) return rc;
    if (rc) return ls_lib_error(c, rc, "libcurl failed (out of memory?)");
    if (r->out_of_memory) return ls_lib_error(c, LOCKSTEP_ENOMEM, "out of memory for a reply");
    if (r->too_big)
        return ls_lib_error(c, LOCKSTEP_EPROTO, "the reply of %s is over %u MiB", c->url,
                            LS_LIB_REPLY_MAX >> 20);
    if (result != CURLE_OK)
        return ls_lib_error(c, LOCKSTEP_EUNREACHABLE, "cannot reach %s: %s", c->url,
                            curl_easy_strerror(result));
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &r->status);
    return 0;
}

int
ls_lib_pause(lockstep_client *c, long ms)
{
    struct timespec now;
    int64_t end;
    clock_gettime(CLOCK_MONOTONIC, &now);
    end = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + ms;
    for (;;) {
        int64_t left;
        if (atomic_load(&c->stop)) return LS_LIB_STOPPED;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = end - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0) return 0;
        /* no transfer is added: this only waits for the timeout or curl_multi_wakeup() */
        curl_multi_poll(c->multi, NULL, 0, (int)left, NULL);
    }
}
