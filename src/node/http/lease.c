/*
 * lease.c - leases on an export for shared duty (docs/mirror.md, "Shared duty"): several mirror
 * servers may hold the same job for the same export; before a run each asks the exporting server
 * for the lease named after the job, and only the holder mirrors.
 *
 *   POST /v1/exports/{name}/lease  {"job","holder","ttl_ms"}  -> {"fence","holder","expires_ms"}
 *
 * A lease is granted when it is free, has expired, or is already the asker's (a renewal). Its
 * fencing number grows by one with every new holder, and the export refuses a read that carries
 * a fence other than the current one, or one whose lease has expired (lease_check), so a holder
 * that stalled past its lease and was replaced cannot go on. ttl_ms 0 releases the asker's
 * lease. The decision and the new state are made in one writer transaction (leases live in the
 * store's meta table, key "lease:EXPORT/JOB"), so grants are serialized and a restarted server
 * never hands out a lower fence. A `read` token may take a lease: it only orders the readers of
 * this server's exports.
 *
 * Not for: serving exports (export.c), taking leases (node/mirror_remote.c).
 */
#include "node/http/http.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TTL_MAX_MS 600000

struct lease {
    char holder[130];
    int64_t fence, expires_ms;
};

static void
lease_key(const char *export_, const char *job, char *out, size_t n)
{
    snprintf(out, n, "lease:%s/%s", export_, job);
}

/* 0 and *l filled, or LS_ENOTFOUND (never taken). */
static int
lease_load(struct store *st, const char *export_, const char *job, struct lease *l)
{
    char key[200], text[512];
    json_t *j;
    lease_key(export_, job, key, sizeof key);
    memset(l, 0, sizeof *l);
    if (store_meta_get(st, key, text, sizeof text)) return LS_ENOTFOUND;
    if (!(j = json_loads(text, 0, NULL))) return LS_ENOTFOUND;
    snprintf(l->holder, sizeof l->holder, "%s",
             json_string_value(json_object_get(j, "holder")) ?: "");
    l->fence = json_integer_value(json_object_get(j, "fence"));
    l->expires_ms = json_integer_value(json_object_get(j, "expires_ms"));
    json_decref(j);
    return 0;
}

int
lease_check(struct store *st, const char *export_, const char *job, int64_t fence,
            struct ls_error *err)
{
    struct lease l;
    if (lease_load(st, export_, job, &l))
        return ls_error_set(err, LS_ECONFLICT, "no lease %s/%s was taken", export_, job);
    if (fence != l.fence)
        return ls_error_set(err, LS_ECONFLICT,
                            "fence %lld is stale: the lease %s/%s is held by %s with fence %lld",
                            (long long)fence, export_, job, l.holder, (long long)l.fence);
    if (l.expires_ms <= ls_now_ms())
        return ls_error_set(err, LS_ECONFLICT, "the lease %s/%s (fence %lld) has expired", export_,
                            job, (long long)fence);
    return 0;
}

/* ---------------------------------------------------------------- taking a lease */

struct lease_take {
    struct evhttp_request *req;
    char export_[65], job[65], holder[130];
    int64_t ttl_ms;
    struct lease got; /* what the lease is after the request (granted or not) */
    int granted;
};

/* On the writer thread: the decision and the new state, in one transaction. */
static int
lease_take_run(struct store *st, struct wreq *r)
{
    struct lease_take *t = r->fn_arg;
    struct lease cur;
    int64_t now = ls_now_ms();
    int have = lease_load(st, t->export_, t->job, &cur) == 0;
    char key[200], *text;
    int rc;
    json_t *j;
    if (have && strcmp(cur.holder, t->holder) != 0 && (cur.expires_ms > now || t->ttl_ms == 0)) {
        t->got = cur; /* held by another (or a release by someone who does not hold it) */
        return 0;
    }
    t->granted = 1;
    t->got = cur;
    if (!have || strcmp(cur.holder, t->holder) != 0) { /* a new holder: a new fence */
        t->got.fence = (have ? cur.fence : 0) + 1;
        snprintf(t->got.holder, sizeof t->got.holder, "%s", t->holder);
    }
    t->got.expires_ms = now + t->ttl_ms;
    j = json_pack("{s:s,s:I,s:I}", "holder", t->got.holder, "fence", (json_int_t)t->got.fence,
                  "expires_ms", (json_int_t)t->got.expires_ms);
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    lease_key(t->export_, t->job, key, sizeof key);
    rc = text ? store_meta_set(st, key, text, &r->err) : ls_error_set(&r->err, LS_ENOMEM, NULL);
    free(text);
    return rc;
}

