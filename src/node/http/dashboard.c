/*
 * dashboard.c - the dashboard on the HTTP port (docs/dashboard.md): GET / is a whole HTML page
 * built here from the same state as the API (status, the site registry, the consumers, the
 * mirroring jobs), readable without JavaScript; GET /v1/dashboard/events streams the same
 * sections again (Server-Sent Events) once a second, only those that changed, and the page's
 * script (dash/dash.js, embedded at build time) puts them in place. A 1 Hz sampler on the loop
 * keeps ten minutes of this server's seq and of its downstreams' acknowledged seqs, from which
 * the write and replication rates are drawn (inline SVG).
 *
 * Lag is a position difference (the site's newest seq minus the server's) and, in bytes and
 * seconds, the size of the changes it has not applied and the age of the oldest of them, as
 * this server's log knows them: an idle site shows no lag, however long it stays idle.
 *
 * Not for: the data itself (the API routes), or figures for a machine (/v1/status, /v1/nodes).
 */
#include "node/http/http.h"
#include "node/messenger.h"
#include "node/mirror.h"
#include "node/site.h"
#include "common/log.h"
#include "common/util.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* scripts/embed.cmake, from src/node/http/dash/ */
extern const unsigned char dash_dash_css[], dash_dash_js[];
extern const unsigned long dash_dash_css_len, dash_dash_js_len;

#define SAMPLES 600          /* one a second: ten minutes */
#define CHART_STEP 5         /* seconds per point of the chart */
#define CONSUMERS_SHOWN 2000 /* beyond: "and N more" */
#define WARNINGS_SHOWN 50
#define PAGE_MAX (64u << 20) /* a page is never larger: a cap, far above 1,024 servers */

enum { SEC_SUMMARY, SEC_RATES, SEC_SERVERS, SEC_MESSENGER, SEC_MIRRORS, SEC_WARNINGS, NSEC };
static const char *const sec_id[NSEC] = {"summary",   "rates",   "servers",
                                         "messenger", "mirrors", "warnings"};

struct sample {
    int64_t seq, acked;
};

struct dclient {
    struct stream s; /* first: the stream callbacks get it */
    struct dashboard *d;
    struct dclient *next;
    int sending, missed;
};

struct dashboard {
    struct server *srv;
    struct event *tick;
    struct sample ring[SAMPLES];
    int n, head;      /* samples held; where the next goes */
    char *last[NSEC]; /* each section as last sent */
    struct dclient *clients;
};

/* ---------------------------------------------------------------- text */

static void
esc(struct ls_buf *b, const char *s)
{
    const char *run = s;
    if (!s) return;
    for (; *s; s++) {
        const char *r = NULL;
        switch (*s) {
        case '<':
            r = "&lt;";
            break;
        case '>':
            r = "&gt;";
            break;
        case '&':
            r = "&amp;";
            break;
        case '"':
            r = "&quot;";
            break;
        case '\'':
            r = "&#39;";
            break;
        default:
            continue;
        }
        ls_buf_append(b, run, (size_t)(s - run));
        ls_buf_append(b, r, strlen(r));
        run = s + 1;
    }
    ls_buf_append(b, run, (size_t)(s - run));
}

static const char *
jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int64_t
jint(json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

static void
bytes_text(struct ls_buf *b, int64_t n)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        ls_buf_printf(b, "%" PRId64 " B", n);
    else
        ls_buf_printf(b, "%.1f %s", v, unit[u]);
}

static void
ago_text(struct ls_buf *b, int64_t ms_ago)
{
    int64_t s = ms_ago < 0 ? 0 : ms_ago / 1000;
    if (s < 60)
        ls_buf_printf(b, "%" PRId64 " s ago", s);
    else if (s < 3600)
        ls_buf_printf(b, "%" PRId64 " min ago", s / 60);
    else if (s < 86400)
        ls_buf_printf(b, "%" PRId64 " h ago", s / 3600);
    else
        ls_buf_printf(b, "%" PRId64 " d ago", s / 86400);
}

