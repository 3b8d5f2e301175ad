/*
 * cmd_report.c - `lockstep report`: the mirroring jobs of several servers in one table
 * (docs/mirror.md, "Distributed report"). Each server keeps its own history; this asks every
 * server given (--servers, or every server of the site registry of --server) for its
 * GET /v1/report, all at once with one deadline, and keeps for each job and source the newest
 * result. A server that does not answer in time is listed as unreachable; the report is printed
 * anyway, within about --timeout however many servers hang.
 */
#include "cli/cli.h"
#include "common/err.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define SERVERS_MAX 256
#define REPORT_MAX (16u << 20)

static const char usage[] =
    "usage: lockstep report [--servers URL,URL...] [--timeout DURATION] [--json]\n\n"
    "The newest result of every mirroring job on every server, merged per job and source.\n"
    "Default servers: every server of the site registry of --server (GET /v1/nodes?all=1).\n"
    "A server that does not answer within --timeout (default 3s) is listed as unreachable;\n"
    "the exit code is then 1. Needs a token with the role report (or read, write, admin).\n\n"
    "  --server URL     the server whose site registry lists the servers\n"
    "  --help           this text\n";

enum { O_SERVERS = 300, O_JSON, O_TIMEOUT };

struct report_args {
    const char *servers;
    int json;
    int64_t timeout_ms;
};

static int
report_opt(int ch, const char *arg, void *ctx)
{
    struct report_args *a = ctx;
    switch (ch) {
    case O_SERVERS:
        a->servers = arg;
        break;
    case O_JSON:
        a->json = 1;
        break;
    case O_TIMEOUT:
        if (ls_parse_duration_ms(arg, &a->timeout_ms) || a->timeout_ms < 100 ||
            a->timeout_ms > 600000)
            return cli_usage_error("report", "--timeout: a duration from 100ms to 10m");
        break;
    }
    return -1;
}

struct server_answer {
    char *url;
    CURL *easy;
    struct curl_slist *headers;
    struct ls_buf body;
    json_t *report;
    char error[300];
};

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
    struct server_answer *s = arg;
    return ls_buf_append(&s->body, data, size * n) ? 0 : size * n;
}

static int
add_server(struct server_answer *v, int *n, const char *url, size_t len)
{
    char *u;
    while (len && url[len - 1] == '/')
        len--;
    if (!len || *n == SERVERS_MAX) return 0;
    if (!memmem(url, len, "://", 3)) {
        if (!(u = malloc(len + 8))) return LS_ENOMEM;
        snprintf(u, len + 8, "http://%.*s", (int)len, url);
    } else if (!(u = strndup(url, len))) {
        return LS_ENOMEM;
    }
    for (int i = 0; i < *n; i++)
        if (strcmp(v[i].url, u) == 0) {
            free(u);
            return 0;
        }
    v[(*n)++].url = u;
    return 0;
}

