/*
 * schema.c - the tables, the schema_version kept in meta, and the forward migrations that
 * bring a store written by an older lockstep up to this binary's version, in one transaction;
 * then the store's identity (store_id, epoch 1) and this server's node_id.
 *
 * Not for: reading or writing content.
 */
#include "core/store/store_int.h"

/*
 * Schema versions, kept in meta as schema_version:
 *   1  lockstep 0.1.0: meta, items, versions, log, epochs(epoch, start_seq, ts), tokens
 *   2  epochs.id: an epoch is named by its number and an id, so that two servers promoted
 *      separately to the same number are told apart (fork detection)
 *   3  the messenger: log_notify (an index of the notifications in the log), consumers (their
 *      durable positions), outbox (notifications a replica accepted, not yet forwarded) and
 *      forwarded (on the primary: the last outbox id applied per origin server); mirroring
 *      jobs (docs/mirror.md): mirror_jobs, mirror_runs, mirror_errors, mirror_checkpoints and
 *      mirror_index (what each directory target was last given of a directory source);
 *      later mirror_gens (the log generation of each store source's checkpoint)
 * A new store is created at SCHEMA_VERSION; an older one is migrated forward when its writer
 * opens it, all steps in one transaction; a newer one is refused.
 */
#define SCHEMA_VERSION 3

/* The tables as SCHEMA_VERSION has them (CREATE ... IF NOT EXISTS: on an older store it only
 * adds tables that are missing; the migrations change the ones that exist). */