/* An ISO time from the API as "N s ago" (the time itself in the title). */
static void
time_cell(struct ls_buf *b, const char *cls, const char *iso, int64_t now)
{
    int64_t ms;
    ls_buf_printf(b, "<td class=%s title=\"", cls);
    esc(b, iso);
    ls_buf_append(b, "\">", 2);
    if (iso && *iso && ls_parse_time(iso, &ms) == 0)
        ago_text(b, now - ms);
    else
        ls_buf_append(b, "-", 1);
    ls_buf_append(b, "</td>", 5);
}

/* ---------------------------------------------------------------- sections */

static void
sec_summary(struct ls_buf *b, struct server *srv, json_t *st)
{
    char t[40];
    int64_t up = jint(st, "uptime_s");
    ls_format_time(ls_now_ms(), t, sizeof t);
    ls_buf_printf(b, "<h2>This server</h2><dl class=summary>");
    ls_buf_printf(b, "<dt>name</dt><dd class=name>");
    esc(b, jstr(st, "name"));
    ls_buf_printf(b, "</dd><dt>role</dt><dd class=role>");
    esc(b, jstr(st, "role"));
    ls_buf_printf(b, "</dd><dt>state</dt><dd class=\"state st-");
    esc(b, jstr(st, "state"));
    ls_buf_printf(b, "\">");
    esc(b, jstr(st, "state"));
    ls_buf_printf(
        b, "</dd><dt>seq</dt><dd class=seq>%" PRId64 "</dd><dt>epoch</dt><dd>%" PRId64 "</dd>",
        jint(st, "seq"), jint(st, "epoch"));
    if (json_object_get(st, "upstream")) {
        ls_buf_printf(b, "<dt>follows</dt><dd>");
        esc(b, *jstr(st, "upstream_name") ? jstr(st, "upstream_name") : jstr(st, "upstream"));
        ls_buf_printf(b, " (behind by %" PRId64 " changes)</dd>", jint(st, "lag_changes"));
        if (*jstr(st, "last_error")) {
            ls_buf_printf(b, "<dt>last error</dt><dd class=err>");
            esc(b, jstr(st, "last_error"));
            ls_buf_printf(b, "</dd>");
        }
    }
    ls_buf_printf(b, "<dt>downstreams</dt><dd>%" PRId64 "</dd><dt>version</dt><dd>",
                  jint(st, "downstreams"));
    esc(b, jstr(st, "version"));
    ls_buf_printf(b, "</dd><dt>up</dt><dd>%" PRId64 "h %02" PRId64 "m %02" PRId64 "s</dd>",
                  up / 3600, up / 60 % 60, up % 60);
    ls_buf_printf(b, "<dt>as of</dt><dd class=asof>%s</dd></dl>", t);
    (void)srv;
}

/* Rates over a window of CHART_STEP seconds ending at sample i (0: the oldest held). */
static struct sample
sample_at(const struct dashboard *d, int i)
{
    return d->ring[(d->head - d->n + i + SAMPLES) % SAMPLES];
}

static void
polyline(struct ls_buf *b, const double *v, int n, double max, const char *cls)
{
    ls_buf_printf(b, "<polyline class=%s points=\"", cls);
    for (int i = 0; i < n; i++)
        ls_buf_printf(b, "%s%.1f,%.1f", i ? " " : "",
                      600.0 * (i + (SAMPLES / CHART_STEP - n)) / (SAMPLES / CHART_STEP - 1),
                      118.0 - 110.0 * v[i] / max);
    ls_buf_printf(b, "\"/>");
}

