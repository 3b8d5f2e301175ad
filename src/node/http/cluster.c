/*
 * cluster.c - this server and its place in the site: status, digest, the downstreams that
 * follow it and every server of the site (nodes), promote and resync (docs/api.md).
 *
 * The digest reads every item and runs on a reader thread; the others answer from the loop's
 * own state.
 *
 * Not for: replication itself (repl_up.c, repl_down.c).
 */
#include "node/http/http.h"
#include "node/messenger.h"
#include "node/site.h"
#include "common/log.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/* The last warnings and errors of the log, oldest first (common/log.c keeps them). */
static json_t *
warnings_json(void)
{
    static struct ls_log_entry e[LS_LOG_RECENT_MAX]; /* the loop thread's only */
    size_t n = ls_log_recent(e, LS_LOG_RECENT_MAX);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char t[40];
        json_t *msg = json_string(e[i].msg);
        if (!msg) { /* not UTF-8 (a peer's bytes in it): shown with ? for the bytes above 127 */
            for (char *p = e[i].msg; *p; p++)
                if ((unsigned char)*p >= 0x80) *p = '?';
            msg = json_string(e[i].msg);
        }
        ls_format_time(e[i].ms, t, sizeof t);
        json_array_append_new(a, json_pack("{s:s,s:s,s:o}", "time", t, "level",
                                           ls_log_level_name(e[i].level), "msg", msg));
    }
    return a;
}

json_t *
status_json(struct server *srv)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s}", "name", srv->cfg.name, "role",
                          srv->cfg.role, "version", LS_VERSION, "store_id", srv->pos.store_id,
                          "epoch", (json_int_t)srv->pos.epoch, "seq", (json_int_t)srv->pos.seq,
                          "log_first_seq", (json_int_t)store_log_first_seq(srv->reader),
                          "uptime_s", (json_int_t)((ls_mono_ms() - srv->started_ms) / 1000), "http",
                          srv->cfg.http);
    json_object_set_new(o, "peer", json_string(srv->cfg.listen));
    json_object_set_new(o, "downstreams", json_integer(repl_up_connected(srv)));
    json_object_set_new(o, "messenger", messenger_status_json(srv));
    if (server_is_primary(srv)) json_object_set_new(o, "state", json_string("live"));
    else repl_down_status(srv, o);
    json_object_set_new(o, "warnings", warnings_json());
    return o;
}

static void
h_status(struct ctx *c)
{
    reply_json(c->req, 200, status_json(c->srv));
    ctx_free(c);
}

/* ---------------------------------------------------------------- digest */

struct digest_args {
    char *prefix;
    int published_only;
};

static void
digest_args_free(void *arg)
{
    struct digest_args *a = arg;
    free(a->prefix);
    free(a);
}

static void
digest_run(struct store *st, struct http_read *r)
{
    struct digest_args *a = r->arg;
    char hex[65];
    int64_t count, seq;
    if (store_digest(st, a->prefix, a->published_only, hex, &count, &seq, &r->err)) return;
    r->reply = json_pack("{s:I,s:I,s:s,s:s,s:b}", "seq", (json_int_t)seq, "items",
                         (json_int_t)count, "digest", hex, "prefix",
                         a->prefix && *a->prefix ? a->prefix : "/", "published_only",
                         a->published_only);
}

static void
h_digest(struct ctx *c)
{
    const char *prefix = qget(c, "prefix");
    struct digest_args *a = NULL;
    struct http_read *r = NULL;
    if (check_prefix(c, prefix)) goto fail;
    a = calloc(1, sizeof *a);
    r = calloc(1, sizeof *r);
    if (!a || !r || (prefix && !(a->prefix = strdup(prefix)))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        goto fail;
    }
    a->published_only = qflag(c, "published_only");
    r->run = digest_run;
    r->arg = a;
    r->free_arg = digest_args_free;
    http_read_submit(c, r);
    return;
fail:
    if (a) digest_args_free(a);
    free(r);
    ctx_free(c);
}

/* ---------------------------------------------------------------- replication */

/* The downstreams of this server (their replication state), or with all=1 every server of the
 * site as far as this one knows (site.c). */
