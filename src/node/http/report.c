/*
 * report.c - GET /v1/report (role report; docs/mirror.md, "Distributed report"): this server's
 * part of `lockstep report`: its name, and for each of its mirroring jobs the source and the
 * newest run as stored (state, times, counts, note, each target's result). Each server keeps its
 * own history; the CLI asks every server and merges.
 *
 * The history is read on a reader thread; whether a job is running now is the loop's to add.
 *
 * Not for: the jobs themselves (node/mirror.c), the merge (cli/cmd_report.c).
 */
#include "node/http/http.h"
#include "node/mirror.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

struct report_scan {
    struct store *st;
    json_t *jobs;
};

static int
newest_run(void *arg, const struct ls_mirror_run *r)
{
    json_t *job = arg, *targets = r->targets ? json_loads(r->targets, 0, NULL) : NULL;
    json_t *o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I}", "run", (json_int_t)r->id, "state",
                          r->state ? r->state : "", "started", (json_int_t)r->started, "ended",
                          (json_int_t)r->ended, "items", (json_int_t)r->items, "bytes",
                          (json_int_t)r->bytes, "errors", (json_int_t)r->errors);
    if (r->note) json_object_set_new(o, "note", json_string(r->note));
    json_object_set_new(o, "targets", targets ? targets : json_array());
    json_object_set_new(job, "last", o);
    return 1;
}

static int
one_job(void *arg, const char *name, const char *def, int paused)
{
    struct report_scan *s = arg;
    json_t *d = json_loads(def, 0, NULL);
    json_t *job = json_pack("{s:s,s:O,s:O,s:b}", "job", name, "source",
                            json_object_get(d, "source") ? json_object_get(d, "source")
                                                         : json_null(),
                            "targets",
                            json_object_get(d, "targets") ? json_object_get(d, "targets")
                                                          : json_null(),
                            "paused", paused);
    json_decref(d);
    store_mirror_runs(s->st, name, 1, newest_run, job);
    json_array_append_new(s->jobs, job);
    return 0;
}

static void
report_run(struct store *st, struct http_read *r)
{
    struct report_scan s = {st, json_array()};
    if (store_mirror_jobs(st, one_job, &s) < 0) {
        json_decref(s.jobs);
        ls_error_set(&r->err, LS_EIO, "cannot read the mirroring jobs");
        return;
    }
    r->reply = json_pack("{s:o}", "jobs", s.jobs);
}

/* On the loop: the server's name and time, and which jobs run now. */
static int
report_finish(struct http_read *r)
{
    json_t *jobs = json_object_get(r->reply, "jobs"), *j;
    size_t i;
    json_object_set_new(r->reply, "server", json_string(r->c->srv->cfg.name));
    json_object_set_new(r->reply, "now", json_integer(ls_now_ms()));
    json_array_foreach(jobs, i, j)
    {
        struct mirror_job *job = mirror_find(r->c->srv, json_string_value(json_object_get(j, "job")));
        json_object_set_new(j, "running", json_boolean(job && mirror_running(job)));
    }
    return 0;
}

static void
h_report(struct ctx *c)
{
    struct http_read *r = calloc(1, sizeof *r);
    if (!r) {
        reply_error(c->req, LS_ENOMEM, NULL);
        ctx_free(c);
        return;
    }
    r->run = report_run;
    r->finish = report_finish;
    http_read_submit(c, r);
}

void
http_report_routes(struct server *srv)
{
    static const struct route routes[] = {
        {"/v1/report", M_GET, NEED_REPORT, NEED_ADMIN, 0, h_report},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
