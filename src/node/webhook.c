/*
 * webhook.c - webhooks (webhook.h, docs/messenger.md "Webhooks"): each `--webhook NAME=URL` is
 * the consumer NAME of this server, whose notifications are POSTed in batches to URL, in order,
 * one batch at a time. The consumer's position moves only when the endpoint answers 2xx, so
 * delivery is at least once, as for any other consumer.
 *
 * Each webhook is a small state machine; set_step() is the only place that changes its step:
 *   H_READING    the next batch is read on a reader thread (nread_run, as http/notify.c does),
 *                and its JSON text made there too: the loop only copies it into the request
 *   H_POSTING    the POST is in flight on libevent's HTTP client: the loop never waits for it
 *   H_RETRY      a timer until the next attempt (after a failure: 0.5 s doubling to 30 s)
 *   H_FOLLOWING  nothing to send: waiting for the next commit
 *   H_IDLE       stopped
 * Every attempt reads again from the consumer's position, so an operator's rewind or reset of
 * the consumer is followed, and a retry sends whatever is pending by then.
 *
 * Health is ok, or failing after FAILING_AFTER attempts in a row failed; set_failing() logs
 * each change once, never every retry. A failing webhook keeps retrying: it is never disabled.
 *
 * Not for: the consumers themselves (messenger.c) or reading over HTTP (http/notify.c).
 */
#include "node/webhook.h"
#include "common/log.h"
#include "common/util.h"
#include "node/messenger.h"
#include "node/net.h"
#include "node/server.h"

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 100               /* notifications per POST */
#define BODY_MAX (1u << 20)         /* bytes per POST */
#define NOTES_MAX (BODY_MAX - 4096) /* of which the notifications (the rest: consumer, reset) */
#define TIMEOUT_S 10                /* a POST must be answered within this */
#define REPLY_MAX (1u << 20)        /* a reply's body (ignored) is at most this */
#define REPLY_HEADERS_MAX (64u << 10)
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define LOCAL_RETRY_MS 1000 /* after a read that could not run (not the endpoint's fault) */
#define FAILING_AFTER 3     /* attempts in a row before the webhook shows failing */
#define SNIPPET 160         /* of a failed reply's body, in last_error */

enum hook_step { H_IDLE, H_READING, H_POSTING, H_RETRY, H_FOLLOWING };

/* One --webhook value, parsed. */
struct hook_spec {
    char name[LS_CHANNEL_MAX + 1];
    char *url;       /* as given */
    char *host;      /* to connect to (an IPv6 address without brackets) */
    char *authority; /* the Host header */
    char *target;    /* path and query */
    char *channels;  /* comma-separated set; "" is every channel */
    int port;
};

struct webhook {
    struct webhooks *all;
    struct hook_spec spec;
    struct evhttp_connection *conn;
    struct evhttp_request *req; /* in flight */
    struct event *retry, *deadline;
    struct seq_waiter wait;
    enum hook_step step;
    /* the batch: read and made on a reader thread (job, r, text, count, next), then the loop's */
    struct read_job job;
    struct nread r;
    struct ls_buf text; /* the notifications as a JSON array */
    size_t count;
    int64_t next; /* the position once the batch is delivered */
    int64_t from; /* the consumer's position the batch follows */
    /* health */
    int failing, failures, last_status, err_kind;
    char last_error[300];
    int64_t next_attempt_ms, last_delivery_ms, delivered;
};

struct webhooks {
    struct server *srv;
    struct evdns_base *dns;
    struct webhook *v;
    size_t n;
    int64_t backoff_max_ms;
};

static const char *const step_names[] = {"idle", "reading", "posting", "retry", "following"};

/* ---------------------------------------------------------------- --webhook values */

static void
spec_release(struct hook_spec *s)
{
    free(s->url);
    free(s->host);
    free(s->authority);
    free(s->target);
    free(s->channels);
    memset(s, 0, sizeof *s);
}

