/*
 * cmd_mirror.c - `lockstep mirror create|ls|show|rm|pause|resume|run|history` (docs/mirror.md):
 * mirroring jobs on a server, through /v1/mirrors. `run --wait` follows the run's progress: a
 * bar on a terminal, a line a second otherwise; it exits 0 when the run ended ok, 1 otherwise.
 */
#include "cli/cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    O_SOURCE = 1000,
    O_TARGET,
    O_INCLUDE,
    O_EXCLUDE,
    O_PUBLISHED,
    O_DELETE,
    O_LIVE,
    O_EVERY,
    O_PITEMS,
    O_PBYTES,
    O_MAXERR,
    O_WAIT,
    O_JSON,
    O_TOKEN_FILE
};

static const char usage[] =
    "usage: lockstep mirror create NAME --source SRC --target DST [--target DST]...\n"
    "           [--include GLOB]... [--exclude GLOB]... [--published-only] [--delete] [--live]\n"
    "           [--every DURATION] [--package-items N] [--package-bytes SIZE] [--max-errors N]\n"
    "           [--token-file FILE]\n"
    "       lockstep mirror ls [--json] | show NAME [--json] | rm NAME | pause NAME | resume NAME\n"
    "       lockstep mirror run NAME [--wait]\n"
    "       lockstep mirror history NAME [--json]\n\n"
    "Mirroring jobs run inside the server. SRC is store:/PREFIX (this server's items),\n"
    "dir:/ABSOLUTE/PATH, lockstep://HOST:PORT/PREFIX (another server's items) or\n"
    "lockstep://HOST:PORT/export/NAME (a directory another server exports). DST is\n"
    "dir:/ABSOLUTE/PATH or lockstep://HOST:PORT/PREFIX. --token-file: a file on the mirror\n"
    "server holding the token for the lockstep:// servers. --live (store sources): after a\n"
    "run, follow the change log and mirror each change within a second, until paused.\n"
    "`run --wait` shows the progress and exits 0 when the run ended ok (or skipped: another\n"
    "server holds the duty), 1 when partial or failed. See docs/mirror.md.\n\n"
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"
    "  --help           this text\n";

struct mirror_args {
    json_t *def;
    int wait, json;
    int rc; /* a bad option value: its exit code */
};

static int
list_add(json_t *def, const char *key, const char *v)
{
    json_t *a = json_object_get(def, key);
    if (!a) json_object_set_new(def, key, a = json_array());
    return json_array_append_new(a, json_string(v));
}

static int
mirror_opt(int ch, const char *arg, void *ctx)
{
    struct mirror_args *a = ctx;
    int64_t n;
    switch (ch) {
    case O_SOURCE:
        json_object_set_new(a->def, "source", json_string(arg));
        break;
    case O_TARGET:
        list_add(a->def, "targets", arg);
        break;
    case O_INCLUDE:
        list_add(a->def, "include", arg);
        break;
    case O_EXCLUDE:
        list_add(a->def, "exclude", arg);
        break;
    case O_PUBLISHED:
        json_object_set_new(a->def, "published_only", json_true());
        break;
    case O_DELETE:
        json_object_set_new(a->def, "delete", json_true());
        break;
    case O_LIVE:
        json_object_set_new(a->def, "live", json_true());
        break;
    case O_EVERY:
        if (ls_parse_duration_ms(arg, &n) || n < 1000)
            return cli_usage_error("mirror", "--every: a duration of at least 1s (30s, 10m, 1h)");
        json_object_set_new(a->def, "every_ms", json_integer(n));
        break;
    case O_PITEMS:
        if (ls_parse_i64(arg, &n) || n < 1)
            return cli_usage_error("mirror", "--package-items: a positive number");
        json_object_set_new(a->def, "package_items", json_integer(n));
        break;
    case O_PBYTES:
        json_object_set_new(a->def, "package_bytes", json_string(arg));
        break;
    case O_MAXERR:
        if (ls_parse_i64(arg, &n) || n < 0)
            return cli_usage_error("mirror", "--max-errors: a number (0 or more)");
        json_object_set_new(a->def, "max_errors", json_integer(n));
        break;
    case O_WAIT:
        a->wait = 1;
        break;
    case O_TOKEN_FILE:
        json_object_set_new(a->def, "token_file", json_string(arg));
        break;
    case O_JSON:
        a->json = 1;
        break;
    }
    return -1;
}

