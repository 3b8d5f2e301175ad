/*
 * cmd_cluster.c - the commands about the servers of a site rather than its items:
 * nodes (the downstreams of a server, or with --all every server of the site), promote, resync,
 * verify (the server's scrub).
 */
#include "cli/cli.h"
#include "cli/table.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum { O_SERVER = 1000, O_HELP, O_JSON, O_SINCE, O_FROM, O_RATE, O_ALL };

#define COMMON_HELP                                                                               \
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"         \
    "  --help           this text\n"

struct cluster_args {
    int json, all;
    const char *since, *from, *rate;
};

static int
cluster_opt(int ch, const char *arg, void *ctx)
{
    struct cluster_args *a = ctx;
    if (ch == O_JSON) a->json = 1;
    else if (ch == O_ALL) a->all = 1;
    else if (ch == O_SINCE) a->since = arg;
    else if (ch == O_FROM) a->from = arg;
    else if (ch == O_RATE) a->rate = arg;
    return -1;
}

static int
parse(struct client *cl, int argc, char **argv, const char *usage, struct cluster_args *a)
{
    static const struct option opts[] = {{"json", no_argument, NULL, O_JSON},
                                         {"since", required_argument, NULL, O_SINCE},
                                         {"from-seq", required_argument, NULL, O_FROM},
                                         {"rate", required_argument, NULL, O_RATE},
                                         {"all", no_argument, NULL, O_ALL},
                                         {NULL, 0, NULL, 0}};
    int rc;
    memset(a, 0, sizeof *a);
    if ((rc = cli_parse(cl, argc, argv, opts, usage, cluster_opt, a)) >= 0) return rc;
    if (optind < argc) return cli_usage_error(cl->cmd, "unexpected argument '%s'", argv[optind]);
    return -1;
}

/* A string field for the table: "-" when absent or empty. */
static const char *
field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

static void
print_downstreams(json_t *o)
{
    static const char *const head[] = {"NAME",      "ROLE",  "STATE",   "APPLIED", "LAG",
                                       "LAG_BYTES", "LAG_S", "ADDRESS", "LAST_ERROR"};
    struct table t;
    json_t *n;
    size_t i;
    table_init(&t, 9, head, "lllrrrrll");
    json_array_foreach(json_object_get(o, "nodes"), i, n)
    {
        table_cell(&t, "%s", field(n, "name"));
        table_cell(&t, "%s", field(n, "role"));
        table_cell(&t, "%s", field(n, "state"));
        table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(n, "applied_seq")));
        table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(n, "lag_changes")));
        table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(n, "lag_bytes")));
        table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(n, "lag_seconds")));
        table_cell(&t, "%s", field(n, "address"));
        table_cell(&t, "%s", field(n, "last_error"));
    }
    table_print(&t, stdout);
    table_release(&t);
}

static void
print_site(json_t *o)
{
    static const char *const head[] = {"NAME",           "ROLE", "STATE", "SEQ",    "UPSTREAM",
                                       "LAST_HEARTBEAT", "HTTP", "PEER",  "VERSION"};
    struct table t;
    json_t *n;
    size_t i;
    table_init(&t, 9, head, "lllrlllll");
    json_array_foreach(json_object_get(o, "nodes"), i, n)
    {
        table_cell(&t, "%s", field(n, "name"));
        table_cell(&t, "%s", field(n, "role"));
        table_cell(&t, "%s", field(n, "state"));
        table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(n, "seq")));
        table_cell(&t, "%s", field(n, "upstream"));
        table_cell(&t, "%s", field(n, "last_heartbeat"));
        table_cell(&t, "%s", field(n, "http"));
        table_cell(&t, "%s", field(n, "peer"));
        table_cell(&t, "%s", field(n, "version"));
    }
    table_print(&t, stdout);
    table_release(&t);
}

int
cmd_nodes(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep nodes [--all] [--json]\n\n"
        "Lists the servers that follow this one: name, role, address, version, applied seq,\n"
        "lag (changes, bytes, seconds), state (snapshot, catching-up, live, down) and last\n"
        "heartbeat. With --all, every server of the site as this one knows it, whichever it\n"
        "is: name, role, state (active, stale: silent for 2 heartbeats, down), seq, the server\n"
        "it follows, last heartbeat, HTTP and peer addresses, version.\n\n"
        "  --all            every server of the site\n"
        "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "nodes"};
    struct cluster_args a;
    json_t *o;
    int rc;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (!(o = client_json(&cl, "GET", a.all ? "/v1/nodes?all=1" : "/v1/nodes", NULL, 0, NULL,
                          &rc)))
        return rc;
    if (a.json) {
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
    } else if (a.all) {
        print_site(o);
    } else {
        print_downstreams(o);
    }
    json_decref(o);
    return EXIT_OK;
}