static void
sec_rates(struct ls_buf *b, const struct dashboard *d)
{
    double w[SAMPLES / CHART_STEP], r[SAMPLES / CHART_STEP], max = 1, wnow = 0, rnow = 0;
    int n = 0;
    for (int i = CHART_STEP; i < d->n; i += CHART_STEP) {
        struct sample a = sample_at(d, i - CHART_STEP), z = sample_at(d, i);
        w[n] = z.seq > a.seq ? (double)(z.seq - a.seq) / CHART_STEP : 0;
        r[n] = z.acked > a.acked ? (double)(z.acked - a.acked) / CHART_STEP : 0;
        if (w[n] > max) max = w[n];
        if (r[n] > max) max = r[n];
        n++;
    }
    if (n) {
        wnow = w[n - 1];
        rnow = r[n - 1];
    }
    ls_buf_printf(b,
                  "<h2>Changes per second, last 10 minutes</h2>"
                  "<p class=legend><span class=lw>&#9632; written or applied here: "
                  "<b class=wrate>%.1f/s</b></span> <span class=lr>&#9632; applied by "
                  "downstreams: <b class=rrate>%.1f/s</b></span> <span class=max>(top of "
                  "chart: %.1f/s)</span></p>",
                  wnow, rnow, max);
    ls_buf_printf(b, "<svg class=chart viewBox=\"0 0 600 120\" preserveAspectRatio=none "
                     "role=img aria-label=\"change rates\"><line class=axis x1=0 y1=118 x2=600 "
                     "y2=118 />");
    if (n) {
        polyline(b, r, n, max, "rrate");
        polyline(b, w, n, max, "wrate");
    }
    ls_buf_printf(b, "</svg><p class=axis-labels><span>-10 min</span><span>now</span></p>");
}

/* The site's newest position: the highest seq any server of it is known to hold. */
static int64_t
site_head(struct server *srv, json_t *nodes, json_t *st)
{
    int64_t head = srv->pos.seq;
    size_t i;
    json_t *n;
    if (jint(st, "upstream_seq") > head) head = jint(st, "upstream_seq");
    json_array_foreach(nodes, i, n) if (jint(n, "seq") > head) head = jint(n, "seq");
    return head;
}

/*
 * What a server at seq lacks of this server's log: its size in bytes (the log's cum counts the
 * bytes up to and with each entry: my_cum less the cum of the last entry applied) and the time
 * of the first change not applied. -1 when the log cannot tell (this server is not ahead, or
 * the entries are gone with retention).
 */
static int
lag_in_log(struct server *srv, int64_t seq, int64_t first, int64_t my_cum, int64_t *bytes,
           int64_t *first_ts)
{
    int64_t cum = 0, ts, ignored;
    if (my_cum < 0 || seq >= srv->pos.seq || (seq > 0 && seq < first)) return -1;
    if (seq > 0 && store_log_cum_at(srv->reader, seq, &cum, &ts)) return -1;
    if (store_log_cum_at(srv->reader, seq + 1, &ignored, first_ts)) return -1;
    *bytes = my_cum > cum ? my_cum - cum : 0;
    return 0;
}