static char *
concat(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

/* The URL: http:// only, with a host; the connection's host and port, Host and the target. */
static int
spec_url(struct hook_spec *s, struct ls_error *err)
{
    struct evhttp_uri *uri;
    const char *host, *path, *query;
    size_t hlen;
    int rc = 0;
    if (strncmp(s->url, "https://", 8) == 0)
        return ls_error_set(err, LS_EINVAL,
                            "https:// is not supported: use http:// (a TLS proxy on this host "
                            "can carry it further)");
    if (strncmp(s->url, "http://", 7) != 0)
        return ls_error_set(err, LS_EINVAL, "the URL must start with http://");
    if (!(uri = evhttp_uri_parse_with_flags(s->url, 0)) || !(host = evhttp_uri_get_host(uri)) ||
        !*host) {
        rc = ls_error_set(err, LS_EINVAL, "cannot parse the URL %s", s->url);
        goto out;
    }
    if (evhttp_uri_get_userinfo(uri) || evhttp_uri_get_fragment(uri)) {
        rc = ls_error_set(err, LS_EINVAL, "the URL may not hold user:password@ or a #fragment");
        goto out;
    }
    s->port = evhttp_uri_get_port(uri) < 0 ? 80 : evhttp_uri_get_port(uri);
    if (s->port == 0) {
        rc = ls_error_set(err, LS_EINVAL, "the URL's port must be 1 to 65535");
        goto out;
    }
    hlen = strlen(host);
    s->host = host[0] == '[' && hlen > 2 ? strndup(host + 1, hlen - 2) : strdup(host);
    path = evhttp_uri_get_path(uri);
    query = evhttp_uri_get_query(uri);
    s->target = concat(path && *path ? path : "/", query ? "?" : "", query ? query : "");
    if (evhttp_uri_get_port(uri) < 0) {
        s->authority = strdup(host);
    } else {
        char port[16];
        snprintf(port, sizeof port, ":%d", s->port);
        s->authority = concat(host, port, "");
    }
    if (!s->host || !s->target || !s->authority) rc = ls_error_set(err, LS_ENOMEM, NULL);
out:
    if (uri) evhttp_uri_free(uri);
    return rc;
}

/* The options after the URL: channel=C, repeatable. */
static int
spec_options(struct hook_spec *s, const char *opts, struct ls_error *err)
{
    size_t cap = strlen(opts) + 1, len = 0;
    if (!(s->channels = calloc(1, cap))) return ls_error_set(err, LS_ENOMEM, NULL);
    while (*opts) {
        const char *end = strchr(opts, ','), *v;
        size_t n = end ? (size_t)(end - opts) : strlen(opts);
        char one[LS_CHANNEL_MAX + 1];
        if (n < 8 || strncmp(opts, "channel=", 8) != 0)
            return ls_error_set(err, LS_EINVAL,
                                "unknown option '%.*s' after the URL (only channel=C; a URL may "
                                "not hold a comma)",
                                (int)n, opts);
        v = opts + 8;
        if (name_check("channel", v, n - 8, err)) return err->code;
        snprintf(one, sizeof one, "%.*s", (int)(n - 8), v);
        if (!channels_has(s->channels, one) || !*s->channels) {
            if (len) s->channels[len++] = ',';
            memcpy(s->channels + len, one, n - 8);
            len += n - 8;
            s->channels[len] = '\0';
        }
        opts = end ? end + 1 : opts + n;
    }
    return 0;
}

static int
spec_parse(const char *arg, struct hook_spec *s, struct ls_error *err)
{
    const char *eq = strchr(arg, '='), *comma;
    memset(s, 0, sizeof *s);
    if (!eq || eq == arg) return ls_error_set(err, LS_EINVAL, "expected NAME=URL[,channel=C]...");
    if (name_check("webhook (consumer)", arg, (size_t)(eq - arg), err)) return err->code;
    snprintf(s->name, sizeof s->name, "%.*s", (int)(eq - arg), arg);
    comma = strchr(eq + 1, ',');
    if (!(s->url = comma ? strndup(eq + 1, (size_t)(comma - eq - 1)) : strdup(eq + 1)))
        return ls_error_set(err, LS_ENOMEM, NULL);
    if (spec_url(s, err)) return err->code;
    return spec_options(s, comma ? comma + 1 : "", err);
}

int
webhook_check(const struct strlist *specs, struct ls_error *err)
{
    for (int i = 0; i < specs->n; i++) {
        struct hook_spec s, t;
        int rc = spec_parse(specs->v[i], &s, err);
        for (int k = 0; k < i && rc == 0; k++) {
            if (spec_parse(specs->v[k], &t, err) == 0 && strcmp(s.name, t.name) == 0)
                rc = ls_error_set(err, LS_EINVAL, "a second webhook named %s", s.name);
            spec_release(&t);
        }
        spec_release(&s);
        if (rc) {
            ls_error_prefix(err, "--webhook %s: ", specs->v[i]);
            return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- steps and health */

static void
set_step(struct webhook *w, enum hook_step s)
{
    if (w->step != s)
        log_debug("webhook %s: %s -> %s", w->spec.name, step_names[w->step], step_names[s]);
    w->step = s;
}

static void
set_failing(struct webhook *w, int failing)
{
    if (w->failing == failing) return;
    if (failing)
        log_warn("webhook %s: ok -> failing (%d attempts in a row failed, the last: %s); "
                 "retrying",
                 w->spec.name, w->failures, w->last_error);
    else
        log_info("webhook %s: failing -> ok (delivered after %d failed attempts)", w->spec.name,
                 w->failures);
    w->failing = failing;
}

static void
arm(struct event *ev, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* The webhook's consumer, opened again when an operator removed it (at the head, then). */
static struct consumer *
hook_consumer(struct webhook *w)
{
    struct server *srv = w->all->srv;
    struct consumer *c = consumer_find(srv, w->spec.name);
    if (c) return c;
    if ((c = consumer_open(srv, w->spec.name, w->spec.channels, 0)))
        log_info("webhook %s: its consumer is open at %lld", w->spec.name, (long long)c->position);
    return c;
}

static void read_submit(struct webhook *w);

/* Not the endpoint's fault (the readers are busy, the log cannot be read): again soon. */
static void
retry_local(struct webhook *w, const char *why)
{
    log_warn("webhook %s: %s; again in %d ms", w->spec.name, why, LOCAL_RETRY_MS);
    w->next_attempt_ms = ls_now_ms() + LOCAL_RETRY_MS;
    set_step(w, H_RETRY);
    arm(w->retry, LOCAL_RETRY_MS);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    read_submit(arg);
}

static void
on_commit(struct seq_waiter *sw, int timed_out)
{
    struct webhook *w = sw->arg;
    if (!w->all->srv->stopping) read_submit(w);
}

/* Nothing to send after position next: the next read comes with the next commit. */
static void
follow(struct webhook *w, int64_t next)
{
    struct server *srv = w->all->srv;
    if (srv->pos.seq > next) { /* committed while the read ran */
        read_submit(w);
        return;
    }
    set_step(w, H_FOLLOWING);
    w->wait.target = next + 1;
    w->wait.deadline_ms = 0;
    server_wait_seq(srv, &w->wait);
}

/* ---------------------------------------------------------------- delivery */

static void
delivered(struct webhook *w, int status)
{
    struct server *srv = w->all->srv;
    struct consumer *c = consumer_find(srv, w->spec.name);
    /* A consumer moved meanwhile (rewind, reset, rm) keeps its new position. */
    if (c && c->position == w->from) {
        consumer_ack(srv, c, w->next);
    } else {
        log_info("webhook %s: its consumer moved while a batch was in flight; it continues from "
                 "there",
                 w->spec.name);
    }
    w->delivered += (int64_t)w->count;
    w->last_status = status;
    w->last_delivery_ms = ls_now_ms();
    w->next_attempt_ms = 0;
    set_failing(w, 0);
    w->failures = 0;
    read_submit(w);
}

static void
failed(struct webhook *w, int status, const char *why)
{
    int64_t delay = BACKOFF_MIN_MS;
    w->failures++;
    w->last_status = status;
    snprintf(w->last_error, sizeof w->last_error, "%s", why);
    for (int i = 1; i < w->failures && delay < w->all->backoff_max_ms; i++)
        delay *= 2;
    if (delay > w->all->backoff_max_ms) delay = w->all->backoff_max_ms;
    w->next_attempt_ms = ls_now_ms() + delay;
    log_debug("webhook %s: attempt %d failed: %s; again in %lld ms", w->spec.name, w->failures, why,
              (long long)delay);
    if (w->failures >= FAILING_AFTER) set_failing(w, 1);
    set_step(w, H_RETRY);
    arm(w->retry, delay);
}

/* A failed reply's status line and the start of its body, printable, for last_error. */
static void
reply_error_text(struct evhttp_request *req, int status, char *out, size_t n)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const char *line = evhttp_request_get_response_code_line(req);
    char body[SNIPPET + 1];
    size_t len = evbuffer_copyout(in, body, SNIPPET);
    if (len == (size_t)-1) len = 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)body[i] < 0x20 || (unsigned char)body[i] == 0x7f) body[i] = ' ';
    body[len] = '\0';
    snprintf(out, n, "HTTP %d %s%s%s", status, line ? line : "", len ? ": " : "", body);
}

static void
on_post_error(enum evhttp_request_error e, void *arg)
{
    struct webhook *w = arg;
    w->err_kind = (int)e + 1; /* 0: none reported */
}

static void
on_post_done(struct evhttp_request *req, void *arg)
{
    struct webhook *w = arg;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    char why[300];
    evtimer_del(w->deadline);
    w->req = NULL;
    if (status >= 200 && status < 300) {
        delivered(w, status);
        return;
    }
    if (status > 0) {
        reply_error_text(req, status, why, sizeof why);
    } else {
        switch (w->err_kind - 1) {
        case EVREQ_HTTP_TIMEOUT:
            snprintf(why, sizeof why, "no reply within %d s", TIMEOUT_S);
            break;
        case EVREQ_HTTP_EOF:
            snprintf(why, sizeof why, "the connection to %s closed before a reply",
                     w->spec.authority);
            break;
        case EVREQ_HTTP_INVALID_HEADER:
            snprintf(why, sizeof why, "a malformed reply");
            break;
        case EVREQ_HTTP_DATA_TOO_LONG:
            snprintf(why, sizeof why, "a reply over %u bytes", REPLY_MAX);
            break;
        default:
            snprintf(why, sizeof why, "cannot connect to %s (refused, unreachable or no such host)",
                     w->spec.authority);
        }
    }
    failed(w, status, why);
}

/* TIMEOUT_S after the POST began, whatever libevent's per-read timeout thinks of a reply that
 * trickles in: the request is cancelled (its callback then never runs). */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct webhook *w = arg;
    struct evhttp_request *req = w->req;
    char why[64];
    if (!req) return;
    w->req = NULL;
    evhttp_cancel_request(req);
    snprintf(why, sizeof why, "no reply within %d s", TIMEOUT_S);
    failed(w, 0, why);
}

/* The body: {"consumer":NAME,"reset":{...},"notifications":[...],"next":N}; the reset (when
 * any) comes first, as it applies before the notifications that follow it. */
static int
post_body(struct webhook *w, struct evbuffer *out, json_t *reset)
{
    char *rtext = reset ? json_dumps(reset, JSON_COMPACT) : NULL;
    int rc = 0;
    if (reset && !rtext) return -1;
    /* the name is checked: A-Z a-z 0-9 . _ : - need no escaping */
    rc |= evbuffer_add_printf(out, "{\"consumer\":\"%s\",", w->spec.name) < 0;
    if (rtext) rc |= evbuffer_add_printf(out, "\"reset\":%s,", rtext) < 0;
    rc |= evbuffer_add(out, "\"notifications\":", 16);
    rc |= evbuffer_add(out, w->text.p, w->text.len);
    rc |= evbuffer_add_printf(out, ",\"next\":%lld}", (long long)w->next) < 0;
    free(rtext);
    return rc ? -1 : 0;
}

static void
post(struct webhook *w, json_t *reset)
{
    struct evhttp_request *req = evhttp_request_new(on_post_done, w);
    struct evkeyvalq *h;
    if (!req || post_body(w, evhttp_request_get_output_buffer(req), reset)) {
        if (req) evhttp_request_free(req);
        retry_local(w, "out of memory");
        return;
    }
    evhttp_request_set_error_cb(req, on_post_error);
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", w->spec.authority);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "User-Agent", "lockstep/" LS_VERSION);
    w->err_kind = 0;
    w->req = req;
    set_step(w, H_POSTING);
    arm(w->deadline, TIMEOUT_S * 1000);
    /* A connection refused at once calls on_post_done before this returns (w->req is NULL
     * then); -1 with w->req still set: refused before it was queued, and left to us. */
    if (evhttp_make_request(w->conn, req, EVHTTP_REQ_POST, w->spec.target) && w->req) {
        w->req = NULL;
        evhttp_request_free(req);
        evtimer_del(w->deadline);
        failed(w, 0, "cannot start the request");
    }
}

/* ---------------------------------------------------------------- reading a batch */

/* The notifications read as one JSON array of at most NOTES_MAX bytes: a batch that would be
 * larger ends before the note that does not fit (and next is the last one sent). */
static int
batch_text(struct webhook *w)
{
    size_t n = json_array_size(w->r.notes);
    ls_buf_reset(&w->text);
    w->count = 0;
    w->next = w->r.next;
    if (ls_buf_append(&w->text, "[", 1)) return LS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(w->r.notes, i);
        char *t = json_dumps(o, JSON_COMPACT);
        size_t len = t ? strlen(t) : 0;
        if (!t) return LS_ENOMEM;
        if (i > 0 && w->text.len + len + 2 > NOTES_MAX) {
            free(t);
            w->next = json_integer_value(json_object_get(json_array_get(w->r.notes, i - 1), "id"));
            break;
        }
        if ((i > 0 && ls_buf_append(&w->text, ",", 1)) || ls_buf_append(&w->text, t, len)) {
            free(t);
            return LS_ENOMEM;
        }
        free(t);
        w->count++;
    }
    return ls_buf_append(&w->text, "]", 1) ? LS_ENOMEM : 0;
}

