/*
 * store_direct.c - lockstep's storage engine without the server: the same puts applied through
 * store_apply() exactly as the writer thread applies one /v1/batch request (store_begin, a
 * savepoint, every op, release, store_commit), but called directly: no HTTP, no event loop, no
 * thread hand-off. Placed between the bare SQLite figure and the /v1/batch figure, it splits the
 * gap into "what the schema and src/core/store/ cost" and "what the server around them costs".
 *
 *   bench_store_direct --dir DIR [--docs 200000] [--batch 1000] [--body 1024] [--parse]
 *                      [--sync full|normal]
 *
 * --parse also turns every document into its NDJSON line and parses it with op_parse_json(), as
 * the HTTP handler does. Prints the time spent parsing, applying and committing, and
 * RESULT docs=N secs=S docs_per_s=R parse_s=.. apply_s=.. commit_s=..
 * DIR must not hold a store yet (use a fresh directory).
 */
#include "bench_common.h"

#include "common/err.h"
#include "core/item.h"
#include "core/store.h"

static void
usage(void)
{
    fprintf(stderr, "usage: bench_store_direct --dir DIR [--docs N] [--batch N] [--body BYTES] "
                    "[--parse] [--sync full|normal]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *dir = NULL, *sync = "full";
    long long docs = 200000, batch = 1000, body_len = BENCH_BODY_DEFAULT;
    int parse = 0;
    struct store_options so = {0};
    struct ls_error err;
    struct store *st;
    char *body, *line, path[128];
    size_t line_cap;
    double t0, t1, c0, t_parse = 0, t_apply = 0, t_commit = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dir") && v) dir = v, i++;
        else if (!strcmp(a, "--docs")) docs = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--batch")) batch = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--body")) body_len = bench_num(a, v, 0, BENCH_BODY_MAX), i++;
        else if (!strcmp(a, "--sync") && v) sync = v, i++;
        else if (!strcmp(a, "--parse")) parse = 1;
        else usage();
    }
    if (!dir || (strcmp(sync, "full") && strcmp(sync, "normal"))) usage();

    so.sync_full = !strcmp(sync, "full"); /* lockstep serve --sync full, the default */
    ls_error_clear(&err);
    if (!(st = store_open(dir, &so, &err))) bench_die("store_open %s: %s", dir, err.msg);

    line_cap = (size_t)body_len + 256;
    body = malloc((size_t)body_len + 1);
    line = malloc(line_cap);
    if (!body || !line) bench_die("out of memory");

    t0 = bench_now();
    c0 = bench_cpu();
    for (long long start = 0; start < docs; start += batch) {
        long long end = start + batch < docs ? start + batch : docs;
        double a, b;
        if (store_begin(st, &err)) bench_die("store_begin: %s", err.msg);
        if (store_savepoint(st)) bench_die("savepoint failed");
        for (long long d = start; d < end; d++) {
            struct ls_op op;
            struct ls_op_result res;
            int n = snprintf(path, sizeof path, "/bench/direct/d%05lld/%09lld", d / 1000, d);
            a = bench_now();
            if (parse) {
                int k = snprintf(line, line_cap, "{\"op\":\"put\",\"path\":\"%s\",\"body\":\"", path);
                bench_fill_body(line + k, (size_t)body_len, (uint64_t)d);
                k += (int)body_len;
                memcpy(line + k, "\"}", 3);
                k += 2;
                if (op_parse_json(line, (size_t)k, &op, &err)) bench_die("parse: %s", err.msg);
            } else {
                op_init(&op);
                op.type = LS_OP_PUT;
                if (!(op.path = strndup(path, (size_t)n))) bench_die("out of memory");
                bench_fill_body(body, (size_t)body_len, (uint64_t)d);
                op.body = body;
                op.body_len = (size_t)body_len;
            }
            b = bench_now();
            t_parse += b - a;
            if (store_apply(st, &op, &res, &err)) bench_die("apply %s: %s", path, err.msg);
            t_apply += bench_now() - b;
            op_release(&op);
        }
        a = bench_now();
        store_savepoint_release(st);
        if (store_commit(st, &err)) bench_die("commit: %s", err.msg);
        store_collect_garbage(st);
        t_commit += bench_now() - a;
    }
    t1 = bench_now();
    c0 = bench_cpu() - c0;
    store_free(st);

    printf("store direct: %lld docs of %lld B, %lld per transaction, sync=%s%s: %.2f s, "
           "%.0f docs/s, CPU %.2f s (parse %.2f s, apply %.2f s, commit %.2f s)\n",
           docs, body_len, batch, sync, parse ? ", with JSON parse" : "", t1 - t0,
           (double)docs / (t1 - t0), c0, t_parse, t_apply, t_commit);
    printf("RESULT docs=%lld secs=%.4f docs_per_s=%.1f cpu_s=%.4f parse_s=%.4f apply_s=%.4f "
           "commit_s=%.4f\n",
           docs, t1 - t0, (double)docs / (t1 - t0), c0, t_parse, t_apply, t_commit);
    free(body);
    free(line);
    return 0;
}
