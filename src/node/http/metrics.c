/*
 * metrics.c - GET /metrics: this server's figures in the Prometheus text format (version 0.0.4),
 * every name prefixed lockstep_, counters ending in _total (docs/api.md, "Metrics").
 *
 * The figures are read where they live: status_json() (the same object GET /v1/status answers,
 * so a scrape and `lockstep status --json` agree), the downstream registry, the consumers, the
 * mirror jobs, the router's answer counts and the writer's queue. Label sets stay bounded: per
 * downstream (the registry keeps at most a few hundred), per route pattern and status code, per
 * mirror job and per consumer, the last two at most METRICS_NAMED_MAX each (the aggregate
 * gauges count them all).
 *
 * Not for: history. Everything here is since this server started; Prometheus keeps the rest.
 */
#include "node/http/http.h"
#include "node/messenger.h"
#include "node/mirror.h"
#include "common/log.h"

#include <event2/buffer.h>
#include <string.h>

#define METRICS_NAMED_MAX 1000 /* consumers, and mirror jobs, that get series of their own */

/* ---------------------------------------------------------------- the format */

static void
family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP lockstep_%s %s\n# TYPE lockstep_%s %s\n", name, help, name,
                        type);
}

/* A label value with \, " and newlines escaped. */
static void
label_value(struct evbuffer *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\') evbuffer_add(out, "\\\\", 2);
        else if (*v == '"') evbuffer_add(out, "\\\"", 2);
        else if (*v == '\n') evbuffer_add(out, "\\n", 2);
        else evbuffer_add(out, v, 1);
    }
}

/* One sample: its name, at most two labels (k1="v1",k2="v2"; a NULL key: none), its value. */
static void
sample(struct evbuffer *out, const char *name, const char *k1, const char *v1, const char *k2,
       const char *v2, double value)
{
    evbuffer_add_printf(out, "lockstep_%s", name);
    if (k1) {
        evbuffer_add_printf(out, "{%s=\"", k1);
        label_value(out, v1);
        evbuffer_add(out, "\"", 1);
        if (k2) {
            evbuffer_add_printf(out, ",%s=\"", k2);
            label_value(out, v2);
            evbuffer_add(out, "\"", 1);
        }
        evbuffer_add(out, "}", 1);
    }
    /* integers up to 2^53 print exactly; everything counted here stays below */
    evbuffer_add_printf(out, " %.17g\n", value);
}

static double
num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* One gauge from status when it has the key (a replica's upstream figures, say). */
static void
status_gauge(struct evbuffer *out, json_t *status, const char *key, const char *name,
             const char *help)
{
    if (!json_object_get(status, key)) return;
    family(out, name, "gauge", help);
    sample(out, name, NULL, NULL, NULL, NULL, num(status, key));
}

/* ---------------------------------------------------------------- sections */

static void
server_section(struct evbuffer *out, struct server *srv, json_t *status)
{
    const char *state = json_string_value(json_object_get(status, "state"));
    family(out, "info", "gauge", "this server: name, role and version (always 1)");
    evbuffer_add_printf(out, "lockstep_info{name=\"");
    label_value(out, srv->cfg.name);
    evbuffer_add_printf(out, "\",role=\"");
    label_value(out, srv->cfg.role);
    evbuffer_add_printf(out, "\",version=\"%s\"} 1\n", LS_VERSION);
    status_gauge(out, status, "seq", "seq", "the last seq this server has committed");
    status_gauge(out, status, "epoch", "epoch", "the epoch of this server's history");
    status_gauge(out, status, "log_first_seq", "log_first_seq",
                 "the oldest seq the retained log holds");
    status_gauge(out, status, "uptime_s", "uptime_seconds", "seconds since this server started");
    status_gauge(out, status, "upstream_seq", "upstream_seq",
                 "a replica: the upstream's seq as last heard");
    status_gauge(out, status, "lag_changes", "upstream_lag_changes",
                 "a replica: changes it has not applied yet");
    if (state) {
        family(out, "upstream_live", "gauge",
               "1 when this server is the primary or follows its upstream live, else 0");
        sample(out, "upstream_live", NULL, NULL, NULL, NULL, strcmp(state, "live") == 0);
    }
}

static void
downstream_section(struct evbuffer *out, struct server *srv, json_t *status)
{
    static const struct {
        const char *key, *name, *help;
    } g[] = {
        {"applied_seq", "downstream_applied_seq", "the last seq a downstream acknowledged"},
        {"lag_changes", "downstream_lag_changes", "changes a downstream has not acknowledged"},
        {"lag_bytes", "downstream_lag_bytes", "bytes of log a downstream has not acknowledged"},
        {"lag_seconds", "downstream_lag_seconds",
         "age of the oldest change a downstream has not acknowledged"},
    };
    struct repl_up_counters rc;
    json_t *nodes = repl_up_nodes(srv), *n;
    size_t i;
    status_gauge(out, status, "downstreams", "downstreams_connected",
                 "downstreams connected to this server now");
    family(out, "downstream_up", "gauge",
           "1 for a downstream connected and heard within --heartbeat-timeout, else 0");
    json_array_foreach(nodes, i, n)
    {
        const char *state = json_string_value(json_object_get(n, "state"));
        sample(out, "downstream_up", "downstream", json_string_value(json_object_get(n, "name")),
               NULL, NULL, state && strcmp(state, "down") != 0);
    }
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
        family(out, g[k].name, "gauge", g[k].help);
        json_array_foreach(nodes, i, n)
        {
            sample(out, g[k].name, "downstream", json_string_value(json_object_get(n, "name")),
                   NULL, NULL, num(n, g[k].key));
        }
    }
    json_decref(nodes);
    repl_up_count(srv, &rc);
    family(out, "repl_sent_bytes_total", "counter",
           "bytes sent to downstreams on the peer port (frames, compressed as sent)");
    sample(out, "repl_sent_bytes_total", NULL, NULL, NULL, NULL, (double)rc.bytes_sent);
    family(out, "repl_snapshots_total", "counter", "snapshots begun for downstreams");
    sample(out, "repl_snapshots_total", NULL, NULL, NULL, NULL, (double)rc.snapshots);
    family(out, "repl_catchups_total", "counter",
           "downstream syncs continued from their position without a snapshot");
    sample(out, "repl_catchups_total", NULL, NULL, NULL, NULL, (double)rc.catchups);
}