static void
read_run(struct store *st, struct read_job *j)
{
    struct webhook *w = (struct webhook *)((char *)j - offsetof(struct webhook, job));
    nread_run(st, &w->r);
    if (w->r.rc == 0) w->r.rc = batch_text(w);
}

static void
read_done(struct read_job *j)
{
    struct webhook *w = (struct webhook *)((char *)j - offsetof(struct webhook, job));
    struct server *srv = w->all->srv;
    struct consumer *c;
    json_t *reset;
    if (atomic_load(&j->cancelled) || srv->stopping) {
        set_step(w, H_IDLE);
        return;
    }
    if (w->r.rc) {
        retry_local(w, "cannot read the log");
        return;
    }
    if (!(c = hook_consumer(w))) {
        retry_local(w, "out of memory");
        return;
    }
    if (c->position != w->r.cursor) { /* moved while the read ran: read from there */
        read_submit(w);
        return;
    }
    reset = nread_apply(srv, c, &w->r);
    w->from = c->position;
    if (!reset && w->count == 0) {
        /* nothing on its channels: the position passes over the other entries */
        if (w->next > c->position) consumer_ack(srv, c, w->next);
        follow(w, w->next);
        return;
    }
    post(w, reset);
    json_decref(reset);
}

static void
read_submit(struct webhook *w)
{
    struct server *srv = w->all->srv;
    struct consumer *c;
    char *channels;
    if (srv->stopping) return;
    c = hook_consumer(w);
    if (!c || !(channels = strdup(c->channels))) {
        retry_local(w, "out of memory");
        return;
    }
    free(w->r.channels);
    w->r.channels = channels;
    w->r.cursor = c->position;
    w->r.gen_in = c->gen; /* a position from a replaced history gets a reset */
    w->r.seen = srv->pos.seq;
    w->r.limit = BATCH_MAX;
    w->r.reset = 0;
    atomic_store(&w->job.cancelled, 0);
    w->job.run = read_run;
    w->job.done = read_done;
    set_step(w, H_READING);
    if (readers_submit(srv->readers, &w->job)) retry_local(w, "the reader threads are busy");
}

