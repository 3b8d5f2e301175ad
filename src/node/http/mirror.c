/*
 * mirror.c - mirroring jobs over HTTP (docs/api.md, docs/mirror.md): create, list, show,
 * remove, pause, resume, run, history. Changes to a job go through the writer like every write,
 * and the loop's view of the jobs (node/mirror.c) follows once they are committed.
 *
 * Not for: running jobs (node/mirror.c).
 */
#include "node/http/http.h"
#include "node/mirror.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct job_write {
    struct evhttp_request *req;
    struct server *srv;
    char name[65];
    json_t *def; /* create */
    char *def_text;
    int what; /* 0 create, 1 remove, 2 pause, 3 resume */
};

static int
job_write_run(struct store *st, struct wreq *r)
{
    struct job_write *j = r->fn_arg;
    switch (j->what) {
    case 0:
        return store_mirror_job_add(st, j->name, j->def_text, &r->err);
    case 1:
        return store_mirror_job_del(st, j->name, &r->err);
    default:
        return store_mirror_job_pause(st, j->name, j->what == 2, &r->err);
    }
}

static void
job_write_done(struct wreq *r, void *arg)
{
    struct job_write *j = arg;
    if (r->rc) {
        reply_lserror(j->req, &r->err);
    } else {
        struct mirror_job *job;
        if (j->what == 0) {
            mirror_added(j->srv, j->name, j->def);
            j->def = NULL;
        } else if (j->what == 1) {
            mirror_removed(j->srv, j->name);
        } else {
            mirror_paused(j->srv, j->name, j->what == 2);
        }
        job = mirror_find(j->srv, j->name);
        if (j->what == 1)
            reply_json(j->req, 200, json_pack("{s:s}", "removed", j->name));
        else if (job)
            reply_json(j->req, j->what == 0 ? 201 : 200, mirror_job_json(job));
        else
            reply_error(j->req, LS_EINTERNAL, "the job vanished");
        log_info("mirror %s %s", j->name,
                 (const char *[]){"created", "removed", "paused", "resumed"}[j->what]);
    }
    json_decref(j->def);
    free(j->def_text);
    free(j);
    wreq_free(r);
}

static void
job_write_submit(struct ctx *c, struct job_write *j)
{
    struct wreq *r = calloc(1, sizeof *r);
    if (!r) {
        reply_error(c->req, LS_ENOMEM, NULL);
        json_decref(j->def);
        free(j->def_text);
        free(j);
        ctx_free(c);
        return;
    }
    j->req = c->req;
    j->srv = c->srv;
    r->type = WREQ_CUSTOM;
    r->fn = job_write_run;
    r->fn_arg = j;
    r->done = job_write_done;
    r->arg = j;
    writer_submit(c->srv->writer, r);
    ctx_free(c);
}

/* The job named by the URL, or NULL after a 404. */
static struct mirror_job *
url_job(struct ctx *c)
{
    struct mirror_job *job = mirror_find(c->srv, param(c, "name"));
    if (!job) {
        reply_error(c->req, LS_ENOTFOUND, "no mirror job named %s", param(c, "name"));
        ctx_free(c);
    }
    return job;
}

static void
h_create(struct ctx *c)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t n = evbuffer_get_length(in);
    json_error_t jerr;
    json_t *body = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n, 0, &jerr);
    struct job_write *j = calloc(1, sizeof *j);
    struct ls_error err;
    char data_dir[PATH_MAX];
    if (!j || !body) {
        reply_error(c->req, body ? LS_ENOMEM : LS_EINVAL, "the body must be a JSON object: %s",
                    jerr.text);
        goto fail;
    }
    if (!realpath(c->srv->cfg.data, data_dir))
        snprintf(data_dir, sizeof data_dir, "%s", c->srv->cfg.data);
    if (mirror_def_check(body, data_dir, &c->srv->cfg.mirror_root, j->name, &j->def, &err)) {
        reply_lserror(c->req, &err);
        goto fail;
    }
    if (mirror_find(c->srv, j->name)) {
        reply_error(c->req, LS_EEXISTS, "a mirror job named %s exists already", j->name);
        goto fail;
    }
    j->def_text = json_dumps(j->def, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    job_write_submit(c, j);
    return;
fail:
    json_decref(body);
    if (j) json_decref(j->def);
    free(j);
    ctx_free(c);
}