static void
messenger_section(struct evbuffer *out, struct server *srv, json_t *status)
{
    static const char *const states[] = {"live", "behind", "stalled", "reset"};
    json_t *m = json_object_get(status, "messenger"), *list, *c;
    uint64_t published, acks;
    size_t i, listed;
    messenger_counts(srv, &published, &acks);
    family(out, "notifications_published_total", "counter",
           "notifications accepted by POST /v1/notify on this server");
    sample(out, "notifications_published_total", NULL, NULL, NULL, NULL, (double)published);
    family(out, "consumer_acks_total", "counter", "acknowledgements from this server's consumers");
    sample(out, "consumer_acks_total", NULL, NULL, NULL, NULL, (double)acks);
    family(out, "consumers", "gauge", "consumers kept by this server, by state");
    for (size_t k = 0; k < 4; k++)
        sample(out, "consumers", "state", states[k], NULL, NULL,
               num(json_object_get(m, "states"), states[k]));
    family(out, "consumers_at_risk", "gauge",
           "consumers whose oldest pending notification nears --notify-retention");
    sample(out, "consumers_at_risk", NULL, NULL, NULL, NULL,
           (double)json_array_size(json_object_get(m, "at_risk")));

    /* per consumer, for the first METRICS_NAMED_MAX (those in the shared database: none) */
    list = messenger_consumers_json(srv);
    listed = json_array_size(list) < METRICS_NAMED_MAX ? json_array_size(list) : METRICS_NAMED_MAX;
    family(out, "consumer_position", "gauge", "the last notification id a consumer acknowledged");
    json_array_foreach(list, i, c)
    {
        if (i == METRICS_NAMED_MAX) break;
        sample(out, "consumer_position", "consumer",
               json_string_value(json_object_get(c, "name")), NULL, NULL, num(c, "position"));
    }
    family(out, "consumer_pending", "gauge",
           "notifications waiting for a consumer, as last reckoned (a few seconds old at most)");
    json_array_foreach(list, i, c)
    {
        if (i == METRICS_NAMED_MAX) break;
        sample(out, "consumer_pending", "consumer", json_string_value(json_object_get(c, "name")),
               NULL, NULL, num(c, "pending"));
    }
    family(out, "consumer_lag_seconds", "gauge",
           "age of the oldest notification waiting for a consumer");
    json_array_foreach(list, i, c)
    {
        if (i == METRICS_NAMED_MAX) break;
        sample(out, "consumer_lag_seconds", "consumer",
               json_string_value(json_object_get(c, "name")), NULL, NULL, num(c, "lag_seconds"));
    }
    family(out, "consumers_unlisted", "gauge",
           "consumers beyond the first 1000, which have no series of their own");
    sample(out, "consumers_unlisted", NULL, NULL, NULL, NULL,
           (double)(json_array_size(list) - listed));
    json_decref(list);
}