static void
print_json(json_t *o)
{
    char *t = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    puts(t);
    free(t);
}

static json_int_t
jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void
print_job(const json_t *j)
{
    const json_t *d = json_object_get(j, "definition"), *p = json_object_get(j, "progress"), *v;
    size_t i;
    printf("%s: %s ->", json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(d, "source")));
    json_array_foreach(json_object_get(d, "targets"), i, v) printf(" %s", json_string_value(v));
    printf("  [%s%s]", json_is_true(json_object_get(j, "paused")) ? "paused" : "active",
           json_is_true(json_object_get(j, "running")) ? ", running" : "");
    if (json_object_get(j, "last_state"))
        printf(" last: %s", json_string_value(json_object_get(j, "last_state")));
    if (p)
        printf(" %.1f%% (%lld/%lld items)", json_real_value(json_object_get(p, "percent")),
               (long long)jint(p, "items_done"), (long long)jint(p, "items_total"));
    printf("\n");
}

static char *
job_url(const char *name, const char *tail)
{
    char *e = url_query_value(name), *u = NULL;
    if (e && asprintf(&u, "/v1/mirrors/%s%s", e, tail) < 0) u = NULL;
    free(e);
    return u;
}

static int
simple(struct client *cl, const char *method, const char *name, const char *tail, int show,
       int json)
{
    char *url = job_url(name, tail);
    json_t *o;
    int rc;
    if (!url) return EXIT_ERR;
    o = client_json(cl, method, url, NULL, 0, NULL, &rc);
    free(url);
    if (!o) return rc;
    if (json)
        print_json(o);
    else if (show)
        print_job(o);
    json_decref(o);
    return EXIT_OK;
}

/* The progress of the run, until it has ended; then its outcome from the history. */
static int
wait_run(struct client *cl, const char *name, json_int_t run_id)
{
    int tty = isatty(1), rc;
    char *url = job_url(name, ""), *hurl = job_url(name, "/history?limit=5");
    const char *state = "unknown";
    json_t *o = NULL, *h = NULL, *r;
    int64_t last_print = 0;
    useconds_t nap = 10 * 1000; /* doubled up to 200 ms: a short run is not kept waiting */
    size_t i;
    for (;;) {
        json_t *p;
        if (!(o = client_json(cl, "GET", url, NULL, 0, NULL, &rc))) goto out;
        p = json_object_get(o, "progress");
        if (!p || jint(p, "run") != run_id) break;
        if (strcmp(json_string_value(json_object_get(p, "phase")), "live") == 0) {
            /* --live: the first pass is over, and the run follows the log from now on */
            if (tty) printf("\n");
            printf("run %lld: live (following the change log), %lld items, %lld bytes, %lld "
                   "errors\n",
                   (long long)run_id, (long long)jint(p, "items_done"),
                   (long long)jint(p, "bytes_done"), (long long)jint(p, "errors"));
            rc = jint(p, "errors") ? EXIT_ERR : EXIT_OK;
            goto out;
        }
        if (tty) {
            double pct = json_real_value(json_object_get(p, "percent"));
            int w = (int)(pct / 100.0 * 30);
            printf("\r[%.*s%*s] %5.1f%% %lld/%lld items %lld errors  ", w,
                   "##############################", 30 - w, "", pct,
                   (long long)jint(p, "items_done"), (long long)jint(p, "items_total"),
                   (long long)jint(p, "errors"));
            fflush(stdout);
        } else if (ls_mono_ms() - last_print >= 1000) {
            last_print = ls_mono_ms();
            printf("%s: %s %.1f%% items %lld/%lld bytes %lld/%lld errors %lld rate %.0f B/s "
                   "eta %.0fs\n",
                   name, json_string_value(json_object_get(p, "phase")),
                   json_real_value(json_object_get(p, "percent")), (long long)jint(p, "items_done"),
                   (long long)jint(p, "items_total"), (long long)jint(p, "bytes_done"),
                   (long long)jint(p, "bytes_total"), (long long)jint(p, "errors"),
                   json_real_value(json_object_get(p, "rate_bytes_per_s")),
                   json_real_value(json_object_get(p, "eta_s")));
            fflush(stdout);
        }
        json_decref(o);
        o = NULL;
        usleep(nap);
        if (nap < 200 * 1000) nap = nap * 2 > 200 * 1000 ? 200 * 1000 : nap * 2;
    }
    if (tty) printf("\n");
    if (!(h = client_json(cl, "GET", hurl, NULL, 0, NULL, &rc))) goto out;
    json_array_foreach(json_object_get(h, "runs"), i, r) if (jint(r, "id") == run_id)
    {
        state = json_string_value(json_object_get(r, "state"));
        printf("run %lld: %s, %lld items, %lld bytes, %lld errors\n", (long long)run_id, state,
               (long long)jint(r, "items"), (long long)jint(r, "bytes"),
               (long long)jint(r, "errors"));
        break;
    }
    /* skipped: another mirror server holds the source's lease and does it */
    rc = strcmp(state, "ok") == 0 || strcmp(state, "skipped") == 0 ? EXIT_OK : EXIT_ERR;
out:
    json_decref(o);
    json_decref(h);
    free(url);
    free(hurl);
    return rc;
}