static void
sec_servers(struct ls_buf *b, struct server *srv, json_t *nodes, json_t *st)
{
    int64_t now = ls_now_ms(), head = site_head(srv, nodes, st), my_cum = 0, ts;
    size_t i, count[3] = {0, 0, 0};
    json_t *n;
    int64_t first = store_log_first_seq(srv->reader);
    if (store_log_cum_at(srv->reader, srv->pos.seq, &my_cum, &ts)) my_cum = -1;
    json_array_foreach(nodes, i, n)
    {
        const char *s = jstr(n, "state");
        count[strcmp(s, "active") == 0 ? 0 : strcmp(s, "stale") == 0 ? 1 : 2]++;
    }
    ls_buf_printf(b,
                  "<h2>Servers of the site <small>%zu: %zu active, %zu stale, %zu down; newest "
                  "seq %" PRId64 "</small></h2>",
                  json_array_size(nodes), count[0], count[1], count[2], head);
    ls_buf_printf(b, "<table class=servers><thead><tr><th>name</th><th>role</th><th>state</th>"
                     "<th>seq</th><th>lag</th><th>lag bytes</th><th>lag time</th><th>last "
                     "heartbeat</th><th>version</th><th>follows</th><th>http</th></tr></thead>"
                     "<tbody>");
    json_array_foreach(nodes, i, n)
    {
        int64_t seq = jint(n, "seq"), lag = head > seq ? head - seq : 0, bytes, t1;
        const char *state = jstr(n, "state"), *up = jstr(n, "upstream");
        ls_buf_printf(b, "<tr data-name=\"");
        esc(b, jstr(n, "name"));
        ls_buf_printf(b, "\" class=\"st-%s\"><td class=name>", state);
        esc(b, jstr(n, "name"));
        if (strcmp(jstr(n, "name"), srv->cfg.name) == 0) ls_buf_printf(b, " <small>(this)</small>");
        ls_buf_printf(b, "</td><td class=role>");
        esc(b, jstr(n, "role"));
        ls_buf_printf(b,
                      "</td><td class=state><span class=\"badge st-%s\">%s</span></td>"
                      "<td class=seq>%" PRId64 "</td><td class=lag>%" PRId64 "</td>",
                      state, state, seq, lag);
        if (lag == 0) {
            ls_buf_printf(b, "<td class=lagbytes>0 B</td><td class=lagtime>0 s</td>");
        } else if (lag_in_log(srv, seq, first, my_cum, &bytes, &t1) == 0) {
            ls_buf_printf(b, "<td class=lagbytes>");
            bytes_text(b, bytes);
            ls_buf_printf(b, "</td><td class=lagtime>%" PRId64 " s</td>",
                          now > t1 ? (now - t1) / 1000 : 0);
        } else {
            ls_buf_printf(b, "<td class=lagbytes>-</td><td class=lagtime>-</td>");
        }
        time_cell(b, "hb", jstr(n, "last_heartbeat"), now);
        ls_buf_printf(b, "<td class=version>");
        esc(b, jstr(n, "version"));
        ls_buf_printf(b, "</td><td>");
        esc(b, *up ? up : "-");
        ls_buf_printf(b, "</td><td>");
        if (*jstr(n, "http")) {
            ls_buf_printf(b, "<a href=\"http://");
            esc(b, jstr(n, "http"));
            ls_buf_printf(b, "/\">");
            esc(b, jstr(n, "http"));
            ls_buf_printf(b, "</a>");
        }
        ls_buf_printf(b, "</td></tr>");
    }
    ls_buf_printf(b, "</tbody></table>");
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(jstr(*(json_t *const *)a, "name"), jstr(*(json_t *const *)b, "name"));
}

static void
sec_messenger(struct ls_buf *b, struct server *srv, json_t *st)
{
    json_t *ms = json_object_get(st, "messenger"), *consumers, *chans, *c, *v, **sorted;
    json_t *states = json_object_get(ms, "states");
    size_t i, j, n, shown;
    const char *key;
    ls_buf_printf(b,
                  "<h2>Messenger <small>%" PRId64 " consumers: %" PRId64 " live, %" PRId64
                  " behind, %" PRId64 " stalled, %" PRId64 " reset; log head %" PRId64
                  "</small></h2>",
                  jint(ms, "consumers"), jint(states, "live"), jint(states, "behind"),
                  jint(states, "stalled"), jint(states, "reset"), srv->pos.seq);
    if (srv->pgmsg) {
        ls_buf_printf(b, "<p>The consumers are kept in the shared database (--messenger): "
                         "<a href=\"/v1/consumers\">/v1/consumers</a>.</p>");
        return;
    }
    consumers = messenger_consumers_json(srv);
    n = json_array_size(consumers);
    /* channels: how many consumers read each ("*": every channel) */
    chans = json_object();
    json_array_foreach(consumers, i, c)
    {
        json_t *list = json_object_get(c, "channels");
        if (json_array_size(list) == 0) {
            json_object_set_new(chans, "*", json_integer(jint(chans, "*") + 1));
            continue;
        }
        json_array_foreach(list, j, v)
        {
            const char *name = json_string_value(v);
            if (name) json_object_set_new(chans, name, json_integer(jint(chans, name) + 1));
        }
    }
    ls_buf_printf(b, "<p class=channels>Channels: ");
    if (json_object_size(chans) == 0) ls_buf_printf(b, "none yet");
    i = 0;
    json_object_foreach(chans, key, v)
    {
        if (i++ == 100) {
            ls_buf_printf(b, " and %zu more", json_object_size(chans) - 100);
            break;
        }
        ls_buf_printf(b, "<span class=chan>");
        esc(b, strcmp(key, "*") == 0 ? "every channel" : key);
        ls_buf_printf(b, " <small>%" PRId64 "</small></span> ", (int64_t)json_integer_value(v));
    }
    ls_buf_printf(b, "</p>");
    json_decref(chans);
    if (n == 0) {
        ls_buf_printf(b, "<p>No consumers.</p>");
        json_decref(consumers);
        return;
    }
    sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        json_decref(consumers);
        return;
    }
    json_array_foreach(consumers, i, c) sorted[i] = c;
    qsort(sorted, n, sizeof *sorted, by_name);
    ls_buf_printf(b, "<table class=consumers><thead><tr><th>consumer</th><th>channels</th>"
                     "<th>state</th><th>position</th><th>pending</th><th>lag time</th>"
                     "<th>readers</th><th>resets</th><th>last ack</th></tr></thead><tbody>");
    shown = n < CONSUMERS_SHOWN ? n : CONSUMERS_SHOWN;
    for (i = 0; i < shown; i++) {
        json_t *list;
        c = sorted[i];
        list = json_object_get(c, "channels");
        ls_buf_printf(b, "<tr data-name=\"");
        esc(b, jstr(c, "name"));
        ls_buf_printf(b, "\" class=\"cs-%s%s\"><td class=name>", jstr(c, "state"),
                      json_is_true(json_object_get(c, "at_risk")) ? " risk" : "");
        esc(b, jstr(c, "name"));
        ls_buf_printf(b, "</td><td>");
        if (json_array_size(list) == 0) ls_buf_printf(b, "*");
        json_array_foreach(list, j, v)
        {
            if (j) ls_buf_append(b, ", ", 2);
            esc(b, json_string_value(v));
        }
        ls_buf_printf(b,
                      "</td><td class=state><span class=\"badge cs-%s\">%s</span></td><td>%" PRId64
                      "</td><td class=pending>%" PRId64 "</td><td>%" PRId64 " s</td><td>%" PRId64
                      "</td><td>%" PRId64 "</td>",
                      jstr(c, "state"), jstr(c, "state"), jint(c, "position"), jint(c, "pending"),
                      jint(c, "lag_seconds"), jint(c, "connected"), jint(c, "resets"));
        time_cell(b, "ack", jstr(c, "last_ack"), ls_now_ms());
        ls_buf_printf(b, "</tr>");
    }
    ls_buf_printf(b, "</tbody></table>");
    if (n > shown) ls_buf_printf(b, "<p>and %zu more</p>", n - shown);
    free(sorted);
    json_decref(consumers);
}