static void
mirror_section(struct evbuffer *out, struct server *srv)
{
    static const struct {
        const char *name, *help;
    } f[] = {
        {"mirror_runs_total", "mirror runs ended since start, by result (ok, partial, failed)"},
        {"mirror_items_total", "items a mirror job has sent (the running run's so far included)"},
        {"mirror_bytes_total", "bytes a mirror job has sent (the running run's so far included)"},
        {"mirror_errors_total", "items a mirror job failed to send"},
        {"mirror_running", "1 while a run of the job is going on"},
        {"mirror_run_items_planned", "items the running run has to send (0: none running)"},
        {"mirror_run_bytes_planned", "bytes the running run has to send (0: none running)"},
    };
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
        int n = 0;
        family(out, f[k].name, k < 4 ? "counter" : "gauge", f[k].help);
        for (struct mirror_job *j = mirror_next(srv, NULL); j && n < METRICS_NAMED_MAX;
             j = mirror_next(srv, j), n++) {
            struct mirror_counters mc;
            const char *name = mirror_name(j);
            mirror_count(j, &mc);
            switch (k) {
            case 0:
                sample(out, f[k].name, "job", name, "result", "ok", (double)mc.runs_ok);
                sample(out, f[k].name, "job", name, "result", "partial", (double)mc.runs_partial);
                sample(out, f[k].name, "job", name, "result", "failed", (double)mc.runs_failed);
                break;
            case 1: sample(out, f[k].name, "job", name, NULL, NULL, (double)mc.items); break;
            case 2: sample(out, f[k].name, "job", name, NULL, NULL, (double)mc.bytes); break;
            case 3: sample(out, f[k].name, "job", name, NULL, NULL, (double)mc.errors); break;
            case 4: sample(out, f[k].name, "job", name, NULL, NULL, mc.running); break;
            case 5:
                sample(out, f[k].name, "job", name, NULL, NULL, (double)mc.run_items_total);
                break;
            default:
                sample(out, f[k].name, "job", name, NULL, NULL, (double)mc.run_bytes_total);
                break;
            }
        }
    }
}

static void
route_samples(struct evbuffer *out, const struct http_route_stats *st, const char *route)
{
    for (int s = 0; s < HTTP_STATUS_SLOTS; s++) {
        char code[16];
        if (!st->count[s]) continue;
        if (st->code[s]) snprintf(code, sizeof code, "%d", st->code[s]);
        else snprintf(code, sizeof code, "other");
        sample(out, "http_requests_total", "route", route, "code", code, (double)st->count[s]);
    }
}

/* Adds from's counts into into, slot by code. */
static void
stats_add(struct http_route_stats *into, const struct http_route_stats *from)
{
    for (int s = 0; s < HTTP_STATUS_SLOTS; s++) {
        int t = HTTP_STATUS_SLOTS - 1; /* code 0: "other" */
        if (!from->count[s]) continue;
        if (from->code[s])
            for (t = 0; t < HTTP_STATUS_SLOTS - 1; t++)
                if (into->code[t] == from->code[s] || into->code[t] == 0) break;
        if (t < HTTP_STATUS_SLOTS - 1) into->code[t] = from->code[s];
        into->count[t] += from->count[s];
    }
}

static void
http_section(struct evbuffer *out, struct server *srv)
{
    int n;
    const struct http_route_stats *st = http_route_stats(srv, &n);
    family(out, "http_requests_total", "counter",
           "HTTP requests answered, by route pattern and status code (route \"none\": no route "
           "matched); counted once the answer has left, so a scrape does not count itself");
    for (int i = 0; i < n; i++) {
        /* Routes that share a pattern (other methods) share its series: the first sums them. */
        struct http_route_stats sum;
        int first = 1;
        for (int k = 0; k < i && first; k++) first = strcmp(st[k].pattern, st[i].pattern) != 0;
        if (!first) continue;
        memset(&sum, 0, sizeof sum);
        for (int k = i; k < n; k++)
            if (strcmp(st[k].pattern, st[i].pattern) == 0) stats_add(&sum, &st[k]);
        route_samples(out, &sum, st[i].pattern);
    }
    if ((st = http_unmatched_stats(srv))) route_samples(out, st, "none");
}

static void
h_metrics(struct ctx *c)
{
    struct server *srv = c->srv;
    struct evbuffer *out = evhttp_request_get_output_buffer(c->req);
    json_t *status = status_json(srv);
    size_t qreq;
    uint64_t qbytes;

    server_section(out, srv, status);
    downstream_section(out, srv, status);
    messenger_section(out, srv, status);
    mirror_section(out, srv);
    http_section(out, srv);
    writer_queue(srv->writer, &qreq, &qbytes);
    family(out, "writer_queue_requests", "gauge",
           "writes submitted to the writer thread and not yet committed");
    sample(out, "writer_queue_requests", NULL, NULL, NULL, NULL, (double)qreq);
    family(out, "writer_queue_bytes", "gauge", "body bytes of the writes in the writer's queue");
    sample(out, "writer_queue_bytes", NULL, NULL, NULL, NULL, (double)qbytes);
    family(out, "log_messages_total", "counter", "lines logged at each level (warn, error)");
    sample(out, "log_messages_total", "level", "warn", NULL, NULL,
           (double)ls_log_count(LS_LOG_WARN));
    sample(out, "log_messages_total", "level", "error", NULL, NULL,
           (double)ls_log_count(LS_LOG_ERROR));
    json_decref(status);
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(c->req, 200, "OK", NULL);
    ctx_free(c);
}

void
http_metrics_routes(struct server *srv)
{
    /* the role that reads status reads metrics: a scraper's token is a report token */
    const struct route routes[] = {
        {"/metrics", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_metrics},
    };
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
}