/* Every server's /v1/report at once, each with the same deadline. */
static void
ask_all(struct server_answer *v, int n, int64_t timeout_ms)
{
    CURLM *multi = curl_multi_init();
    int running = 0;
    for (int i = 0; i < n; i++) {
        char url[1200];
        struct server_answer *s = &v[i];
        ls_buf_init(&s->body, REPORT_MAX);
        if (!(s->easy = curl_easy_init())) {
            snprintf(s->error, sizeof s->error, "out of memory");
            continue;
        }
        snprintf(url, sizeof url, "%s/v1/report", s->url);
        curl_easy_setopt(s->easy, CURLOPT_URL, url);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        s->headers = client_apply_auth(s->easy, NULL);
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
        curl_multi_add_handle(multi, s->easy);
    }
    do {
        CURLMsg *m;
        int left;
        curl_multi_perform(multi, &running);
        while ((m = curl_multi_info_read(multi, &left))) {
            struct server_answer *s;
            long status = 0;
            if (m->msg != CURLMSG_DONE) continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (m->data.result != CURLE_OK) {
                snprintf(s->error, sizeof s->error, "%s", curl_easy_strerror(m->data.result));
            } else if (status != 200) {
                json_t *j = json_loadb(s->body.p ? s->body.p : "", s->body.len, 0, NULL);
                const char *msg =
                    json_string_value(json_object_get(json_object_get(j, "error"), "message"));
                snprintf(s->error, sizeof s->error, "HTTP %ld%s%s", status, msg ? ": " : "",
                         msg ? msg : "");
                json_decref(j);
            } else if (!(s->report = json_loadb(s->body.p ? s->body.p : "", s->body.len, 0,
                                                NULL)) ||
                       !json_is_array(json_object_get(s->report, "jobs"))) {
                snprintf(s->error, sizeof s->error, "the answer is not a report");
                json_decref(s->report);
                s->report = NULL;
            }
        }
        if (running) curl_multi_poll(multi, NULL, 0, 200, NULL);
    } while (running);
    for (int i = 0; i < n; i++) {
        if (!v[i].easy) continue;
        curl_multi_remove_handle(multi, v[i].easy);
        curl_easy_cleanup(v[i].easy);
        curl_slist_free_all(v[i].headers);
        ls_buf_release(&v[i].body);
    }
    curl_multi_cleanup(multi);
}

static int64_t
when(const json_t *last)
{
    int64_t ended = json_integer_value(json_object_get(last, "ended"));
    return ended ? ended : json_integer_value(json_object_get(last, "started"));
}

static int
skipped(const json_t *last)
{
    const char *s = json_string_value(json_object_get(last, "state"));
    return s && strcmp(s, "skipped") == 0;
}

/* Whether a is the better result: a run that did the work beats a run skipped because another
 * server held the duty (that other server's result is the one to see), then the newest wins. */
static int
newer(const json_t *a, const json_t *b)
{
    if (json_is_null(b) || !b) return 1;
    if (skipped(a) != skipped(b)) return skipped(b);
    return when(a) > when(b);
}

/* Per job and source, the newest result, and every server that holds the job. */
static json_t *
merge(struct server_answer *v, int n)
{
    json_t *byk = json_object(), *out = json_array(), *e;
    const char *k;
    for (int i = 0; i < n; i++) {
        json_t *j;
        size_t x;
        const char *name;
        if (!v[i].report) continue;
        name = json_string_value(json_object_get(v[i].report, "server"));
        json_array_foreach(json_object_get(v[i].report, "jobs"), x, j)
        {
            char *src = json_dumps(json_object_get(j, "source"), JSON_ENCODE_ANY);
            const char *job = json_string_value(json_object_get(j, "job"));
            char key[2048];
            json_t *cur, *last = json_object_get(j, "last");
            snprintf(key, sizeof key, "%s\x1f%s", job ? job : "", src ? src : "");
            free(src);
            if (!(cur = json_object_get(byk, key))) {
                cur = json_pack("{s:s,s:O,s:n,s:n,s:[]}", "job", job ? job : "", "source",
                                json_object_get(j, "source"), "server", "last", "servers");
                json_object_set_new(byk, key, cur);
            }
            json_array_append_new(json_object_get(cur, "servers"),
                                  json_string(name ? name : v[i].url));
            if (last && newer(last, json_object_get(cur, "last"))) {
                json_object_set(cur, "last", last);
                json_object_set_new(cur, "server", json_string(name ? name : v[i].url));
                json_object_set(cur, "running", json_object_get(j, "running"));
            }
        }
    }
    json_object_foreach(byk, k, e) json_array_append(out, e);
    json_decref(byk);
    return out;
}