/* ---------------------------------------------------------------- views */

static struct webhook *
find(struct server *srv, const char *name)
{
    struct webhooks *all = srv->hooks;
    for (size_t i = 0; all && i < all->n; i++)
        if (strcmp(all->v[i].spec.name, name) == 0) return &all->v[i];
    return NULL;
}

void
webhook_kick(struct server *srv, const char *name)
{
    struct webhook *w = find(srv, name);
    if (!w || w->step != H_FOLLOWING || srv->stopping) return;
    server_cancel_wait(srv, &w->wait);
    read_submit(w);
}

static json_t *
time_or_null(int64_t ms)
{
    char t[40];
    if (!ms) return json_null();
    ls_format_time(ms, t, sizeof t);
    return json_string(t);
}

json_t *
webhook_json(struct server *srv, const char *name)
{
    struct webhook *w = find(srv, name);
    json_t *o;
    if (!w) return NULL;
    o = json_pack("{s:s,s:s,s:i,s:I}", "url", w->spec.url, "state", w->failing ? "failing" : "ok",
                  "failures", w->failures, "delivered", (json_int_t)w->delivered);
    json_object_set_new(o, "last_status",
                        w->last_status ? json_integer(w->last_status) : json_null());
    json_object_set_new(o, "last_error", *w->last_error ? json_string(w->last_error) : json_null());
    json_object_set_new(o, "next_attempt",
                        time_or_null(w->step == H_RETRY ? w->next_attempt_ms : 0));
    json_object_set_new(o, "last_delivery", time_or_null(w->last_delivery_ms));
    return o;
}