static int
history(struct client *cl, const char *name, int json)
{
    char *url = job_url(name, "/history");
    json_t *o, *r;
    size_t i;
    int rc;
    if (!url) return EXIT_ERR;
    o = client_json(cl, "GET", url, NULL, 0, NULL, &rc);
    free(url);
    if (!o) return rc;
    if (json) {
        print_json(o);
    } else {
        json_array_foreach(json_object_get(o, "runs"), i, r)
        {
            json_t *e, *t;
            size_t k;
            printf("%lld %s %s %.1fs items %lld bytes %lld errors %lld%s%s\n",
                   (long long)jint(r, "id"), json_string_value(json_object_get(r, "started")),
                   json_string_value(json_object_get(r, "state")),
                   (double)jint(r, "duration_ms") / 1000.0, (long long)jint(r, "items"),
                   (long long)jint(r, "bytes"), (long long)jint(r, "errors"),
                   json_object_get(r, "note") ? " " : "",
                   json_object_get(r, "note") ? json_string_value(json_object_get(r, "note")) : "");
            json_array_foreach(json_object_get(r, "targets"), k, t)
                printf("  %s %s items %lld bytes %lld errors %lld (%lld files as deltas of %lld "
                       "bytes, %lld bytes whole)\n",
                       json_string_value(json_object_get(t, "target")),
                       json_string_value(json_object_get(t, "state")), (long long)jint(t, "items"),
                       (long long)jint(t, "bytes"), (long long)jint(t, "errors"),
                       (long long)jint(t, "delta_files"), (long long)jint(t, "delta_bytes"),
                       (long long)jint(t, "whole_bytes"));
            json_array_foreach(json_object_get(r, "failed_items"), k, e)
                printf("  failed %s %s: %s\n", json_string_value(json_object_get(e, "target")),
                       json_string_value(json_object_get(e, "path")),
                       json_string_value(json_object_get(e, "reason")));
        }
    }
    json_decref(o);
    return EXIT_OK;
}