static void
print_table(json_t *jobs, struct server_answer *v, int n)
{
    json_t *j;
    size_t i;
    printf("%-20s %-40s %-8s %-12s %-24s %8s %6s\n", "JOB", "SOURCE", "STATE", "SERVER", "ENDED",
           "ITEMS", "ERRORS");
    json_array_foreach(jobs, i, j)
    {
        const json_t *last = json_object_get(j, "last");
        char ended[40] = "-";
        if (json_integer_value(json_object_get(last, "ended")))
            ls_format_time(json_integer_value(json_object_get(last, "ended")), ended, sizeof ended);
        printf("%-20s %-40s %-8s %-12s %-24s %8lld %6lld%s%s\n",
               json_string_value(json_object_get(j, "job")),
               json_string_value(json_object_get(j, "source")) ?: "?",
               json_is_object(last) ? json_string_value(json_object_get(last, "state")) : "never",
               json_string_value(json_object_get(j, "server")) ?: "-", ended,
               (long long)json_integer_value(json_object_get(last, "items")),
               (long long)json_integer_value(json_object_get(last, "errors")),
               json_string_value(json_object_get(last, "note")) ? "  " : "",
               json_string_value(json_object_get(last, "note")) ?: "");
    }
    for (int k = 0; k < n; k++)
        if (!v[k].report) printf("unreachable: %s (%s)\n", v[k].url, v[k].error);
}

int
cmd_report(int argc, char **argv)
{
    static const struct option opts[] = {{"servers", required_argument, NULL, O_SERVERS},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {NULL, 0, NULL, 0}};
    struct client cl = {.cmd = "report"};
    struct report_args a = {.timeout_ms = 3000};
    struct server_answer *v = calloc(SERVERS_MAX, sizeof *v);
    json_t *jobs = NULL;
    int rc, n = 0, unreachable = 0;

    if (!v) return EXIT_ERR;
    if ((rc = cli_parse(&cl, argc, argv, opts, usage, report_opt, &a)) >= 0) goto out;
    if (optind < argc) {
        rc = cli_usage_error("report", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (a.servers) {
        for (const char *p = a.servers; *p;) {
            size_t len = strcspn(p, ",");
            if (add_server(v, &n, p, len)) {
                rc = EXIT_ERR;
                goto out;
            }
            p += len;
            if (*p) p++;
        }
        if (!n) {
            rc = cli_usage_error("report", "--servers: a list of URLs separated by commas");
            goto out;
        }
    } else {
        json_t *nodes = client_json(&cl, "GET", "/v1/nodes?all=1", NULL, 0, NULL, &rc), *e;
        int tls = strncmp(cl.server, "https://", 8) == 0;
        size_t i;
        if (!nodes) goto out;
        json_array_foreach(json_object_get(nodes, "nodes"), i, e)
        {
            const char *http = json_string_value(json_object_get(e, "http"));
            char url[600];
            if (!http || !*http) continue;
            snprintf(url, sizeof url, "%s://%s", tls ? "https" : "http", http);
            add_server(v, &n, url, strlen(url));
        }
        json_decref(nodes);
        if (!n) add_server(v, &n, cl.server, strlen(cl.server));
    }
    ask_all(v, n, a.timeout_ms);
    jobs = merge(v, n);
    for (int i = 0; i < n; i++)
        unreachable += !v[i].report;
    if (a.json) {
        json_t *servers = json_array(), *o;
        for (int i = 0; i < n; i++) {
            o = json_pack("{s:s,s:s}", "url", v[i].url, "state", v[i].report ? "ok" : "unreachable");
            if (v[i].report)
                json_object_set(o, "name", json_object_get(v[i].report, "server"));
            else
                json_object_set_new(o, "error", json_string(v[i].error));
            json_array_append_new(servers, o);
        }
        o = json_pack("{s:O,s:o,s:i}", "jobs", jobs, "servers", servers, "unreachable",
                      unreachable);
        json_dumpf(o, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(o);
    } else {
        print_table(jobs, v, n);
    }
    rc = unreachable ? EXIT_ERR : EXIT_OK;
out:
    json_decref(jobs);
    for (int i = 0; i < n; i++) {
        free(v[i].url);
        json_decref(v[i].report);
    }
    free(v);
    return rc;
}