json_t *
webhook_failing_json(struct server *srv)
{
    json_t *arr = json_array();
    for (size_t i = 0; srv->hooks && i < srv->hooks->n; i++)
        if (srv->hooks->v[i].failing)
            json_array_append_new(arr, json_string(srv->hooks->v[i].spec.name));
    return arr;
}

/* ---------------------------------------------------------------- start and stop */

static int
hook_open(struct webhooks *all, struct webhook *w, const char *arg, struct ls_error *err)
{
    struct server *srv = all->srv;
    struct consumer *c;
    w->all = all;
    ls_buf_init(&w->text, NOTES_MAX);
    if (spec_parse(arg, &w->spec, err)) {
        ls_error_prefix(err, "--webhook %s: ", arg);
        return err->code;
    }
    w->wait.fire = on_commit;
    w->wait.arg = w;
    if (!(w->conn = evhttp_connection_base_new(srv->base, all->dns, w->spec.host,
                                               (unsigned short)w->spec.port)) ||
        !(w->retry = evtimer_new(srv->base, on_retry, w)) ||
        !(w->deadline = evtimer_new(srv->base, on_deadline, w)))
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    evhttp_connection_set_timeout(w->conn, TIMEOUT_S);
    evhttp_connection_set_retries(w->conn, 0); /* the retries are ours, with their backoff */
    evhttp_connection_set_max_body_size(w->conn, REPLY_MAX);
    evhttp_connection_set_max_headers_size(w->conn, REPLY_HEADERS_MAX);
    /* the configured channels replace the consumer's */
    if (!(c = consumer_open(srv, w->spec.name, w->spec.channels, 0)))
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    log_info("webhook %s: POST to %s, channels %s, after %lld", w->spec.name, w->spec.url,
             *w->spec.channels ? w->spec.channels : "(every channel)",
             (long long)(c->position < 0 ? 0 : c->position));
    return 0;
}

