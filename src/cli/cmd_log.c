/*
 * cmd_log.c - the commands that read or feed the change log as a whole: import, changes,
 * digest, status.
 */
#include "cli/cli.h"
#include "cli/table.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_SERVER = 1000, O_HELP, O_JSON, O_SINCE, O_FOLLOW, O_PUB, O_PROGRESS };

#define COMMON_HELP                                                                               \
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"         \
    "  --help           this text\n"

struct log_args {
    int json, follow, pub, progress;
    const char *since;
};

static int
log_opt(int ch, const char *arg, void *ctx)
{
    struct log_args *a = ctx;
    switch (ch) {
    case O_JSON: a->json = 1; break;
    case O_SINCE: a->since = arg; break;
    case O_FOLLOW: a->follow = 1; break;
    case O_PUB: a->pub = 1; break;
    case O_PROGRESS: a->progress = 1; break;
    }
    return -1;
}

static int
parse(struct client *cl, int argc, char **argv, const char *usage, struct log_args *a)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, O_JSON},         {"since", required_argument, NULL, O_SINCE},
        {"follow", no_argument, NULL, O_FOLLOW},     {"published-only", no_argument, NULL, O_PUB},
        {"progress", no_argument, NULL, O_PROGRESS}, {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    return cli_parse(cl, argc, argv, opts, usage, log_opt, a);
}

/* ---------------------------------------------------------------- import */

int
cmd_import(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep import [FILE|-] [--progress]\n\n"
        "Applies an NDJSON file of operations, one per line, as one transaction: all of it or,\n"
        "when any line is malformed or fails, none of it (the error names the line).\n"
        "  {\"op\":\"put\",\"path\":\"/a\",\"body\":\"text\",\"kind\":\"document\",\"meta\":{},"
        "\"status\":\"published\"}\n"
        "  {\"op\":\"delete\"|\"purge\"|\"publish\"|\"unpublish\",\"path\":\"/a\"}   "
        "{\"op\":\"move\",\"path\":\"/a\",\"to\":\"/b\"}\n\n"
        "  --progress       draw a progress bar even when stderr is not a terminal\n" COMMON_HELP;
    struct client cl = {.cmd = "import"};
    struct log_args a;
    const char *file = "-";
    FILE *in = stdin;
    char id[33], url[128];
    json_t *o;
    int rc, code = EXIT_ERR;
    int64_t t0 = ls_mono_ms();

    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind < argc) file = argv[optind++];
    if (optind < argc) return cli_usage_error("import", "unexpected argument '%s'", argv[optind]);
    if (strcmp(file, "-") != 0 && !(in = fopen(file, "rb"))) {
        fprintf(stderr, "lockstep import: cannot open %s: %m\n", file);
        return EXIT_ERR;
    }
    if (client_upload(&cl, in, NULL, 0, id, a.progress || isatty(2), &code) == 0) {
        if (a.progress || isatty(2)) fprintf(stderr, "applying...\n");
        snprintf(url, sizeof url, "/v1/batch?upload=%s", id);
        o = client_json(&cl, "POST", url, NULL, 0, NULL, &code);
        if (o) {
            printf("imported %lld operations in %.2fs (seq %lld to %lld)\n",
                   (long long)json_integer_value(json_object_get(o, "applied")),
                   (double)(ls_mono_ms() - t0) / 1000.0,
                   (long long)json_integer_value(json_object_get(o, "first_seq")),
                   (long long)json_integer_value(json_object_get(o, "last_seq")));
            json_decref(o);
        }
    }
    if (in != stdin) fclose(in);
    return code;
}

/* ---------------------------------------------------------------- changes */

static void
print_change(json_t *c, int json)
{
    if (json) {
        char *text = json_dumps(c, JSON_COMPACT);
        puts(text);
        free(text);
        return;
    }
    printf("%-8lld %-9s %s", (long long)json_integer_value(json_object_get(c, "seq")),
           json_string_value(json_object_get(c, "op")),
           json_string_value(json_object_get(c, "path")));
    if (json_object_get(c, "to")) printf(" -> %s", json_string_value(json_object_get(c, "to")));
    printf("  v%lld%s\n", (long long)json_integer_value(json_object_get(c, "version")),
           json_is_true(json_object_get(c, "published")) ? " (published)" : "");
}

