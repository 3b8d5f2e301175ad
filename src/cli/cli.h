/*
 * cli.h - the command-line client: every command but `serve` is a client of the HTTP API.
 * Exit codes: 0 success, 1 error, 2 usage error, 3 not found. Every error is one line on stderr.
 */
#ifndef LS_CLI_H
#define LS_CLI_H

#include <jansson.h>
#include <stdio.h>

#include "common/util.h"

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_NOTFOUND = 3 };

#define UPLOAD_PART (8u << 20) /* bytes per upload part; well under the server's --max-request */

struct client {
    const char *server; /* base URL, no trailing slash */
    const char *cmd;    /* for messages */
};

struct resp {
    long status;
    struct ls_buf body;      /* JSON replies and error bodies */
    FILE *sink;           /* when set, a 2xx body is written here instead */
    int sink_failed;
    char version[32];     /* X-Lockstep-Version of an item reply */
    int transport_failed; /* no HTTP answer at all */
    char transport_error[256];
};

/* Common flags: every command takes --server and --help; cli_common handles them. */
void client_init(struct client *cl, const char *cmd);

/* Options for every command, taken out of argv by main(): --token, --cacert, --cert, --key
 * (or $LOCKSTEP_TOKEN, $LOCKSTEP_CACERT, $LOCKSTEP_CERT, $LOCKSTEP_KEY). */
struct client_auth {
    const char *token, *cacert, *cert, *key;
};
extern struct client_auth client_auth;
int client_take_global_options(int *argc, char **argv);
/* Applies the token and TLS options to a curl easy handle; headers gets the token. */
struct curl_slist;
struct curl_slist *client_apply_auth(void *curl, struct curl_slist *headers);
/* Percent-encodes an item path for a URL, keeping its slashes. Caller frees. */
char *url_path(const char *path);
char *url_query_value(const char *v);

/*
 * Performs one request. path_query starts with "/v1/...". body may be NULL. headers: NULL or a
 * NULL-terminated list of "Name: value". Returns 0 when an HTTP answer came back (any status).
 */
int client_call(struct client *cl, const char *method, const char *path_query, const void *body,
                size_t body_len, const char *const *headers, struct resp *r);
/* Same, but the request body is read from a file descriptor region (upload parts). */
void resp_init(struct resp *r);
void resp_release(struct resp *r);

/* Turns a failed reply into one line on stderr and the exit code. */
int client_fail(struct client *cl, const struct resp *r);
/* Calls and decodes a JSON reply; on failure prints and returns NULL with *code set. */
json_t *client_json(struct client *cl, const char *method, const char *path_query,
                    const void *body, size_t body_len, const char *const *headers, int *code);

int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Parses a command's options: --server and --help for every command, the command's own
 * (extra, getopt_long style, ending with a zero entry) through on_opt, which returns -1 to go
 * on or an exit code to stop. Returns -1 when the command should run, else its exit code.
 */
struct option;
int cli_parse(struct client *cl, int argc, char **argv, const struct option *extra,
              const char *usage, int (*on_opt)(int ch, const char *arg, void *ctx), void *ctx);

/* commands */
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_purge(int argc, char **argv);
int cmd_mv(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_unpublish(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_changes(int argc, char **argv);
int cmd_digest(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_nodes(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_resync(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_notify(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_consumers(int argc, char **argv);
int cmd_mirror(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Uploads a file (or stdin) through an upload session; returns the session id in id[33]. */
int client_upload(struct client *cl, FILE *in, const void *head, size_t head_len, char id[33],
                  int progress, int *code);

#endif