static void
sec_mirrors(struct ls_buf *b, struct server *srv)
{
    json_t *jobs = mirror_list_json(srv), *j, *v;
    size_t i, k;
    int64_t now = ls_now_ms();
    ls_buf_printf(b, "<h2>Mirroring jobs <small>%zu</small></h2>", json_array_size(jobs));
    if (json_array_size(jobs) == 0) {
        ls_buf_printf(b, "<p>No mirroring jobs.</p>");
        json_decref(jobs);
        return;
    }
    ls_buf_printf(b, "<table class=mirrors><thead><tr><th>job</th><th>source &rarr; "
                     "targets</th><th>state</th><th>progress</th><th>last run</th><th>errors</th>"
                     "</tr></thead><tbody>");
    json_array_foreach(jobs, i, j)
    {
        json_t *def = json_object_get(j, "definition"), *p = json_object_get(j, "progress");
        int running = json_is_true(json_object_get(j, "running"));
        const char *state = running                                      ? "running"
                            : json_is_true(json_object_get(j, "paused")) ? "paused"
                            : *jstr(j, "last_state")                     ? jstr(j, "last_state")
                                                                         : "waiting";
        ls_buf_printf(b, "<tr data-name=\"");
        esc(b, jstr(j, "name"));
        ls_buf_printf(b, "\" class=\"ms-%s\"><td class=name>", state);
        esc(b, jstr(j, "name"));
        ls_buf_printf(b, "</td><td>");
        esc(b, jstr(def, "source"));
        ls_buf_printf(b, " &rarr; ");
        json_array_foreach(json_object_get(def, "targets"), k, v)
        {
            if (k) ls_buf_append(b, ", ", 2);
            esc(b, json_is_string(v) ? json_string_value(v) : jstr(v, "target"));
        }
        if (jint(def, "every_ms") > 0)
            ls_buf_printf(b, " <small>every %" PRId64 " s</small>", jint(def, "every_ms") / 1000);
        ls_buf_printf(b, "</td><td class=state><span class=\"badge ms-%s\">", state);
        esc(b, state);
        ls_buf_printf(b, "</span></td><td class=progress>");
        if (p) {
            double pct = json_real_value(json_object_get(p, "percent"));
            ls_buf_printf(b,
                          "<progress max=100 value=\"%.1f\"></progress> <span class=pct>%.1f%%"
                          "</span> <small>",
                          pct, pct);
            esc(b, jstr(p, "phase"));
            ls_buf_printf(b, ", %" PRId64 "/%" PRId64 " items, ", jint(p, "items_done"),
                          jint(p, "items_total"));
            bytes_text(b, jint(p, "bytes_done"));
            ls_buf_printf(b, "</small>");
        } else {
            ls_buf_printf(b, "-");
        }
        ls_buf_printf(b, "</td>");
        if (json_object_get(j, "last_ended"))
            time_cell(b, "last", jstr(j, "last_ended"), now);
        else
            ls_buf_printf(b, "<td class=last>never</td>");
        ls_buf_printf(b, "<td class=errors>%" PRId64,
                      p ? jint(p, "errors") : jint(j, "last_errors"));
        if (!p && *jstr(j, "last_note")) {
            ls_buf_printf(b, " <small class=err>");
            esc(b, jstr(j, "last_note"));
            ls_buf_printf(b, "</small>");
        }
        ls_buf_printf(b, "</td></tr>");
    }
    ls_buf_printf(b, "</tbody></table>");
    json_decref(jobs);
}

