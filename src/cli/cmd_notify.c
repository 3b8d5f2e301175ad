/*
 * cmd_notify.c - the cluster messenger from the command line (docs/messenger.md): notify
 * (publish), watch (consume, one line per notification, acknowledged after it is written) and
 * consumers (list, rewind, reset, rm).
 */
#include "cli/cli.h"
#include "core/item.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_CHANNEL = 1000, O_CONSUMER, O_FROM_START, O_FROM_NOW, O_JSON, O_TO };

#define COMMON_HELP                                                                               \
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"         \
    "  --help           this text\n"

#define CHANNELS_MAX 64
#define WATCH_ACK_TRIES 30
#define WATCH_WAIT_MS 25000
#define WATCH_LIMIT 100

struct notify_args {
    const char *channels[CHANNELS_MAX];
    int nchannels, from_start, from_now, json, bad;
    const char *consumer, *to;
};

static int
notify_opt(int ch, const char *arg, void *ctx)
{
    struct notify_args *a = ctx;
    switch (ch) {
    case O_CHANNEL:
        if (a->nchannels == CHANNELS_MAX) return cli_usage_error("watch", "at most 64 channels");
        a->channels[a->nchannels++] = arg;
        break;
    case O_CONSUMER: a->consumer = arg; break;
    case O_FROM_START: a->from_start = 1; break;
    case O_FROM_NOW: a->from_now = 1; break;
    case O_JSON: a->json = 1; break;
    case O_TO: a->to = arg; break;
    }
    return -1;
}

static int
parse(struct client *cl, int argc, char **argv, const char *usage, struct notify_args *a)
{
    static const struct option opts[] = {{"channel", required_argument, NULL, O_CHANNEL},
                                         {"consumer", required_argument, NULL, O_CONSUMER},
                                         {"from-start", no_argument, NULL, O_FROM_START},
                                         {"from-now", no_argument, NULL, O_FROM_NOW},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"to", required_argument, NULL, O_TO},
                                         {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    return cli_parse(cl, argc, argv, opts, usage, notify_opt, a);
}

/* ---------------------------------------------------------------- notify */

/* One request of notifications (a JSON array text) on the server. */
static int
publish(struct client *cl, const char *body, size_t len, size_t *count)
{
    json_t *o;
    int rc;
    if (!(o = client_json(cl, "POST", "/v1/notify", body, len, NULL, &rc))) return rc;
    *count += json_array_size(json_object_get(o, "ids"));
    if (json_object_get(o, "queued"))
        fprintf(stderr, "lockstep notify: the primary is not reachable; %zu queued on this "
                        "server, forwarded when it is\n",
                json_array_size(json_object_get(o, "queued")));
    json_decref(o);
    return EXIT_OK;
}

int
cmd_notify(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep notify CHANNEL [JSON|-]\n\n"
        "Publishes a notification on CHANNEL with a JSON payload (default null). With -, every\n"
        "line of standard input is one notification's payload; they go 1,000 per request,\n"
        "each request one transaction. Prints the ids.\n\n" COMMON_HELP;
    struct client cl = {.cmd = "notify"};
    struct notify_args a;
    const char *channel, *payload;
    json_t *arr = json_array();
    size_t count = 0;
    char *line = NULL, *text;
    size_t cap = 0;
    ssize_t n;
    int rc;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) goto out;
    if (optind >= argc || argc - optind > 2) {
        rc = cli_usage_error("notify", "give a channel and a payload");
        goto out;
    }
    channel = argv[optind];
    payload = optind + 1 < argc ? argv[optind + 1] : "null";
    {
        struct ls_error err;
        if (name_check("channel", channel, strlen(channel), &err)) {
            rc = cli_usage_error("notify", "%s", err.msg);
            goto out;
        }
    }
    while (1) {
        json_error_t jerr;
        json_t *value;
        if (strcmp(payload, "-") == 0) {
            if ((n = getline(&line, &cap, stdin)) < 0) break;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
            if (n == 0) continue;
            value = json_loads(line, JSON_DECODE_ANY, &jerr);
        } else {
            value = json_loads(payload, JSON_DECODE_ANY, &jerr);
        }
        if (!value) {
            rc = cli_usage_error("notify", "the payload is not JSON: %s", jerr.text);
            goto out;
        }
        json_array_append_new(arr, json_pack("{s:s,s:o}", "channel", channel, "payload", value));
        if (json_array_size(arr) == 1000 || strcmp(payload, "-") != 0) {
            text = json_dumps(arr, JSON_COMPACT);
            rc = publish(&cl, text, strlen(text), &count);
            free(text);
            json_array_clear(arr);
            if (rc) goto out;
        }
        if (strcmp(payload, "-") != 0) break;
    }
    if (json_array_size(arr) > 0) {
        text = json_dumps(arr, JSON_COMPACT);
        rc = publish(&cl, text, strlen(text), &count);
        free(text);
        if (rc) goto out;
    }
    if (isatty(STDOUT_FILENO)) printf("%zu published\n", count);
    rc = EXIT_OK;
out:
    free(line);
    json_decref(arr);
    return rc;
}