int
cmd_promote(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep promote --server URL\n\n"
        "Turns a replica into the primary: it stops following, starts a new epoch at its seq\n"
        "and accepts writes. Point the other servers at it (--upstream); those whose history\n"
        "is a prefix of its history continue without a snapshot.\n\n" COMMON_HELP;
    struct client cl = {.cmd = "promote"};
    struct cluster_args a;
    json_t *o;
    int rc;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (!(o = client_json(&cl, "POST", "/v1/promote", NULL, 0, NULL, &rc))) return rc;
    printf("promoted: epoch %lld begins at seq %lld\n",
           (long long)json_integer_value(json_object_get(o, "epoch")),
           (long long)json_integer_value(json_object_get(o, "seq")));
    json_decref(o);
    return EXIT_OK;
}

int
cmd_resync(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep resync (--since TIME | --from-seq SEQ) --server URL\n\n"
        "On a replica: re-synchronizes from that point of the upstream's log, re-applying\n"
        "every change after it (a snapshot when the point is older than the retained log).\n\n"
        "  --since TIME     e.g. 2026-11-21T10:00:00Z\n"
        "  --from-seq SEQ   the seq to continue after\n" COMMON_HELP;
    struct client cl = {.cmd = "resync"};
    struct cluster_args a;
    char url[256], *v;
    json_t *o;
    int rc;
    int64_t n;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (!!a.since == !!a.from) return cli_usage_error("resync", "give --since or --from-seq");
    if (a.from && (ls_parse_i64(a.from, &n) || n < 0))
        return cli_usage_error("resync", "--from-seq must be a seq (a number from 0)");
    if (a.since && ls_parse_time(a.since, &n))
        return cli_usage_error("resync", "--since must be a time such as 2026-11-21T10:00:00Z");
    v = url_query_value(a.since ? a.since : a.from);
    snprintf(url, sizeof url, "/v1/resync?%s=%s", a.since ? "since" : "from_seq", v);
    free(v);
    if (!(o = client_json(&cl, "POST", url, NULL, 0, NULL, &rc))) return rc;
    printf("resync requested\n");
    json_decref(o);
    return EXIT_OK;
}

int
cmd_verify(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep verify [--rate BYTES] [--json]\n\n"
        "Has the server rehash every stored body (inline ones and blob files) against the\n"
        "SHA-256 its version records, and lists the damaged or missing ones. Exits 1 when it\n"
        "found damage. A digest cannot see this: it hashes the recorded hashes only.\n\n"
        "  --rate BYTES     read at most this much per second (default 50M; 0: no limit)\n"
        "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "verify"};
    struct cluster_args a;
    char url[256];
    json_t *o, *d, *damaged;
    size_t i;
    uint64_t rate;
    int rc;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (a.rate && ls_parse_size(a.rate, &rate))
        return cli_usage_error("verify", "--rate must be bytes per second, as 50M (0: no limit)");
    if (a.rate) snprintf(url, sizeof url, "/v1/verify?rate=%llu", (unsigned long long)rate);
    else snprintf(url, sizeof url, "/v1/verify");
    if (!(o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc))) return rc;
    damaged = json_object_get(o, "damaged");
    if (a.json) {
        char *text = json_dumps(o, JSON_COMPACT);
        puts(text);
        free(text);
    } else {
        json_array_foreach(damaged, i, d) {
            const char *blob = json_string_value(json_object_get(d, "blob"));
            printf("DAMAGED %s version %lld: %s%s%s\n",
                   json_string_value(json_object_get(d, "path")),
                   (long long)json_integer_value(json_object_get(d, "version")),
                   json_string_value(json_object_get(d, "problem")), blob ? " in " : "",
                   blob ? blob : "");
        }
        printf("%lld versions checked (%lld blob files, %lld bytes) in %.1f s: %zu damaged\n",
               (long long)json_integer_value(json_object_get(o, "checked")),
               (long long)json_integer_value(json_object_get(o, "blobs")),
               (long long)json_integer_value(json_object_get(o, "bytes")),
               json_number_value(json_object_get(o, "seconds")), json_array_size(damaged));
    }
    rc = json_array_size(damaged) ? EXIT_ERR : EXIT_OK;
    json_decref(o);
    return rc;
}