int
webhook_start(struct server *srv, struct ls_error *err)
{
    const struct strlist *specs = &srv->cfg.webhook;
    const char *env = getenv("LOCKSTEP_WEBHOOK_BACKOFF_MAX_MS"); /* tests make it short */
    struct webhooks *all;
    int64_t v;
    if (specs->n == 0) return 0;
    if (!(all = calloc(1, sizeof *all)) || !(all->v = calloc((size_t)specs->n, sizeof *all->v))) {
        free(all);
        return ls_error_set(err, LS_ENOMEM, "out of memory");
    }
    all->srv = srv;
    all->backoff_max_ms = BACKOFF_MAX_MS;
    if (env && ls_parse_i64(env, &v) == 0 && v >= BACKOFF_MIN_MS && v < BACKOFF_MAX_MS)
        all->backoff_max_ms = v;
    srv->hooks = all;
    if (!(all->dns = net_dns_new(srv->base, err))) return err->code;
    for (int i = 0; i < specs->n; i++) {
        all->n++;
        if (hook_open(all, &all->v[i], specs->v[i], err)) return err->code;
    }
    for (size_t i = 0; i < all->n; i++)
        read_submit(&all->v[i]);
    return 0;
}

void
webhook_stop(struct server *srv)
{
    struct webhooks *all = srv->hooks;
    if (!all) return;
    for (size_t i = 0; i < all->n; i++) {
        struct webhook *w = &all->v[i];
        server_cancel_wait(srv, &w->wait);
        if (w->retry) event_free(w->retry);
        if (w->deadline) event_free(w->deadline);
        if (w->conn) evhttp_connection_free(w->conn); /* a request in flight, without callback */
        free(w->r.channels);
        json_decref(w->r.notes);
        ls_buf_release(&w->text);
        spec_release(&w->spec);
    }
    /* lookups still in flight fail (their callbacks run later, on the loop) rather than leak */
    if (all->dns) evdns_base_free(all->dns, 1);
    free(all->v);
    free(all);
    srv->hooks = NULL;
}
