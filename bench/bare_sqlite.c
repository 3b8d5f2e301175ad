/*
 * bare_sqlite.c - the physical limit lockstep's write path is measured against: the same rows
 * (path TEXT, body BLOB of the same 1 KiB bodies) inserted into ONE bare SQLite table, with the
 * durability lockstep promises (WAL, synchronous=FULL), one prepared statement, committing every
 * --batch rows. Nothing else: no index, no change log, no JSON, no HTTP.
 *
 *   bench_bare_sqlite --dir DIR [--rows 200000] [--batch 1000] [--body 1024]
 *                     [--sync full|normal|off] [--unique] [--cache-kib 8000]
 *
 * The database is DIR/bare.db (removed first, and afterwards unless --keep). --unique adds a
 * UNIQUE index on path (lockstep has one on items.path), to show what one index costs.
 * Prints a human line and a machine line: RESULT rows=N secs=S rows_per_s=R commits=C cpu_s=..
 * txn_p50_ms=.. txn_p99_ms=.. txn_max_ms=.. (one transaction, BEGIN to COMMIT: with --batch 1,
 * the floor under lockstep's single-put latency on the same disk).
 */
#include "bench_common.h"

#include <sqlite3.h>

static void
usage(void)
{
    fprintf(stderr, "usage: bench_bare_sqlite --dir DIR [--rows N] [--batch N] [--body BYTES]\n"
                    "                         [--sync full|normal|off] [--unique] [--cache-kib N]"
                    " [--keep]\n");
    exit(2);
}

static void
check(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        bench_die("%s: %s", what, sqlite3_errmsg(db));
}

static void
exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        bench_die("%s: %s", sql, msg ? msg : "?");
}

static void
remove_db(const char *file)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char f[4200];
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(f, sizeof f, "%s%s", file, suffix[i]);
        unlink(f);
    }
}

int
main(int argc, char **argv)
{
    const char *dir = NULL, *sync = "full";
    long long rows = 200000, batch = 1000, body_len = BENCH_BODY_DEFAULT, cache_kib = 8000;
    int unique = 0, keep = 0;
    char file[4096], sql[256], path[128];
    char *body;
    sqlite3 *db;
    sqlite3_stmt *ins;
    double t0, t1, c0, c1;
    long long commits = 0;
    double *lat, tb = 0; /* seconds per transaction, BEGIN to COMMIT */

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dir") && v) dir = v, i++;
        else if (!strcmp(a, "--rows")) rows = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--batch")) batch = bench_num(a, v, 1, 100000000), i++;
        else if (!strcmp(a, "--body")) body_len = bench_num(a, v, 0, BENCH_BODY_MAX), i++;
        else if (!strcmp(a, "--cache-kib")) cache_kib = bench_num(a, v, 0, 1 << 24), i++;
        else if (!strcmp(a, "--sync") && v) sync = v, i++;
        else if (!strcmp(a, "--unique")) unique = 1;
        else if (!strcmp(a, "--keep")) keep = 1;
        else usage();
    }
    if (!dir) usage();
    if (strcmp(sync, "full") && strcmp(sync, "normal") && strcmp(sync, "off")) usage();

    snprintf(file, sizeof file, "%s/bare.db", dir);
    remove_db(file);
    if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        bench_die("cannot open %s: %s", file, sqlite3_errmsg(db));
    exec(db, "PRAGMA journal_mode=WAL");
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
    exec(db, sql);
    snprintf(sql, sizeof sql, "PRAGMA cache_size=-%lld", cache_kib); /* lockstep: 8 MB */
    exec(db, sql);
    exec(db, "CREATE TABLE docs(path TEXT NOT NULL, body BLOB NOT NULL)");
    if (unique) exec(db, "CREATE UNIQUE INDEX docs_path ON docs(path)");
    check(db, sqlite3_prepare_v2(db, "INSERT INTO docs(path, body) VALUES(?1, ?2)", -1, &ins, NULL),
          "prepare");

    body = malloc((size_t)body_len + 1);
    lat = malloc((size_t)((rows + batch - 1) / batch) * sizeof *lat);
    if (!body || !lat) bench_die("out of memory");
    bench_fill_body(body, (size_t)body_len, 0);

    t0 = bench_now();
    c0 = bench_cpu();
    for (long long i = 0; i < rows; i++) {
        int n;
        if (i % batch == 0) {
            tb = bench_now();
            exec(db, "BEGIN IMMEDIATE");
        }
        bench_fill_body(body, (size_t)body_len, (uint64_t)i);
        /* the same shape as the load generator's paths */
        n = snprintf(path, sizeof path, "/bench/bare/d%05lld/%09lld", i / 1000, i);
        sqlite3_bind_text(ins, 1, path, n, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 2, body, (int)body_len, SQLITE_STATIC);
        check(db, sqlite3_step(ins), "insert");
        sqlite3_reset(ins);
        if ((i + 1) % batch == 0 || i + 1 == rows) {
            exec(db, "COMMIT");
            lat[commits++] = bench_now() - tb;
        }
    }
    t1 = bench_now();
    c1 = bench_cpu();

    sqlite3_finalize(ins);
    sqlite3_close(db);
    if (!keep) remove_db(file);
    qsort(lat, (size_t)commits, sizeof *lat, bench_cmp_dbl);
    printf("bare sqlite: %lld rows of %lld B, %lld per transaction (%lld commits), sync=%s%s: "
           "%.2f s, %.0f rows/s, CPU %.2f s; transaction ms p50 %.3f p99 %.3f max %.3f\n",
           rows, body_len, batch, commits, sync, unique ? ", unique(path)" : "", t1 - t0,
           (double)rows / (t1 - t0), c1 - c0, bench_pct(lat, (size_t)commits, .5) * 1e3,
           bench_pct(lat, (size_t)commits, .99) * 1e3, lat[commits - 1] * 1e3);
    printf("RESULT rows=%lld secs=%.4f rows_per_s=%.1f commits=%lld cpu_s=%.4f txn_p50_ms=%.3f "
           "txn_p99_ms=%.3f txn_max_ms=%.3f\n",
           rows, t1 - t0, (double)rows / (t1 - t0), commits, c1 - c0,
           bench_pct(lat, (size_t)commits, .5) * 1e3, bench_pct(lat, (size_t)commits, .99) * 1e3,
           lat[commits - 1] * 1e3);
    free(lat);
    free(body);
    return 0;
}