static void
h_list(struct ctx *c)
{
    reply_json(c->req, 200, json_pack("{s:o}", "mirrors", mirror_list_json(c->srv)));
    ctx_free(c);
}

static void
h_show(struct ctx *c)
{
    struct mirror_job *job = url_job(c);
    if (!job) return;
    reply_json(c->req, 200, mirror_job_json(job));
    ctx_free(c);
}

static void
job_change(struct ctx *c, int what)
{
    struct mirror_job *job = url_job(c);
    struct job_write *j;
    if (!job) return;
    if (what == 1 && mirror_running(job)) {
        reply_error(c->req, LS_ECONFLICT, "mirror %s is running; try again when it has ended",
                    param(c, "name"));
        ctx_free(c);
        return;
    }
    if (!(j = calloc(1, sizeof *j))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    snprintf(j->name, sizeof j->name, "%s", param(c, "name"));
    j->what = what;
    job_write_submit(c, j);
}

static void
h_remove(struct ctx *c)
{
    job_change(c, 1);
}
static void
h_pause(struct ctx *c)
{
    job_change(c, 2);
}
static void
h_resume(struct ctx *c)
{
    job_change(c, 3);
}

static void
h_run(struct ctx *c)
{
    struct mirror_job *job = url_job(c);
    struct ls_error err;
    if (!job) return;
    if (mirror_run_now(c->srv, job, &err))
        reply_lserror(c->req, &err);
    else
        reply_json(c->req, 202, mirror_job_json(job));
    ctx_free(c);
}

/* ---- progress as Server-Sent Events */

/*
 * A job's event stream: each second, what mirror_events has (a "progress" event while a run
 * goes, an "end" event when one has ended), sent only once the last has left; a comment every
 * 15 idle seconds keeps the connection alive. It ends when the job is removed.
 */
struct mwatch {
    struct stream s;
    struct server *srv;
    struct event *tick;
    char name[65];
    int64_t seen_end;
    int first, sending, idle;
};

static void
mw_free(struct mwatch *w)
{
    if (w->tick) event_free(w->tick);
    free(w);
}

static void
mw_gone(struct stream *s)
{
    mw_free((struct mwatch *)s);
}

static void
mw_sent(struct stream *s)
{
    ((struct mwatch *)s)->sending = 0;
}

static void
mw_tick(evutil_socket_t fd, short what, void *arg)
{
    struct mwatch *w = arg;
    struct mirror_job *job = mirror_find(w->srv, w->name);
    struct evbuffer *out;
    if (w->sending) return;
    if (!(out = evbuffer_new())) return;
    if (!job) {
        sse_format(out, "removed", NULL, "{}");
        evhttp_send_reply_chunk(w->s.req, out); /* no callback: the stream ends here */
        evbuffer_free(out);
        stream_end(&w->s);
        mw_free(w);
        return;
    }
    mirror_events(job, out, &w->seen_end, &w->first);
    if (evbuffer_get_length(out) == 0 && ++w->idle >= 15) evbuffer_add_printf(out, ": idle\n\n");
    if (evbuffer_get_length(out)) {
        w->idle = 0;
        w->sending = 1;
        stream_send(&w->s, out);
    }
    evbuffer_free(out);
}

static void
h_events(struct ctx *c)
{
    struct mirror_job *job = url_job(c);
    struct timeval tv = {1, 0};
    struct mwatch *w;
    if (!job) return;
    if (!(w = calloc(1, sizeof *w)) ||
        !(w->tick = event_new(c->srv->base, -1, EV_PERSIST, mw_tick, w))) {
        free(w);
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    w->srv = c->srv;
    w->first = 1;
    snprintf(w->name, sizeof w->name, "%s", param(c, "name"));
    w->s.on_gone = mw_gone;
    w->s.on_sent = mw_sent;
    stream_start_sse(&w->s, c->req);
    event_add(w->tick, &tv);
    mw_tick(-1, 0, w);
    ctx_free(c);
}

/* ---- history, on a reader thread */

struct hist {
    char name[65];
    int64_t limit;
};

static int
hist_error(void *arg, const char *target, const char *path, const char *reason)
{
    json_array_append_new(
        arg, json_pack("{s:s,s:s,s:s}", "target", target, "path", path, "reason", reason));
    return 0;
}

struct hist_ctx {
    struct store *st;
    json_t *runs;
};

static int
hist_run(void *arg, const struct ls_mirror_run *r)
{
    struct hist_ctx *h = arg;
    char t0[40] = "", t1[40] = "";
    json_t *errs = json_array(), *o, *targets = json_loads(r->targets ? r->targets : "[]", 0, NULL);
    ls_format_time(r->started, t0, sizeof t0);
    if (r->ended) ls_format_time(r->ended, t1, sizeof t1);
    store_mirror_errors(h->st, r->id, 1000, hist_error, errs);
    o = json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "id", (json_int_t)r->id,
                  "state", r->state, "started", t0, "ended", t1, "duration_ms",
                  (json_int_t)(r->ended ? r->ended - r->started : 0), "items", (json_int_t)r->items,
                  "bytes", (json_int_t)r->bytes, "items_total", (json_int_t)r->items_total,
                  "bytes_total", (json_int_t)r->bytes_total, "errors", (json_int_t)r->errors,
                  "targets", targets ? targets : json_array(), "failed_items", errs);
    if (r->note) json_object_set_new(o, "note", json_string(r->note));
    json_array_append_new(h->runs, o);
    return 0;
}

static void
hist_read(struct store *st, struct http_read *r)
{
    struct hist *h = r->arg;
    struct hist_ctx hc = {st, json_array()};
    if (store_mirror_runs(st, h->name, (int)h->limit, hist_run, &hc) < 0) {
        json_decref(hc.runs);
        ls_error_set(&r->err, LS_EIO, "cannot read the history");
        return;
    }
    r->reply = json_pack("{s:s,s:o}", "name", h->name, "runs", hc.runs);
}

static void
h_history(struct ctx *c)
{
    struct mirror_job *job = url_job(c);
    struct http_read *r;
    struct hist *h;
    int64_t limit;
    if (!job) return;
    if (qint(c, "limit", 20, 1, 1000, &limit)) {
        ctx_free(c);
        return;
    }
    r = calloc(1, sizeof *r);
    h = calloc(1, sizeof *h);
    if (!r || !h) {
        free(r);
        free(h);
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    snprintf(h->name, sizeof h->name, "%s", param(c, "name"));
    h->limit = limit;
    r->run = hist_read;
    r->arg = h;
    r->free_arg = free;
    http_read_submit(c, r);
}

void
http_mirror_routes(struct server *srv)
{
    const struct route routes[] = {
        {"/v1/mirrors", M_GET, NEED_REPORT, NEED_ADMIN, NO_BODY, h_list},
        {"/v1/mirrors", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, 256 * 1024, h_create},
        {"/v1/mirrors/{name}/run", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_run},
        {"/v1/mirrors/{name}/pause", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_pause},
        {"/v1/mirrors/{name}/resume", EVHTTP_REQ_POST, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_resume},
        {"/v1/mirrors/{name}/history", M_GET, NEED_REPORT, NEED_ADMIN, NO_BODY, h_history},
        {"/v1/mirrors/{name}/events", M_GET, NEED_REPORT, NEED_ADMIN, NO_BODY, h_events},
        {"/v1/mirrors/{name}", M_GET, NEED_REPORT, NEED_ADMIN, NO_BODY, h_show},
        {"/v1/mirrors/{name}", EVHTTP_REQ_DELETE, NEED_ADMIN, NEED_ADMIN, NO_BODY, h_remove},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