/* ---------------------------------------------------------------- watch */

static int
print_line(json_t *o, int as_json)
{
    char *text;
    if (as_json) {
        text = json_dumps(o, JSON_COMPACT);
        if (!text) return -1;
        puts(text);
    } else if (json_object_get(o, "type")) {
        text = json_dumps(o, JSON_COMPACT);
        if (!text) return -1;
        printf("RESET %s\n", text);
    } else {
        text = json_dumps(json_object_get(o, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) return -1;
        printf("%lld %s %s %s\n", (long long)json_integer_value(json_object_get(o, "id")),
               json_string_value(json_object_get(o, "time")),
               json_string_value(json_object_get(o, "channel")), text);
    }
    free(text);
    return 0;
}

int
cmd_watch(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep watch [--channel C]... [--consumer NAME] [--from-start|--from-now]\n"
        "                      [--json]\n\n"
        "Prints the notifications of the channels (every channel, content included, when none\n"
        "is given) as they come, one line each, and acknowledges each batch once it is written.\n"
        "With --consumer the position is kept by the server: a watcher restarted with the same\n"
        "name continues after the last line it printed. A consumer behind the retained window\n"
        "gets one reset line first (rebuild your caches then).\n\n"
        "  --channel C      a channel to receive (repeatable)\n"
        "  --consumer NAME  a named consumer with a durable position on the server\n"
        "  --from-start     a new consumer starts at the oldest retained notification\n"
        "  --from-now       a new consumer starts at the head (the default)\n"
        "  --json           one JSON object per line: id, channel, payload, time\n" COMMON_HELP;
    struct client cl = {.cmd = "watch"};
    struct notify_args a;
    char url[8192];
    int64_t after = -1, acked = -1;
    int rc, failures = 0;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind < argc) return cli_usage_error("watch", "unexpected argument '%s'", argv[optind]);
    if (a.from_start && a.from_now)
        return cli_usage_error("watch", "give --from-start or --from-now, not both");
    while (1) {
        size_t len, i;
        json_t *o, *v, *notes;
        struct resp r;
        len = (size_t)snprintf(url, sizeof url, "/v1/notifications?limit=%d&wait_ms=%d%s",
                               WATCH_LIMIT, WATCH_WAIT_MS, a.from_start ? "&from=start" : "");
        if (a.consumer) {
            char *q = url_query_value(a.consumer);
            len += (size_t)snprintf(url + len, sizeof url - len, "&consumer=%s", q);
            free(q);
        }
        for (int k = 0; k < a.nchannels && len < sizeof url; k++) {
            char *q = url_query_value(a.channels[k]);
            len += (size_t)snprintf(url + len, sizeof url - len, "&channel=%s", q);
            free(q);
        }
        /* a named consumer reads from the position the server keeps (so an operator's rewind
         * is followed); an anonymous one from where it stands */
        if (!a.consumer && after >= 0 && len < sizeof url)
            snprintf(url + len, sizeof url - len, "&after=%lld", (long long)after);
        resp_init(&r);
        if (client_call(&cl, "GET", url, NULL, 0, NULL, &r) < 0 || r.status >= 500) {
            /* the server is away: try again, and say so once */
            if (failures++ == 0) client_fail(&cl, &r);
            resp_release(&r);
            sleep(failures < 5 ? 1 : 5);
            continue;
        }
        if (r.status != 200) {
            rc = client_fail(&cl, &r);
            resp_release(&r);
            return rc;
        }
        if (failures) fprintf(stderr, "lockstep watch: connected again\n");
        failures = 0;
        o = json_loadb(r.body.p ? r.body.p : "", r.body.len, 0, NULL);
        resp_release(&r);
        if (!o) {
            fprintf(stderr, "lockstep watch: the server's reply is not JSON\n");
            return EXIT_ERR;
        }
        if ((v = json_object_get(o, "reset")) && print_line(v, 1)) goto fail;
        notes = json_object_get(o, "notifications");
        json_array_foreach(notes, i, v) if (print_line(v, a.json)) goto fail;
        /* written before acknowledged: a watcher killed here prints them again (at least once) */
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "lockstep watch: cannot write to standard output\n");
            json_decref(o);
            return EXIT_ERR;
        }
        after = json_integer_value(json_object_get(o, "next"));
        json_decref(o);
        if (a.consumer && after > acked) {
            char body[64], path[200];
            char *q = url_query_value(a.consumer);
            snprintf(path, sizeof path, "/v1/consumers/%s/ack", q);
            free(q);
            snprintf(body, sizeof body, "{\"id\":%lld}", (long long)after);
            /* an ack the server could not take (it, or its database, is away a moment) is tried
             * again before the next read, which would hand the same lines out again; refused,
             * or still away after WATCH_ACK_TRIES s, they are (at least once) */
            for (int tries = 0; tries < WATCH_ACK_TRIES; tries++) {
                int away;
                resp_init(&r);
                away = client_call(&cl, "POST", path, body, strlen(body), NULL, &r) < 0 ||
                       r.status >= 500;
                if (!away && r.status >= 200 && r.status < 300) acked = after;
                else if (!away || tries == 0) client_fail(&cl, &r);
                resp_release(&r);
                if (!away) break;
                sleep(1);
            }
        }
        continue;
    fail:
        json_decref(o);
        fprintf(stderr, "lockstep watch: out of memory\n");
        return EXIT_ERR;
    }
}

