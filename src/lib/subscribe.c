/*
 * subscribe.c - lockstep_subscribe(): long polls GET /v1/notifications, hands each notification
 * to the application's callback in order, and acknowledges what the callbacks handled
 * (POST /v1/consumers/NAME/ack) before it asks for more. When the server is away it pauses and
 * tries again, for as long as it takes; only lockstep_stop(), the callback or a refusal that no
 * retry can change (a bad token, a bad name) ends it.
 *
 * A named consumer's position is the server's: each poll continues after what was acknowledged
 * last, so an operator's rewind is followed. An anonymous reader's position is kept here and
 * sent as `after`.
 *
 * Not for: the HTTP transport (http.c).
 */
#include "lib/lib.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_LIMIT 100
#define POLL_WAIT_MS 25000
/* beyond the long poll's own wait: a server that vanished without closing the connection */
#define POLL_TIMEOUT_MS (POLL_WAIT_MS + 15000L)
#define ACK_TIMEOUT_MS 5000L
#define LAST_ACK_TIMEOUT_MS 2000L /* on the way out: one short try */
#define BACKOFF_MIN_MS 100L
#define BACKOFF_MAX_MS 5000L

/* deliver(): the callback returned non-zero (its value is in sub.cb_rc) */
#define CALLBACK_STOPPED 101

struct sub {
    lockstep_client *c;
    lockstep_callback cb;
    void *arg;
    char *query;    /* GET path and the parameters that never change */
    char *ack_path; /* NULL: anonymous */
    int64_t handled; /* the position after what the callbacks handled; -1: none yet */
    int64_t acked;   /* the last id the server acknowledged; -1: none yet */
    int unacked;     /* handled moved since the last ack */
    int cb_rc;
    int failures;      /* tries in a row that found the server away */
    int64_t away_since; /* monotonic ms */
    unsigned seed;      /* the pauses' jitter */
};

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The server's "2026-12-03T12:00:00.123Z" as ms since the epoch; 0 when it is not that. */
static int64_t
time_ms(const char *s)
{
    struct tm tm = {0};
    int ms = 0, n = 0;
    time_t t;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return 0;
    if (s[n] == '.') sscanf(s + n + 1, "%3d", &ms);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    if ((t = timegm(&tm)) == (time_t)-1) return 0;
    return (int64_t)t * 1000 + ms;
}

/* ---------------------------------------------------------------- the requests */

/* HTTP statuses that mean "away for now": the server or a proxy in front of it will be back. */
static int
away_status(long status)
{
    return status >= 500 || status == 408 || status == 429;
}

/* An answer that is not 2xx: away (try again) or refused (give up). */
static int
not_ok(struct sub *s, const char *what, const struct ls_lib_reply *r)
{
    ls_lib_refused(s->c, what, r);
    return away_status(r->status) ? LOCKSTEP_EUNREACHABLE : LOCKSTEP_EREFUSED;
}

static int
ack(struct sub *s, long timeout_ms)
{
    struct ls_lib_reply r;
    char body[48];
    int rc;
    snprintf(body, sizeof body, "{\"id\":%lld}", (long long)s->handled);
    if ((rc = ls_lib_request(s->c, "POST", s->ack_path, body, timeout_ms, 0, &r))) return rc;
    if (r.status == 200) {
        s->acked = s->handled;
        s->unacked = 0;
    } else if (r.status == 404) {
        /* removed by an operator (`lockstep consumers rm`): the next poll makes it anew */
        ls_lib_log(s->c, "the consumer was removed from the server; it starts again");
        s->unacked = 0;
    } else {
        rc = not_ok(s, "acknowledging", &r);
    }
    ls_lib_reply_release(&r);
    return rc;
}

/* One long poll; *page is its reply. */
static int
poll_page(struct sub *s, json_t **page)
{
    struct ls_lib_reply r;
    char *path;
    size_t n = strlen(s->query) + 32;
    int rc;
    *page = NULL;
    if (!(path = malloc(n))) return ls_lib_error(s->c, LOCKSTEP_ENOMEM, "out of memory");
    if (!s->ack_path && s->handled >= 0)
        snprintf(path, n, "%s&after=%lld", s->query, (long long)s->handled);
    else
        snprintf(path, n, "%s", s->query);
    rc = ls_lib_request(s->c, "GET", path, NULL, POLL_TIMEOUT_MS, 1, &r);
    free(path);
    if (rc) return rc;
    if (r.status != 200) rc = not_ok(s, "reading notifications", &r);
    else if (!(*page = json_loadb(r.body ? r.body : "", r.len, 0, NULL)))
        rc = ls_lib_error(s->c, LOCKSTEP_EPROTO, "the notifications' reply is not JSON");
    ls_lib_reply_release(&r);
    return rc;
}