struct follow_state {
    struct ls_buf line;
    int json;
};

static size_t
on_follow_data(char *data, size_t size, size_t n, void *arg)
{
    struct follow_state *f = arg;
    size_t len = size * n;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n') {
            if (ls_buf_append(&f->line, data + i, 1)) return 0;
            continue;
        }
        if (f->line.len > 0) {
            json_t *c = json_loadb(f->line.p, f->line.len, 0, NULL);
            if (c) print_change(c, f->json);
            json_decref(c);
            fflush(stdout);
        }
        ls_buf_reset(&f->line);
    }
    return len;
}

static int
follow(struct client *cl, int64_t since, int json)
{
    struct follow_state f;
    char url[4096];
    long status = 0;
    CURL *c = curl_easy_init();
    CURLcode rc;
    ls_buf_init(&f.line, 1 << 20);
    f.json = json;
    snprintf(url, sizeof url, "%s/v1/changes?follow=1&since=%lld", cl->server, (long long)since);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_follow_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    {
        struct curl_slist *hl = client_apply_auth(c, NULL);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        rc = curl_easy_perform(c);
        curl_slist_free_all(hl);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    ls_buf_release(&f.line);
    if (rc != CURLE_OK) {
        fprintf(stderr, "lockstep changes: %s: %s\n", cl->server, curl_easy_strerror(rc));
        return EXIT_ERR;
    }
    return EXIT_OK;
}

int
cmd_changes(int argc, char **argv)
{
    static const char usage[] = "usage: lockstep changes [--since SEQ] [--follow] [--json]\n\n"
                                "Prints the change log after SEQ (default: from the start).\n\n"
                                "  --since SEQ      start after this seq\n"
                                "  --follow         keep printing changes as they happen\n"
                                "  --json           one JSON object per line\n" COMMON_HELP;
    struct client cl = {.cmd = "changes"};
    struct log_args a;
    int64_t since = 0;
    int rc;

    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind < argc) return cli_usage_error("changes", "unexpected argument '%s'", argv[optind]);
    if (a.since && (ls_parse_i64(a.since, &since) || since < 0))
        return cli_usage_error("changes", "--since must be a seq (a number from 0)");
    if (a.follow) return follow(&cl, since, a.json);
    for (;;) {
        char url[128];
        json_t *o, *c;
        size_t i, n;
        int64_t next;
        snprintf(url, sizeof url, "/v1/changes?limit=10000&since=%lld", (long long)since);
        if (!(o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc))) return rc;
        n = json_array_size(json_object_get(o, "changes"));
        json_array_foreach(json_object_get(o, "changes"), i, c) print_change(c, a.json);
        next = json_integer_value(json_object_get(o, "next"));
        json_decref(o);
        if (n == 0 || next <= since) break;
        since = next;
    }
    return EXIT_OK;
}

/* ---------------------------------------------------------------- digest, status */

int
cmd_digest(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep digest [PREFIX] [--published-only] [--json]\n\n"
        "Prints a digest of the live items (path, kind, version, status, body hash, meta) that\n"
        "every server holding the same state computes identically.\n\n"
        "  --published-only the published versions only (what staging holds)\n"
        "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "digest"};
    struct log_args a;
    char url[4200], *prefix;
    json_t *o;
    int rc;

    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind < argc - 1) return cli_usage_error("digest", "expected at most one PREFIX");
    prefix = url_query_value(optind < argc ? argv[optind] : "/");
    snprintf(url, sizeof url, "/v1/digest?prefix=%s%s", prefix,
             a.pub ? "&published_only=1" : "");
    free(prefix);
    if (!(o = client_json(&cl, "GET", url, NULL, 0, NULL, &rc))) return rc;
    if (a.json) {
        char *text = json_dumps(o, JSON_COMPACT);
        puts(text);
        free(text);
    } else {
        printf("%s  %lld items at seq %lld\n", json_string_value(json_object_get(o, "digest")),
               (long long)json_integer_value(json_object_get(o, "items")),
               (long long)json_integer_value(json_object_get(o, "seq")));
    }
    json_decref(o);
    return EXIT_OK;
}