/* ---------------------------------------------------------------- consumers */

static int
consumers_list(struct client *cl, int as_json)
{
    json_t *o, *c;
    size_t i;
    int rc;
    if (!(o = client_json(cl, "GET", "/v1/consumers", NULL, 0, NULL, &rc))) return rc;
    if (as_json) {
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(o);
        return EXIT_OK;
    }
    printf("%-20s %-8s %10s %8s %6s %5s %-24s %s\n", "NAME", "STATE", "POSITION", "PENDING",
           "LAG_S", "CONN", "LAST_ACK", "CHANNELS");
    json_array_foreach(json_object_get(o, "consumers"), i, c)
    {
        char chans[512] = "", *p = chans;
        size_t k;
        json_t *ch;
        const char *last = json_string_value(json_object_get(c, "last_ack"));
        json_array_foreach(json_object_get(c, "channels"), k, ch)
            p += snprintf(p, sizeof chans - (size_t)(p - chans) > 1 ? sizeof chans - (size_t)(p - chans) : 1,
                          "%s%s", k ? "," : "", json_string_value(ch));
        printf("%-20s %-8s %10lld %8lld %6lld %5lld %-24s %s%s\n",
               json_string_value(json_object_get(c, "name")),
               json_string_value(json_object_get(c, "state")),
               (long long)json_integer_value(json_object_get(c, "position")),
               (long long)json_integer_value(json_object_get(c, "pending")),
               (long long)json_integer_value(json_object_get(c, "lag_seconds")),
               (long long)json_integer_value(json_object_get(c, "connected")), last ? last : "-",
               *chans ? chans : "(all)", json_is_true(json_object_get(c, "at_risk")) ? "  AT RISK" : "");
    }
    json_decref(o);
    return EXIT_OK;
}

int
cmd_consumers(int argc, char **argv)
{
    static const char usage[] =
        "usage: lockstep consumers [--json]\n"
        "       lockstep consumers rewind NAME --to ID|TIME\n"
        "       lockstep consumers reset NAME\n"
        "       lockstep consumers rm NAME\n\n"
        "Lists this server's consumers of notifications: position, pending, lag, last ack and\n"
        "state (live, behind, stalled, reset), or moves one: rewind to an id or a time, reset\n"
        "to the head (skipping what is pending), rm forgets it.\n\n"
        "  --to ID|TIME     rewind: an id, or a time such as 2026-12-03T10:00:00Z\n"
        "  --json           print JSON\n" COMMON_HELP;
    struct client cl = {.cmd = "consumers"};
    struct notify_args a;
    const char *verb, *name;
    char path[300], *q, *t = NULL;
    json_t *o;
    int rc;
    if ((rc = parse(&cl, argc, argv, usage, &a)) >= 0) return rc;
    if (optind == argc) return consumers_list(&cl, a.json);
    verb = argv[optind];
    if (argc - optind != 2) return cli_usage_error("consumers", "give a verb and a consumer name");
    name = argv[optind + 1];
    q = url_query_value(name);
    if (strcmp(verb, "rewind") == 0) {
        if (!a.to) {
            free(q);
            return cli_usage_error("consumers", "rewind needs --to ID|TIME");
        }
        t = url_query_value(a.to);
        snprintf(path, sizeof path, "/v1/consumers/%s/rewind?to=%s", q, t);
    } else if (strcmp(verb, "reset") == 0) {
        snprintf(path, sizeof path, "/v1/consumers/%s/reset", q);
    } else if (strcmp(verb, "rm") == 0) {
        snprintf(path, sizeof path, "/v1/consumers/%s", q);
    } else {
        free(q);
        return cli_usage_error("consumers", "unknown verb '%s' (rewind, reset, rm)", verb);
    }
    free(q);
    free(t);
    if (!(o = client_json(&cl, strcmp(verb, "rm") == 0 ? "DELETE" : "POST", path, NULL, 0, NULL,
                          &rc)))
        return rc;
    if (a.json || strcmp(verb, "rm") == 0) {
        char *text = json_dumps(o, JSON_COMPACT);
        puts(text);
        free(text);
    } else {
        printf("%s: position %lld (head %lld)\n", name,
               (long long)json_integer_value(json_object_get(o, "position")),
               (long long)json_integer_value(json_object_get(o, "head")));
    }
    json_decref(o);
    return EXIT_OK;
}