static void
sec_warnings(struct ls_buf *b, json_t *st)
{
    json_t *w = json_object_get(st, "warnings"), *o;
    size_t n = json_array_size(w), shown = 0;
    ls_buf_printf(b, "<h2>Recent warnings <small>%zu</small></h2>", n);
    if (n == 0) {
        ls_buf_printf(b, "<p>None.</p>");
        return;
    }
    ls_buf_printf(b, "<ul class=warnings>");
    /* newest first */
    for (size_t i = n; i-- > 0 && shown < WARNINGS_SHOWN; shown++) {
        o = json_array_get(w, i);
        ls_buf_printf(b, "<li class=\"lv-");
        esc(b, jstr(o, "level"));
        ls_buf_printf(b, "\"><time>");
        if (json_is_integer(json_object_get(o, "time"))) {
            char t[40];
            ls_format_time(jint(o, "time"), t, sizeof t);
            esc(b, t);
        } else {
            esc(b, jstr(o, "time"));
        }
        ls_buf_printf(b, "</time> <b>");
        esc(b, jstr(o, "level"));
        ls_buf_printf(b, "</b> ");
        esc(b, jstr(o, "msg"));
        ls_buf_printf(b, "</li>");
    }
    ls_buf_printf(b, "</ul>");
}

/* Every section, each a NUL-terminated string (the caller frees them). -1: out of memory. */
static int
render(struct dashboard *d, char *out[NSEC])
{
    struct server *srv = d->srv;
    json_t *st = status_json(srv), *nodes = site_api_nodes(srv);
    int rc = 0;
    for (int i = 0; i < NSEC; i++) {
        struct ls_buf b;
        ls_buf_init(&b, PAGE_MAX);
        switch (i) {
        case SEC_SUMMARY:
            sec_summary(&b, srv, st);
            break;
        case SEC_RATES:
            sec_rates(&b, d);
            break;
        case SEC_SERVERS:
            sec_servers(&b, srv, nodes, st);
            break;
        case SEC_MESSENGER:
            sec_messenger(&b, srv, st);
            break;
        case SEC_MIRRORS:
            sec_mirrors(&b, srv);
            break;
        case SEC_WARNINGS:
            sec_warnings(&b, st);
            break;
        }
        if (ls_buf_append(&b, "", 1)) { /* the NUL; fails too when a piece did not fit */
            ls_buf_release(&b);
            out[i] = NULL;
            rc = -1;
            continue;
        }
        out[i] = b.p;
    }
    json_decref(st);
    json_decref(nodes);
    return rc;
}