/* The messenger's line of status: counts by state, and who is at risk or failing. */
static void
print_messenger(json_t *m)
{
    static const char *const head[] = {"MODE",   "CONSUMERS", "LIVE",    "BEHIND",
                                       "STALLED", "RESET",    "AT_RISK", "WEBHOOKS_FAILING"};
    static const char *const states[] = {"live", "behind", "stalled", "reset"};
    const char *lists[] = {"at_risk", "webhooks_failing"};
    const char *mode = json_string_value(json_object_get(m, "mode"));
    struct table t;
    table_init(&t, 8, head, "lrrrrrll");
    table_cell(&t, "%s", mode ? mode : "native");
    table_cell(&t, "%lld", (long long)json_integer_value(json_object_get(m, "consumers")));
    for (int i = 0; i < 4; i++)
        table_cell(&t, "%lld", (long long)json_integer_value(
                                   json_object_get(json_object_get(m, "states"), states[i])));
    for (int i = 0; i < 2; i++) {
        json_t *a = json_object_get(m, lists[i]), *v;
        struct ls_buf b;
        size_t k;
        ls_buf_init(&b, 4096);
        json_array_foreach(a, k, v)
        {
            const char *name = json_string_value(v);
            if (!name) name = json_string_value(json_object_get(v, "consumer"));
            if (!name) name = json_string_value(json_object_get(v, "name"));
            if (k) ls_buf_append(&b, ",", 1);
            if (name) ls_buf_append(&b, name, strlen(name));
        }
        table_cell(&t, "%.*s", (int)b.len, b.p ? b.p : "");
        ls_buf_release(&b);
    }
    table_print(&t, stdout);
    table_release(&t);
}

#define STATUS_WARNINGS_SHOWN 10

int
cmd_status(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep status [--json]\n\n"
        "Shows the server's name, role, store, epoch and seq, how it follows its upstream (a\n"
        "replica), its consumers by state, and its last warnings. --json prints every field,\n"
        "the last 50 warnings among them.\n\n"
        "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "status"};
    struct log_args a;
    json_t *o, *v, *warnings;
    const char *key;
    int rc;

    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind < argc) return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    if (!(o = client_json(&cl, "GET", "/v1/status", NULL, 0, NULL, &rc))) return rc;
    if (a.json) {
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(o);
        return EXIT_OK;
    }
    /* every plain field in the server's order (fields a newer server adds show too) */
    json_object_foreach(o, key, v)
    {
        char *text;
        if (json_is_object(v) || strcmp(key, "warnings") == 0) continue;
        text = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        printf("%-15s %s\n", key, text ? text : json_string_value(v));
        free(text);
    }
    if (json_is_object(json_object_get(o, "messenger"))) {
        printf("\nmessenger\n");
        print_messenger(json_object_get(o, "messenger"));
    }
    warnings = json_object_get(o, "warnings");
    if (json_array_size(warnings) > 0) {
        static const char *const head[] = {"TIME", "LEVEL", "MESSAGE"};
        size_t n = json_array_size(warnings), from = 0;
        struct table t;
        if (n > STATUS_WARNINGS_SHOWN) from = n - STATUS_WARNINGS_SHOWN;
        printf("\nlast warnings (%zu%s)\n", n - from, from ? ", more with --json" : "");
        table_init(&t, 3, head, "lll");
        for (size_t i = from; i < n; i++) {
            json_t *w = json_array_get(warnings, i);
            table_cell(&t, "%s", json_string_value(json_object_get(w, "time")));
            table_cell(&t, "%s", json_string_value(json_object_get(w, "level")));
            table_cell(&t, "%s", json_string_value(json_object_get(w, "msg")));
        }
        table_print(&t, stdout);
        table_release(&t);
    }
    json_decref(o);
    return EXIT_OK;
}
