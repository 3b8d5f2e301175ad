/*
 * cmd_token.c - `lockstep token create|ls|revoke`. With --data DIR, `create` writes the token
 * straight into the store, so the first admin token can be made before any server runs (or
 * while one runs: it picks the token up within a second).
 */
#include "cli/cli.h"
#include "core/store.h"
#include "node/auth.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum { O_SERVER = 1000, O_HELP, O_JSON, O_ROLE, O_NAME, O_DATA };

static const char usage[] =
    "usage: lockstep token create --role ROLE [--name NAME] [--data DIR]\n"
    "       lockstep token ls [--json]\n"
    "       lockstep token revoke NAME\n\n"
    "Access tokens. ROLE is admin (everything), write (read and write items), read, replicate\n"
    "(the peer port), notify or report (status and registry). `create` prints the new token,\n"
    "once: the server keeps only its hash. With --data DIR the token goes straight into that\n"
    "server's store, no server needed (how the first admin token is made).\n\n"
    "  --server URL     the server (default $LOCKSTEP_SERVER or http://127.0.0.1:7070)\n"
    "  --token TOKEN    an admin token (or $LOCKSTEP_TOKEN)\n"
    "  --help           this text\n";

static int
create_offline(const char *dir, const char *role, const char *name)
{
    struct store_options opt = {0};
    struct ls_error err;
    struct store *st = store_open(dir, &opt, &err);
    char token[TOKEN_LEN + 1], defname[80];
    unsigned char hash[32];
    int rc;
    if (!st) {
        fprintf(stderr, "lockstep token: %s\n", err.msg);
        return EXIT_ERR;
    }
    token_generate(token);
    token_hash(token, hash);
    if (!name) {
        token_default_name(role, hash, defname, sizeof defname);
        name = defname;
    }
    rc = store_token_add(st, name, role, hash, &err);
    store_free(st);
    if (rc) {
        fprintf(stderr, "lockstep token: %s\n", err.msg);
        return EXIT_ERR;
    }
    printf("%s\n", token);
    return EXIT_OK;
}

int
cmd_token(int argc, char **argv)
{
    static const struct option opts[] = {{"server", required_argument, NULL, O_SERVER},
                                         {"help", no_argument, NULL, O_HELP},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"role", required_argument, NULL, O_ROLE},
                                         {"name", required_argument, NULL, O_NAME},
                                         {"data", required_argument, NULL, O_DATA},
                                         {NULL, 0, NULL, 0}};
    struct client cl = {.cmd = "token"};
    const char *role = NULL, *name = NULL, *data = NULL, *sub;
    int ch, json = 0, rc;
    json_t *o;

    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (ch) {
        case O_HELP: printf("%s", usage); return EXIT_OK;
        case O_SERVER: cl.server = optarg; break;
        case O_JSON: json = 1; break;
        case O_ROLE: role = optarg; break;
        case O_NAME: name = optarg; break;
        case O_DATA: data = optarg; break;
        default:
            return cli_usage_error("token", "%s '%s'",
                                   ch == ':' ? "missing value for" : "unknown option",
                                   argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage_error("token", "expected create, ls or revoke");
    sub = argv[optind++];
    client_init(&cl, "token");
    if (strcmp(sub, "create") == 0) {
        char url[256], *er, *en;
        if (optind < argc) return cli_usage_error("token", "unexpected argument '%s'", argv[optind]);
        if (!role || !role_valid(role))
            return cli_usage_error(
                "token", "--role must be admin, write, read, replicate, notify or report");
        if (name && (!*name || strlen(name) > 64))
            return cli_usage_error("token", "--name must be 1 to 64 bytes");
        if (data) return create_offline(data, role, name);
        er = url_query_value(role);
        en = name ? url_query_value(name) : NULL;
        snprintf(url, sizeof url, "/v1/tokens?role=%s%s%s", er, en ? "&name=" : "", en ? en : "");
        free(er);
        free(en);
        if (!(o = client_json(&cl, "POST", url, NULL, 0, NULL, &rc))) return rc;
        printf("%s\n", json_string_value(json_object_get(o, "token")));
        json_decref(o);
        return EXIT_OK;
    }
    if (strcmp(sub, "ls") == 0) {
        json_t *t;
        size_t i;
        if (!(o = client_json(&cl, "GET", "/v1/tokens", NULL, 0, NULL, &rc))) return rc;
        if (json) {
            char *text = json_dumps(o, JSON_INDENT(2));
            puts(text);
            free(text);
        } else {
            json_array_foreach(json_object_get(o, "tokens"), i, t)
                printf("%-24s %-10s %s\n", json_string_value(json_object_get(t, "name")),
                       json_string_value(json_object_get(t, "role")),
                       json_string_value(json_object_get(t, "created")));
        }
        json_decref(o);
        return EXIT_OK;
    }
    if (strcmp(sub, "revoke") == 0) {
        char url[300], *en;
        if (optind != argc - 1) return cli_usage_error("token", "revoke needs one NAME");
        en = url_query_value(argv[optind]);
        snprintf(url, sizeof url, "/v1/tokens/%s", en);
        free(en);
        if (!(o = client_json(&cl, "DELETE", url, NULL, 0, NULL, &rc))) return rc;
        printf("revoked %s\n", argv[optind]);
        json_decref(o);
        return EXIT_OK;
    }
    return cli_usage_error("token", "unknown subcommand '%s' (create, ls or revoke)", sub);
}