static void
free_sections(char *s[NSEC])
{
    for (int i = 0; i < NSEC; i++) {
        free(s[i]);
        s[i] = NULL;
    }
}

/* ---------------------------------------------------------------- GET / and the assets */

static void
reply_text(struct evhttp_request *req, const char *type, const void *p, size_t n)
{
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!out) {
        reply_error(req, LS_ENOMEM, NULL);
        return;
    }
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evbuffer_add(out, p, n);
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void
h_page(struct ctx *c)
{
    struct dashboard *d = c->srv->dash;
    char *sec[NSEC] = {0};
    struct ls_buf b;
    if (!d) {
        reply_error(c->req, LS_ENOMEM, "the dashboard could not start");
        goto out;
    }
    if (render(d, sec)) {
        reply_error(c->req, LS_ETOOBIG, "the dashboard page is too large");
        goto out;
    }
    ls_buf_init(&b, PAGE_MAX);
    ls_buf_printf(&b, "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
                      "<meta name=viewport content=\"width=device-width\"><title>lockstep: ");
    esc(&b, c->srv->cfg.name);
    ls_buf_printf(&b, "</title><link rel=stylesheet href=\"/dash/dash.css\">"
                      "<noscript><meta http-equiv=refresh content=5></noscript></head>"
                      "<body><header><h1>lockstep <span>");
    esc(&b, c->srv->cfg.name);
    ls_buf_printf(&b, "</span></h1><span id=live class=off title=\"Server-Sent Events\">not live"
                      "</span></header><main>");
    for (int i = 0; i < NSEC; i++)
        ls_buf_printf(&b, "<section id=%s>%s</section>", sec_id[i], sec[i]);
    ls_buf_printf(&b, "</main><footer>JSON: <a href=\"/v1/status\">status</a> &middot; <a "
                      "href=\"/v1/nodes?all=1\">nodes</a> &middot; <a href=\"/v1/consumers\">"
                      "consumers</a> &middot; <a href=\"/v1/mirrors\">mirrors</a></footer>"
                      "<script src=\"/dash/dash.js\"></script></body></html>\n");
    if (b.len >= PAGE_MAX - 1)
        reply_error(c->req, LS_ETOOBIG, "the dashboard page is too large");
    else
        reply_text(c->req, "text/html; charset=utf-8", b.p, b.len);
    ls_buf_release(&b);
out:
    free_sections(sec);
    ctx_free(c);
}

static void
h_css(struct ctx *c)
{
    reply_text(c->req, "text/css; charset=utf-8", dash_dash_css, dash_dash_css_len);
    ctx_free(c);
}

static void
h_js(struct ctx *c)
{
    reply_text(c->req, "text/javascript; charset=utf-8", dash_dash_js, dash_dash_js_len);
    ctx_free(c);
}

/* ---------------------------------------------------------------- the event stream */

/* One "sections" event: {"id": html, ...} for the sections marked in which. */
static struct evbuffer *
sections_event(char *sec[NSEC], const int which[NSEC])
{
    struct evbuffer *out = evbuffer_new();
    json_t *o = json_object();
    char *text;
    for (int i = 0; i < NSEC; i++)
        if (which[i] && sec[i]) json_object_set_new(o, sec_id[i], json_string(sec[i]));
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!out || !text) {
        if (out) evbuffer_free(out);
        free(text);
        return NULL;
    }
    sse_format(out, "sections", NULL, text);
    free(text);
    return out;
}

static void
client_send(struct dclient *cl, struct evbuffer *ev)
{
    /* each client gets its own copy: evhttp drains what it sends */
    struct evbuffer *copy = evbuffer_new();
    size_t n = evbuffer_get_length(ev);
    if (!copy) return;
    if (evbuffer_add(copy, evbuffer_pullup(ev, -1), n)) {
        evbuffer_free(copy);
        return;
    }
    cl->sending = 1;
    cl->missed = 0;
    stream_send(&cl->s, copy);
    evbuffer_free(copy);
}

static void
client_unlink(struct dclient *cl)
{
    for (struct dclient **p = &cl->d->clients; *p; p = &(*p)->next)
        if (*p == cl) {
            *p = cl->next;
            return;
        }
}