static void
lease_take_done(struct wreq *r, void *arg)
{
    struct lease_take *t = arg;
    int64_t left = t->got.expires_ms - ls_now_ms();
    if (r->rc) {
        reply_lserror(t->req, &r->err);
    } else if (!t->granted) {
        char msg[400];
        json_t *o;
        snprintf(msg, sizeof msg, "the lease %s/%s is held by %s (fence %lld) for %lld ms more",
                 t->export_, t->job, t->got.holder, (long long)t->got.fence,
                 (long long)(left > 0 ? left : 0));
        o = error_json(LS_ECONFLICT, msg);
        json_object_set_new(o, "holder", json_string(t->got.holder));
        json_object_set_new(o, "fence", json_integer(t->got.fence));
        json_object_set_new(o, "expires_in_ms", json_integer(left > 0 ? left : 0));
        reply_json(t->req, 409, o);
    } else {
        if (t->ttl_ms > 0 && t->got.fence && strcmp(t->got.holder, t->holder) == 0)
            log_debug("lease %s/%s: %s, fence %lld", t->export_, t->job, t->holder,
                      (long long)t->got.fence);
        reply_json(t->req, 200,
                   json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "export", t->export_, "job", t->job,
                             "holder", t->got.holder, "fence", (json_int_t)t->got.fence,
                             "expires_ms", (json_int_t)t->got.expires_ms, "ttl_ms",
                             (json_int_t)t->ttl_ms));
    }
    free(t);
    wreq_free(r);
}

/* A job's name (as mirror jobs have them), or with holder also '/' and ':'. */
static int
name_ok(const char *s, size_t max, int holder)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || (holder && (*s == '/' || *s == ':'))))
            return 0;
    return 1;
}

static void
h_lease(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t n = evbuffer_get_length(in);
    json_error_t jerr;
    json_t *body = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, 0, &jerr);
    const char *job = json_string_value(json_object_get(body, "job"));
    const char *holder = json_string_value(json_object_get(body, "holder"));
    const json_t *ttl = json_object_get(body, "ttl_ms");
    struct lease_take *t;
    struct wreq *r;
    if (!export_known(c->srv, param(c, "name"))) {
        reply_error(c->req, LS_ENOTFOUND, "no export named %s", param(c, "name"));
        goto out;
    }
    if (!json_is_object(body) || !name_ok(job, 64, 0) || !name_ok(holder, 128, 1) ||
        !json_is_integer(ttl) || json_integer_value(ttl) < 0 ||
        json_integer_value(ttl) > TTL_MAX_MS) {
        reply_error(c->req, LS_EINVAL,
                    "a lease request is {\"job\":NAME,\"holder\":ID,\"ttl_ms\":0..%d}",
                    TTL_MAX_MS);
        goto out;
    }
    if (!(t = calloc(1, sizeof *t)) || !(r = calloc(1, sizeof *r))) {
        free(t);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    t->req = c->req;
    snprintf(t->export_, sizeof t->export_, "%s", param(c, "name"));
    snprintf(t->job, sizeof t->job, "%s", job);
    snprintf(t->holder, sizeof t->holder, "%s", holder);
    t->ttl_ms = json_integer_value(ttl);
    r->type = WREQ_CUSTOM;
    r->fn = lease_take_run;
    r->fn_arg = t;
    r->done = lease_take_done;
    r->arg = t;
    writer_submit(c->srv->writer, r);
out:
    json_decref(body);
    ctx_free(c);
}

void
http_lease_routes(struct server *srv)
{
    static const struct route routes[] = {
        {"/v1/exports/{name}/lease", EVHTTP_REQ_POST, NEED_READ, NEED_READ, 4096, h_lease},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
