/*
 * mirror.h - mirroring jobs (docs/mirror.md): what the server, the HTTP API and the runs share.
 *
 * A job copies a source (store:/prefix, dir:/path) to one or more targets (dir:/path). Its
 * definition and history live in the store (core/store/mirror.c); a run executes on a thread of
 * its own, never on the event loop, and writes its checkpoints through the writer thread.
 */
#ifndef LS_MIRROR_H
#define LS_MIRROR_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

struct server;
struct mirror_job;

/* Loads the jobs, arms the --every timers and runs again the jobs a crash interrupted. */
int mirrors_start(struct server *srv, struct ls_error *err);
/* Before the writer stops: cancels the runs and waits for their threads. */
void mirrors_stop(struct server *srv);
void mirrors_free(struct server *srv); /* after the writer has stopped */

/*
 * Checks a job as the API receives it ({"name","source","targets",...}) and gives its name and
 * its definition as stored (normalized, defaults filled in). data_dir (absolute, resolved): the
 * server's own data, which no target may touch; roots (--mirror-root, may be empty): when given,
 * every directory source and target must be within one of them. 0, or LS_EINVAL with the reason.
 */
struct strlist;
int mirror_def_check(const json_t *body, const char *data_dir, const struct strlist *roots,
                     char name[65], json_t **def, struct ls_error *err);
struct mirror_job *mirror_find(struct server *srv, const char *name);
int mirror_running(const struct mirror_job *job);
/* The loop's own view after the store has changed (the HTTP API's writer jobs call these). */
int mirror_added(struct server *srv, const char *name, json_t *def); /* takes def */
void mirror_removed(struct server *srv, const char *name);
void mirror_paused(struct server *srv, const char *name, int paused);
/* Starts a run now. LS_ECONFLICT when one runs or the job is paused. */
int mirror_run_now(struct server *srv, struct mirror_job *job, struct ls_error *err);
/* {"name", "definition", "paused", "running", "progress"?}; the jobs list, or one in detail. */
json_t *mirror_job_json(struct mirror_job *job);
/* A job's figures since this server started: runs ended by outcome, and the items, bytes and
 * errors of every run (the running one's so far); running and that run's totals. */
struct mirror_counters {
    uint64_t runs_ok, runs_partial, runs_failed, items, bytes, errors;
    int running;
    int64_t run_items_total, run_bytes_total;
};
void mirror_count(struct mirror_job *job, struct mirror_counters *out);
/* The jobs in order: the first (prev NULL) or the one after prev; NULL after the last. */
struct mirror_job *mirror_next(struct server *srv, struct mirror_job *prev);
const char *mirror_name(const struct mirror_job *job);
json_t *mirror_list_json(struct server *srv);
/*
 * For a job's event stream (about once a second): the events due since the caller last looked,
 * appended to out as SSE. *seen_end: the id of the last run whose end the caller has (0 at
 * first); *first: nonzero on the first call (an "idle" event when no run is going).
 */
struct evbuffer;
void mirror_events(struct mirror_job *job, struct evbuffer *out, int64_t *seen_end, int *first);

#endif