int
cmd_mirror(int argc, char **argv)
{
    static const struct option opts[] = {{"source", required_argument, NULL, O_SOURCE},
                                         {"target", required_argument, NULL, O_TARGET},
                                         {"include", required_argument, NULL, O_INCLUDE},
                                         {"exclude", required_argument, NULL, O_EXCLUDE},
                                         {"published-only", no_argument, NULL, O_PUBLISHED},
                                         {"delete", no_argument, NULL, O_DELETE},
                                         {"live", no_argument, NULL, O_LIVE},
                                         {"every", required_argument, NULL, O_EVERY},
                                         {"package-items", required_argument, NULL, O_PITEMS},
                                         {"package-bytes", required_argument, NULL, O_PBYTES},
                                         {"max-errors", required_argument, NULL, O_MAXERR},
                                         {"wait", no_argument, NULL, O_WAIT},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"token-file", required_argument, NULL, O_TOKEN_FILE},
                                         {NULL, 0, NULL, 0}};
    struct client cl = {.cmd = "mirror"};
    struct mirror_args a = {.def = json_object()};
    const char *sub, *name = NULL;
    int rc, nargs;
    json_t *o;

    if ((rc = cli_parse(&cl, argc, argv, opts, usage, mirror_opt, &a)) >= 0) goto out;
    nargs = argc - optind;
    if (nargs < 1) {
        rc = cli_usage_error("mirror", "expected create, ls, show, rm, pause, resume, run or "
                                       "history");
        goto out;
    }
    sub = argv[optind];
    if (strcmp(sub, "ls") == 0) {
        json_t *j;
        size_t i;
        if (nargs != 1) {
            rc = cli_usage_error("mirror", "ls takes no argument");
            goto out;
        }
        if (!(o = client_json(&cl, "GET", "/v1/mirrors", NULL, 0, NULL, &rc))) goto out;
        if (a.json)
            print_json(o);
        else
            json_array_foreach(json_object_get(o, "mirrors"), i, j) print_job(j);
        json_decref(o);
        rc = EXIT_OK;
        goto out;
    }
    if (nargs != 2) {
        rc = cli_usage_error("mirror", "%s takes one job NAME", sub);
        goto out;
    }
    name = argv[optind + 1];
    if (strcmp(sub, "create") == 0) {
        char *body;
        json_object_set_new(a.def, "name", json_string(name));
        body = json_dumps(a.def, JSON_COMPACT);
        o = client_json(&cl, "POST", "/v1/mirrors", body, strlen(body), NULL, &rc);
        free(body);
        if (o) {
            print_job(o);
            json_decref(o);
            rc = EXIT_OK;
        }
    } else if (strcmp(sub, "show") == 0) {
        rc = simple(&cl, "GET", name, "", 1, a.json);
    } else if (strcmp(sub, "rm") == 0) {
        rc = simple(&cl, "DELETE", name, "", 0, 0);
    } else if (strcmp(sub, "pause") == 0) {
        rc = simple(&cl, "POST", name, "/pause", 1, 0);
    } else if (strcmp(sub, "resume") == 0) {
        rc = simple(&cl, "POST", name, "/resume", 1, 0);
    } else if (strcmp(sub, "run") == 0) {
        char *url = job_url(name, "/run");
        o = url ? client_json(&cl, "POST", url, NULL, 0, NULL, &rc) : NULL;
        free(url);
        if (o) {
            json_int_t id = jint(json_object_get(o, "progress"), "run");
            json_decref(o);
            rc = EXIT_OK;
            if (a.wait) {
                /* the run's id is known once its thread has recorded it */
                for (int k = 0; k < 100 && id == 0; k++) {
                    char *u = job_url(name, "");
                    json_t *s;
                    usleep(20 * 1000);
                    s = u ? client_json(&cl, "GET", u, NULL, 0, NULL, &rc) : NULL;
                    free(u);
                    if (!s) goto out;
                    if (!json_object_get(s, "progress")) { /* ended already */
                        json_t *h;
                        char *hu = job_url(name, "/history?limit=1");
                        h = hu ? client_json(&cl, "GET", hu, NULL, 0, NULL, &rc) : NULL;
                        free(hu);
                        id = h ? jint(json_array_get(json_object_get(h, "runs"), 0), "id") : 0;
                        json_decref(h);
                    } else {
                        id = jint(json_object_get(s, "progress"), "run");
                    }
                    json_decref(s);
                }
                rc = wait_run(&cl, name, id);
            } else {
                printf("mirror %s: run started\n", name);
            }
        }
    } else if (strcmp(sub, "history") == 0) {
        rc = history(&cl, name, a.json);
    } else {
        rc = cli_usage_error("mirror", "unknown subcommand '%s'", sub);
    }
out:
    json_decref(a.def);
    return rc;
}