/* ---------------------------------------------------------------- delivery */

static int
call(struct sub *s, const lockstep_notification *n)
{
    if ((s->cb_rc = s->cb(n, s->arg)) != 0) return CALLBACK_STOPPED;
    return 0;
}

static int
deliver_reset(struct sub *s, json_t *reset)
{
    json_t *oldest = json_object_get(reset, "oldest");
    char *text = json_dumps(reset, JSON_COMPACT);
    lockstep_notification n = {.channel = "", .payload_json = "null", .is_reset = 1};
    int rc;
    if (!text) return ls_lib_error(s->c, LOCKSTEP_ENOMEM, "out of memory");
    n.id = json_is_integer(oldest) ? json_integer_value(oldest) - 1 : -1;
    n.reset_json = text;
    if (!(rc = call(s, &n)) && n.id >= 0) {
        s->handled = n.id; /* acknowledging this much is what makes the server drop the reset */
        s->unacked = 1;
    }
    free(text);
    return rc;
}

static int
deliver_note(struct sub *s, json_t *o)
{
    json_t *id = json_object_get(o, "id"), *channel = json_object_get(o, "channel"),
           *payload = json_object_get(o, "payload");
    lockstep_notification n = {0};
    char *text;
    int rc;
    if (!json_is_integer(id) || !json_is_string(channel) || !payload)
        return ls_lib_error(s->c, LOCKSTEP_EPROTO, "a notification without id, channel or payload");
    if (!(text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY)))
        return ls_lib_error(s->c, LOCKSTEP_ENOMEM, "out of memory");
    n.id = json_integer_value(id);
    n.channel = json_string_value(channel);
    n.payload_json = text;
    n.time_ms = time_ms(json_string_value(json_object_get(o, "time")));
    if (!(rc = call(s, &n))) {
        s->handled = n.id;
        s->unacked = 1;
    }
    free(text);
    return rc;
}

/*
 * Hands a page to the callback, one notification at a time, the reset first. handled follows;
 * a stop is looked at between two callbacks, so that what was handled is acknowledged soon.
 */
static int
deliver(struct sub *s, json_t *page)
{
    json_t *notes = json_object_get(page, "notifications"), *next = json_object_get(page, "next"),
           *reset = json_object_get(page, "reset"), *o;
    size_t i;
    int rc;
    if (!json_is_array(notes) || !json_is_integer(next))
        return ls_lib_error(s->c, LOCKSTEP_EPROTO, "the notifications' reply lacks its fields");
    if (reset && (rc = deliver_reset(s, reset))) return rc;
    json_array_foreach(notes, i, o)
    {
        if (atomic_load(&s->c->stop)) return LS_LIB_STOPPED;
        if ((rc = deliver_note(s, o))) return rc;
    }
    /* next may be past the last notification (entries of other channels) or, after an
     * operator's rewind, below what was acknowledged: it is the server's position either way */
    if (json_integer_value(next) != s->acked) s->unacked = 1;
    s->handled = json_integer_value(next);
    return 0;
}

/* ---------------------------------------------------------------- the loop */

/* The server is away: say so once, then pause, longer each time (with jitter). */
static int
pause_after_failure(struct sub *s)
{
    long ms = BACKOFF_MIN_MS << (s->failures < 6 ? s->failures : 6);
    if (ms > BACKOFF_MAX_MS) ms = BACKOFF_MAX_MS;
    ms = ms * 3 / 4 + (long)(rand_r(&s->seed) % (unsigned)(ms / 2 + 1)); /* 75% .. 125% */
    if (s->failures++ == 0) {
        s->away_since = mono_ms();
        ls_lib_log(s->c, "%s; trying again", s->c->err);
    }
    return ls_lib_pause(s->c, ms);
}

static void
connected(struct sub *s)
{
    if (!s->failures) return;
    ls_lib_log(s->c, "connected again to %s after %.1f s", s->c->url,
               (double)(mono_ms() - s->away_since) / 1000.0);
    s->failures = 0;
}