static void
client_gone(struct stream *s)
{
    struct dclient *cl = (struct dclient *)s;
    client_unlink(cl);
    free(cl);
}

static void
client_sent(struct stream *s)
{
    ((struct dclient *)s)->sending = 0;
}

static void
h_events(struct ctx *c)
{
    struct dashboard *d = c->srv->dash;
    struct dclient *cl = NULL;
    char *sec[NSEC] = {0};
    int all[NSEC];
    struct evbuffer *ev = NULL;
    for (int i = 0; i < NSEC; i++)
        all[i] = 1;
    if (!d || !(cl = calloc(1, sizeof *cl)) || render(d, sec) || !(ev = sections_event(sec, all))) {
        reply_error(c->req, LS_ENOMEM, NULL);
        free(cl);
        goto out;
    }
    cl->d = d;
    cl->s.on_gone = client_gone;
    cl->s.on_sent = client_sent;
    cl->next = d->clients;
    d->clients = cl;
    stream_start_sse(&cl->s, c->req);
    client_send(cl, ev);
out:
    if (ev) evbuffer_free(ev);
    free_sections(sec);
    ctx_free(c);
}

/* ---------------------------------------------------------------- the 1 Hz tick */

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dashboard *d = arg;
    char *sec[NSEC] = {0};
    int changed[NSEC], all[NSEC], any = 0;
    struct evbuffer *diff = NULL, *full = NULL;
    if (d->srv->stopping) return;
    d->ring[d->head] = (struct sample){d->srv->pos.seq, repl_up_acked_sum(d->srv)};
    d->head = (d->head + 1) % SAMPLES;
    if (d->n < SAMPLES) d->n++;
    if (!d->clients) return;
    if (render(d, sec)) goto out;
    for (int i = 0; i < NSEC; i++) {
        all[i] = 1;
        changed[i] = !d->last[i] || strcmp(d->last[i], sec[i]) != 0;
        any |= changed[i];
    }
    for (struct dclient *cl = d->clients; cl; cl = cl->next) {
        struct evbuffer **ev = cl->missed ? &full : &diff;
        if (cl->sending) { /* a slow reader: skips ticks, then gets everything at once */
            cl->missed = 1;
            continue;
        }
        if (!cl->missed && !any) continue;
        if (!*ev) *ev = sections_event(sec, cl->missed ? all : changed);
        if (*ev) client_send(cl, *ev);
    }
    for (int i = 0; i < NSEC; i++) {
        free(d->last[i]);
        d->last[i] = sec[i];
        sec[i] = NULL;
    }
out:
    if (diff) evbuffer_free(diff);
    if (full) evbuffer_free(full);
    free_sections(sec);
}

/* ---------------------------------------------------------------- start and stop */

void
http_dashboard_routes(struct server *srv)
{
    const struct route routes[] = {
        {"/", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_page},
        {"/dash/dash.css", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_css},
        {"/dash/dash.js", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_js},
        {"/v1/dashboard/events", M_GET, NEED_REPORT, NEED_REPORT, NO_BODY, h_events},
    };
    struct timeval sec = {1, 0};
    struct dashboard *d = calloc(1, sizeof *d);
    http_routes(srv, routes, sizeof routes / sizeof routes[0]);
    if (!d || !(d->tick = event_new(srv->base, -1, EV_PERSIST, on_tick, d))) {
        log_warn("the dashboard could not start: out of memory");
        free(d);
        return;
    }
    d->srv = srv;
    srv->dash = d;
    evtimer_add(d->tick, &sec);
}

void
http_dashboard_stop(struct server *srv)
{
    struct dashboard *d = srv->dash;
    if (!d) return;
    evtimer_del(d->tick);
    while (d->clients) {
        struct dclient *cl = d->clients;
        d->clients = cl->next;
        stream_end(&cl->s);
        free(cl);
    }
}

void
http_dashboard_free(struct server *srv)
{
    struct dashboard *d = srv->dash;
    if (!d) return;
    http_dashboard_stop(srv);
    event_free(d->tick);
    for (int i = 0; i < NSEC; i++)
        free(d->last[i]);
    free(d);
    srv->dash = NULL;
}
