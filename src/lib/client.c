/*
 * client.c - liblockstep's client object (lockstep.h): open and close, publishing, stop, and
 * the error texts.
 *
 * Not for: receiving notifications (subscribe.c), the HTTP transport (http.c).
 */
#include "lib/lib.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_TIMEOUT_MS 30000L
#define TOKEN_MAX 512

/* ---------------------------------------------------------------- open and close */

static CURLcode global_init_result;

static void
global_init(void)
{
    global_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static lockstep_client *
open_fail(lockstep_client *c, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    lockstep_close(c);
    return NULL;
}

/* "http://h" or "https://h" with something after the scheme; the length without trailing '/' */
static size_t
url_base_len(const char *url)
{
    size_t n, scheme;
    if (strncmp(url, "http://", 7) == 0) scheme = 7;
    else if (strncmp(url, "https://", 8) == 0) scheme = 8;
    else return 0;
    n = strlen(url);
    while (n > scheme && url[n - 1] == '/') n--;
    return n > scheme ? n : 0;
}

lockstep_client *
lockstep_open(const char *url, const char *token, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    lockstep_client *c = NULL;
    size_t n;
    if (err && errlen) err[0] = '\0';
    if (!url || !(n = url_base_len(url)))
        return open_fail(c, err, errlen,
                         "the server's URL must be http://HOST:PORT or https://...");
    if (token && (strlen(token) > TOKEN_MAX || strpbrk(token, "\r\n")))
        return open_fail(c, err, errlen, "the token is not a lockstep token");
    pthread_once(&once, global_init);
    if (global_init_result != CURLE_OK)
        return open_fail(c, err, errlen, "libcurl does not start: %s",
                         curl_easy_strerror(global_init_result));
    if (!(c = calloc(1, sizeof *c)) || !(c->url = strndup(url, n)))
        return open_fail(c, err, errlen, "out of memory");
    atomic_init(&c->stop, 0);
    if (!(c->multi = curl_multi_init()) || !(c->easy = curl_easy_init()))
        return open_fail(c, err, errlen, "libcurl cannot make a handle (out of memory?)");
    {
        struct curl_slist *h = NULL, *next;
        const char *lines[] = {"Expect:", "Accept: application/json",
                               "Content-Type: application/json"};
        for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
            if (!(next = curl_slist_append(h, lines[i]))) goto nomem;
            h = next;
        }
        if (token) {
            char line[TOKEN_MAX + 32];
            snprintf(line, sizeof line, "Authorization: Bearer %s", token);
            next = curl_slist_append(h, line);
            memset(line, 0, sizeof line); /* a secret: leave no copy behind */
            if (!next) goto nomem;
            h = next;
        }
        c->headers = h;
        goto done;
    nomem:
        curl_slist_free_all(h);
        return open_fail(c, err, errlen, "out of memory");
    done:;
    }
    return c;
}

void
lockstep_close(lockstep_client *c)
{
    if (!c) return;
    if (c->easy) curl_easy_cleanup(c->easy);
    if (c->multi) curl_multi_cleanup(c->multi);
    curl_slist_free_all(c->headers);
    free(c->url);
    free(c);
}

/* ---------------------------------------------------------------- publishing */

/* The request body {"channel":C,"payload":P}, or NULL with c->err set. */
static char *
notify_body(lockstep_client *c, const char *channel, const char *payload_json, int *rc)
{
    json_error_t jerr;
    json_t *payload = json_loads(payload_json, JSON_DECODE_ANY, &jerr), *o;
    char *text;
    if (!payload) {
        *rc = ls_lib_error(c, LOCKSTEP_EINVAL, "the payload is not JSON: %s (at %d:%d)",
                           jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    o = json_pack("{s:s,s:o}", "channel", channel, "payload", payload);
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        *rc = ls_lib_error(c, LOCKSTEP_EINVAL, "the channel name is not UTF-8, or out of memory");
    return text;
}

int
lockstep_notify(lockstep_client *c, const char *channel, const char *payload_json,
                int64_t *id_out)
{
    struct ls_lib_reply r;
    json_t *o = NULL, *id;
    char *body;
    int rc;
    if (id_out) *id_out = -1;
    if (!c) return LOCKSTEP_EINVAL;
    c->err[0] = '\0';
    if (!channel || !payload_json)
        return ls_lib_error(c, LOCKSTEP_EINVAL, "lockstep_notify needs a channel and a payload");
    if (!(body = notify_body(c, channel, payload_json, &rc))) return rc;
    rc = ls_lib_request(c, "POST", "/v1/notify", body, NOTIFY_TIMEOUT_MS, 0, &r);
    free(body);
    if (rc) return rc;
    if (r.status != 200 && r.status != 202) {
        rc = ls_lib_refused(c, "publishing", &r);
        goto out;
    }
    if (!(o = json_loadb(r.body ? r.body : "", r.len, 0, NULL))) {
        rc = ls_lib_error(c, LOCKSTEP_EPROTO, "the reply to a notification is not JSON");
        goto out;
    }
    if (r.status == 202) { /* a replica keeps it until the primary is reachable */
        rc = LOCKSTEP_QUEUED;
        goto out;
    }
    id = json_array_get(json_object_get(o, "ids"), 0);
    if (!json_is_integer(id)) {
        rc = ls_lib_error(c, LOCKSTEP_EPROTO, "the reply to a notification has no id");
        goto out;
    }
    if (id_out) *id_out = json_integer_value(id);
    rc = 0;
out:
    json_decref(o);
    ls_lib_reply_release(&r);
    return rc;
}

/* ---------------------------------------------------------------- the rest */

void
lockstep_stop(lockstep_client *c)
{
    if (!c) return;
    atomic_store(&c->stop, 1);
    curl_multi_wakeup(c->multi); /* ends a curl_multi_poll() now, or the next one at once */
}

void
lockstep_set_log(lockstep_client *c, lockstep_log_fn fn, void *arg)
{
    if (!c) return;
    c->log_fn = fn;
    c->log_arg = arg;
}

const char *
lockstep_errmsg(const lockstep_client *c)
{
    return c ? c->err : "no client";
}

const char *
lockstep_strerror(int code)
{
    switch (code) {
    case LOCKSTEP_OK: return "success";
    case LOCKSTEP_QUEUED: return "queued on a replica";
    case LOCKSTEP_EINVAL: return "invalid argument";
    case LOCKSTEP_ENOMEM: return "out of memory";
    case LOCKSTEP_EUNREACHABLE: return "the server cannot be reached";
    case LOCKSTEP_EREFUSED: return "the server refused the request";
    case LOCKSTEP_EPROTO: return "the server's reply is not understood";
    default: return "unknown code";
    }
}

const char *
lockstep_version(void)
{
    return LOCKSTEP_VERSION;
}