/* The GET path with everything but `after`, or NULL. */
static char *
query_of(lockstep_client *c, const char *consumer, const char *const *channels,
         size_t nchannels, int flags)
{
    char *out = NULL, *q;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) return NULL;
    fprintf(f, "/v1/notifications?limit=%d&wait_ms=%d%s", POLL_LIMIT, POLL_WAIT_MS,
            flags & LOCKSTEP_FROM_START ? "&from=start" : "");
    for (size_t i = 0; i <= nchannels; i++) {
        const char *v = i < nchannels ? channels[i] : consumer;
        if (!v) continue;
        if (!(q = curl_easy_escape(c->easy, v, 0))) {
            fclose(f);
            free(out);
            return NULL;
        }
        fprintf(f, "&%s=%s", i < nchannels ? "channel" : "consumer", q);
        curl_free(q);
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static char *
ack_path_of(lockstep_client *c, const char *consumer)
{
    char *q = curl_easy_escape(c->easy, consumer, 0), *path;
    size_t n;
    if (!q) return NULL;
    n = strlen(q) + 32;
    if ((path = malloc(n))) snprintf(path, n, "/v1/consumers/%s/ack", q);
    curl_free(q);
    return path;
}

static int
check_args(lockstep_client *c, const char *consumer, const char *const *channels,
           size_t nchannels, int flags, lockstep_callback cb)
{
    if (!cb) return ls_lib_error(c, LOCKSTEP_EINVAL, "lockstep_subscribe needs a callback");
    if (flags & ~LOCKSTEP_FROM_START)
        return ls_lib_error(c, LOCKSTEP_EINVAL, "unknown flags 0x%x", (unsigned)flags);
    if (consumer && !*consumer)
        return ls_lib_error(c, LOCKSTEP_EINVAL, "an empty consumer name (NULL: anonymous)");
    if (nchannels && !channels) return ls_lib_error(c, LOCKSTEP_EINVAL, "channels is NULL");
    for (size_t i = 0; i < nchannels; i++)
        if (!channels[i] || !*channels[i])
            return ls_lib_error(c, LOCKSTEP_EINVAL, "channel %zu is NULL or empty", i);
    return 0;
}

int
lockstep_subscribe(lockstep_client *c, const char *consumer, const char *const *channels,
                   size_t nchannels, int flags, lockstep_callback cb, void *arg)
{
    struct sub s = {.c = c, .cb = cb, .arg = arg, .handled = -1, .acked = -1};
    json_t *page = NULL;
    int rc;
    if (!c) return LOCKSTEP_EINVAL;
    c->err[0] = '\0';
    if ((rc = check_args(c, consumer, channels, nchannels, flags, cb))) return rc;
    s.seed = (unsigned)mono_ms() ^ (unsigned)(uintptr_t)&s;
    if (!(s.query = query_of(c, consumer, channels, nchannels, flags)) ||
        (consumer && !(s.ack_path = ack_path_of(c, consumer)))) {
        rc = ls_lib_error(c, LOCKSTEP_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        if (atomic_load(&c->stop)) {
            rc = LS_LIB_STOPPED;
            break;
        }
        /* acknowledged before the next page: a named consumer's position is where it reads */
        rc = s.ack_path && s.unacked ? ack(&s, ACK_TIMEOUT_MS) : poll_page(&s, &page);
        if (rc == LOCKSTEP_EUNREACHABLE) {
            if ((rc = pause_after_failure(&s))) break;
            continue;
        }
        if (rc) break;
        connected(&s);
        if (page) {
            rc = deliver(&s, page);
            json_decref(page);
            page = NULL;
            if (rc) break;
        }
    }
    if ((rc == LS_LIB_STOPPED || rc == CALLBACK_STOPPED) && s.ack_path && s.unacked)
        ack(&s, LAST_ACK_TIMEOUT_MS); /* else: delivered again next time (at least once) */
    if (rc == LS_LIB_STOPPED) {
        atomic_store(&c->stop, 0); /* consumed: the next lockstep_subscribe() runs */
        rc = 0;
    } else if (rc == CALLBACK_STOPPED) {
        rc = s.cb_rc;
    }
out:
    free(s.query);
    free(s.ack_path);
    return rc;
}