static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS items("
    "  id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,"
    "  published INTEGER, deleted INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,"
    "  mtime INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS versions("
    "  item INTEGER NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL, meta TEXT NOT NULL,"
    "  size INTEGER NOT NULL, sha256 BLOB NOT NULL, body BLOB, mtime INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, PRIMARY KEY(item, version));"
    "CREATE INDEX IF NOT EXISTS versions_blob ON versions(sha256) WHERE body IS NULL;"
    "CREATE TABLE IF NOT EXISTS log("
    "  seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, op INTEGER NOT NULL, item INTEGER NOT NULL,"
    "  path TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0, flags INTEGER NOT NULL DEFAULT 0,"
    "  arg TEXT, cum INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS epochs(epoch INTEGER PRIMARY KEY, start_seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL, id TEXT);"
    /* Access tokens of this server (not replicated): only their SHA-256 is kept. */
    "CREATE TABLE IF NOT EXISTS tokens(name TEXT PRIMARY KEY, role TEXT NOT NULL,"
    "  hash BLOB NOT NULL, created INTEGER NOT NULL);"
    /* The messenger (docs/messenger.md); consumers and outbox are this server's own. */
    "CREATE INDEX IF NOT EXISTS log_notify ON log(seq) WHERE op=7;"
    "CREATE TABLE IF NOT EXISTS consumers(name TEXT PRIMARY KEY, channels TEXT NOT NULL,"
    "  position INTEGER NOT NULL, created INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0,"
    "  resets INTEGER NOT NULL DEFAULT 0, reset_at INTEGER NOT NULL DEFAULT 0,"
    "  gen INTEGER NOT NULL DEFAULT -1) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  channel TEXT NOT NULL, payload TEXT NOT NULL, ts INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS forwarded(origin TEXT PRIMARY KEY, last_id INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    /* Mirroring jobs (docs/mirror.md), this server's own (not replicated). */
    "CREATE TABLE IF NOT EXISTS mirror_jobs(name TEXT PRIMARY KEY, def TEXT NOT NULL,"
    "  paused INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS mirror_runs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  job TEXT NOT NULL, started INTEGER NOT NULL, ended INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL, items INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,"
    "  items_total INTEGER NOT NULL DEFAULT 0, bytes_total INTEGER NOT NULL DEFAULT 0,"
    "  errors INTEGER NOT NULL DEFAULT 0, targets TEXT NOT NULL DEFAULT '[]', note TEXT);"
    "CREATE INDEX IF NOT EXISTS mirror_runs_job ON mirror_runs(job, id);"
    "CREATE TABLE IF NOT EXISTS mirror_errors(run INTEGER NOT NULL, target TEXT NOT NULL,"
    "  path TEXT NOT NULL, reason TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS mirror_errors_run ON mirror_errors(run);"
    "CREATE TABLE IF NOT EXISTS mirror_checkpoints(job TEXT NOT NULL, target TEXT NOT NULL,"
    "  seq INTEGER NOT NULL DEFAULT 0, full_seq INTEGER NOT NULL DEFAULT 0,"
    "  after TEXT NOT NULL DEFAULT '', PRIMARY KEY(job, target)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS mirror_index(job TEXT NOT NULL, target TEXT NOT NULL,"
    "  path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  ino INTEGER NOT NULL, mode INTEGER NOT NULL, sha256 BLOB,"
    "  PRIMARY KEY(job, target, path)) WITHOUT ROWID;"
    /* the log generation (meta log_gen) a store source's checkpoint was taken in: added to
     * schema 3 as a table of its own, so a store that lacks it only gains it */
    "CREATE TABLE IF NOT EXISTS mirror_gens(job TEXT NOT NULL, target TEXT NOT NULL,"
    "  gen INTEGER NOT NULL, PRIMARY KEY(job, target)) WITHOUT ROWID;";

void
store_epoch_default_id(const char *store_id, int64_t epoch, char id[33])
{
    char text[80];
    unsigned char md[32];
    unsigned int n = 0;
    int len = snprintf(text, sizeof text, "lockstep epoch %s %lld", store_id, (long long)epoch);
    EVP_Digest(text, (size_t)len, md, &n, EVP_sha256(), NULL);
    ls_hex_encode(md, 16, id);
    id[32] = '\0';
}

/*
 * Stores written before epochs had ids get one per epoch, derived from store_id and the
 * number: every replica of one primary migrates to the same ids, and keeps agreeing with it.
 */
static int
migrate_epoch_ids(struct store *st, struct ls_error *err)
{
    sqlite3_stmt *s;
    char store_id[64], id[33], sql[200];
    int64_t todo[64];
    int n = 0, rc;
    if (sqlite3_prepare_v2(st->db, "SELECT id FROM epochs LIMIT 0", -1, &s, NULL) != SQLITE_OK) {
        if ((rc = db_exec(st, "ALTER TABLE epochs ADD COLUMN id TEXT", err))) return rc;
    } else {
        sqlite3_finalize(s);
    }
    if (db_meta_text(st, "store_id", store_id, sizeof store_id)) return 0;
    do { /* 64 at a time, until none is left: a long history must not keep NULL ids */
        n = 0;
        if (sqlite3_prepare_v2(st->db, "SELECT epoch FROM epochs WHERE id IS NULL LIMIT 64", -1,
                               &s, NULL))
            return db_error(st, SQLITE_ERROR, err, "epochs");
        while (sqlite3_step(s) == SQLITE_ROW && n < 64) todo[n++] = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        for (int i = 0; i < n; i++) {
            store_epoch_default_id(store_id, todo[i], id);
            snprintf(sql, sizeof sql, "UPDATE epochs SET id='%s' WHERE epoch=%lld", id,
                     (long long)todo[i]);
            if ((rc = db_exec(st, sql, err))) return rc;
        }
    } while (n == 64);
    return 0;
}

/* This server's own id (not the store's: a snapshot or --replace-store keeps it), made once. */
static int
init_node_id(struct store *st, struct ls_error *err)
{
    char id[33], sql[120];
    if (db_meta_text(st, "node_id", id, sizeof id) == 0 && strlen(id) == 32) return 0;
    ls_random_hex(id, 16);
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('node_id', '%s')", id);
    return db_exec(st, sql, err);
}

static int
init_identity(struct store *st, struct ls_error *err)
{
    char id[33], epoch_id[33], sql[600];
    char existing[64];
    if (db_meta_text(st, "store_id", existing, sizeof existing) == 0) return 0;
    ls_random_hex(id, 16);
    ls_random_hex(epoch_id, 16);
    snprintf(sql, sizeof sql,
             "INSERT OR IGNORE INTO meta VALUES('store_id', '%s');"
             "INSERT OR IGNORE INTO meta VALUES('epoch', 1);"
             "INSERT OR IGNORE INTO meta VALUES('seq', 0);"
             "INSERT OR IGNORE INTO meta VALUES('created', %lld);"
             "INSERT OR IGNORE INTO epochs(epoch, start_seq, ts, id) VALUES(1, 0, %lld, '%s');",
             id, (long long)ls_now_ms(), (long long)ls_now_ms(), epoch_id);
    return db_exec(st, sql, err);
}

/* Steps whose tables are new: the schema above has created them already. */
static int
migrate_nothing(struct store *st, struct ls_error *err)
{
    (void)st;
    (void)err;
    return 0;
}

static const struct migration {
    int64_t to;
    const char *what;
    int (*run)(struct store *st, struct ls_error *err);
} migrations[] = {
    {2, "epochs get ids", migrate_epoch_ids},
    {3, "the messenger's and the mirroring jobs' tables", migrate_nothing},
};

int
schema_init(struct store *st, struct ls_error *err)
{
    char buf[32], sql[100];
    int64_t version = 1;
    int rc, fresh;
    if ((rc = db_exec(st, "BEGIN IMMEDIATE", err))) return rc;
    fresh = db_meta_text(st, "store_id", buf, sizeof buf) != 0; /* no meta table, or empty */
    if ((rc = db_exec(st, schema, err))) goto fail;
    if (fresh) version = SCHEMA_VERSION;
    else if (db_meta_text(st, "schema_version", buf, sizeof buf) == 0 && ls_parse_i64(buf, &version))
        version = -1;
    if (version < 1 || version > SCHEMA_VERSION) {
        rc = ls_error_set(err, LS_EINVAL,
                          "%s was written by another lockstep (schema version %s; this one knows "
                          "1 to %d): use a newer lockstep",
                          st->dir, buf, SCHEMA_VERSION);
        goto fail;
    }
    for (size_t i = 0; i < sizeof migrations / sizeof migrations[0]; i++) {
        if (migrations[i].to <= version) continue;
        assert(migrations[i].to == version + 1); /* steps in order, none skipped */
        if ((rc = migrations[i].run(st, err))) {
            ls_error_prefix(err, "migrating the store to schema %lld (%s)",
                            (long long)migrations[i].to, migrations[i].what);
            goto fail;
        }
        version = migrations[i].to;
    }
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('schema_version', %d)",
             SCHEMA_VERSION);
    if ((rc = db_exec(st, sql, err)) || (rc = init_identity(st, err)) ||
        (rc = init_node_id(st, err)) || (rc = db_exec(st, "COMMIT", err)))
        goto fail;
    return 0;
fail:
    db_exec(st, "ROLLBACK", NULL);
    return rc;
}