static void
h_nodes(struct ctx *c)
{
    int all = qflag(c, "all");
    json_t *o = json_pack("{s:s,s:s,s:I}", "name", c->srv->cfg.name, "role", c->srv->cfg.role,
                          "seq", (json_int_t)c->srv->pos.seq);
    json_object_set_new(o, "nodes", all ? site_api_nodes(c->srv) : repl_up_nodes(c->srv));
    if (all) json_object_set_new(o, "all", json_true());
    reply_json(c->req, 200, o);
    ctx_free(c);
}

static int
promote_job(struct store *st, struct wreq *r)
{
    char pending[8] = "0";
    store_meta_get(st, "snapshot_pending", pending, sizeof pending);
    if (strcmp(pending, "1") == 0)
        return ls_error_set(&r->err, LS_ECONFLICT,
                            "this server is loading a snapshot and holds only part of the store: "
                            "promote another replica, or wait until the snapshot ends");
    return store_new_epoch(st, &r->last.version, &r->err);
}

static void
promote_done(struct wreq *r, void *arg)
{
    struct write_ctx *w = arg;
    struct server *srv = w->srv;
    if (r->rc) {
        repl_down_resume(srv); /* still a replica: follow again */
        reply_lserror(w->req, &r->err);
    } else {
        repl_down_stop(srv);
        char *role = strdup("primary");
        if (role) { /* else the old name stays in status, the promotion still holds */
            free(srv->cfg.role);
            srv->cfg.role = role;
        }
        log_warn("promoted to primary: epoch %lld begins at seq %lld (restart this server with "
                 "--role primary to keep the role)",
                 (long long)r->last.version, (long long)srv->pos.seq);
        repl_up_drop_all(srv, "the upstream was promoted; a new epoch begins");
        forward_became_primary(srv);
        reply_json(w->req, 200,
                   json_pack("{s:s,s:I,s:I}", "role", "primary", "epoch",
                             (json_int_t)r->last.version, "seq", (json_int_t)srv->pos.seq));
    }
    wreq_free(r);
    free(w);
}

static void
h_promote(struct ctx *c)
{
    struct wreq *r;
    struct write_ctx *w;
    if (server_is_primary(c->srv)) {
        reply_error(c->req, LS_ECONFLICT, "this server is already the primary");
        goto out;
    }
    r = calloc(1, sizeof *r);
    w = calloc(1, sizeof *w);
    if (!r || !w) {
        free(r);
        free(w);
        reply_error(c->req, LS_ENOMEM, NULL);
        goto out;
    }
    repl_down_halt(c->srv); /* no more changes from the old upstream */
    w->req = c->req;
    w->srv = c->srv;
    r->type = WREQ_CUSTOM;
    r->fn = promote_job;
    r->done = promote_done;
    r->arg = w;
    writer_submit(c->srv->writer, r);
out:
    ctx_free(c);
}

static void
h_resync(struct ctx *c)
{
    struct ls_error err;
    int64_t from, since = -1;
    const char *since_s = qget(c, "since");
    if (qint(c, "from_seq", -1, 0, INT64_MAX, &from)) goto out;
    if (since_s && ls_parse_time(since_s, &since)) {
        reply_error(c->req, LS_EINVAL, "since must be a time such as 2026-11-21T10:00:00Z");
        goto out;
    }
    if (from < 0 && since < 0) {
        reply_error(c->req, LS_EINVAL, "resync needs from_seq=SEQ or since=TIME");
        goto out;
    }
    if (repl_down_resync(c->srv, from, since, &err)) reply_lserror(c->req, &err);
    else
        reply_json(c->req, 200,
                   json_pack("{s:s,s:I,s:I}", "resync", "requested", "from_seq", (json_int_t)from,
                             "since_ms", (json_int_t)since));
out:
    ctx_free(c);
}

void
http_cluster_routes(struct server *srv)
{
    const struct route routes[] = {
        {"/v1/status", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_status},
        {"/v1/digest", M_GET, NEED_READ, NEED_READ, NO_BODY, h_digest},
        {"/v1/nodes", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_nodes},
        {"/v1/promote", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_promote},
        {"/v1/resync", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_resync},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
