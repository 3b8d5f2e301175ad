/*
 * main.c - `lockstep COMMAND ...`: one binary, the server and its client commands, dispatched
 * from a table (git's builtin table).
 */
#include "cli/cli.h"
#include "node/server.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    {"serve", serve_main, "run a server"},
    {"put", cmd_put, "write a new version of an item"},
    {"get", cmd_get, "print an item's body"},
    {"stat", cmd_stat, "show an item's metadata"},
    {"ls", cmd_ls, "list items under a prefix"},
    {"history", cmd_history, "list an item's versions"},
    {"rm", cmd_rm, "delete an item (tombstone)"},
    {"purge", cmd_purge, "delete an item completely"},
    {"mv", cmd_mv, "move an item"},
    {"publish", cmd_publish, "publish an item's version"},
    {"unpublish", cmd_unpublish, "take an item off line"},
    {"import", cmd_import, "apply an NDJSON file of operations, all or nothing"},
    {"changes", cmd_changes, "print or follow the change log"},
    {"digest", cmd_digest, "digest of the live items"},
    {"verify", cmd_verify, "rehash every stored body and list the damaged ones"},
    {"status", cmd_status, "show the server's status"},
    {"nodes", cmd_nodes, "list the servers following this one (--all: the whole site)"},
    {"promote", cmd_promote, "turn a replica into the primary"},
    {"resync", cmd_resync, "re-synchronize a replica from a point in time or seq"},
    {"token", cmd_token, "create, list and revoke access tokens"},
    {"notify", cmd_notify, "publish a notification on a channel"},
    {"watch", cmd_watch, "print notifications as they come (a consumer)"},
    {"consumers", cmd_consumers, "list, rewind and reset the consumers of notifications"},
    {"mirror", cmd_mirror, "mirroring jobs: create, run, follow and list their history"},
    {"report", cmd_report, "the newest result of every mirroring job across servers"},
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: lockstep COMMAND [ARGS]\n\nlockstep keeps the servers of a content site "
                 "in step.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nEvery client command takes --server URL, --token TOKEN, and for https:// "
                 "servers\n--cacert FILE, --cert FILE and --key FILE (or $LOCKSTEP_SERVER, "
                 "$LOCKSTEP_TOKEN,\n$LOCKSTEP_CACERT, $LOCKSTEP_CERT, $LOCKSTEP_KEY).\n");
    fprintf(out, "\n'lockstep COMMAND --help' describes a command.\n");
}

int
main(int argc, char **argv)
{
    int rc;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("lockstep %s\n", LS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        if (commands[i].run != serve_main && client_take_global_options(&argc, argv)) return 2;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = commands[i].run(argc - 1, argv + 1);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "lockstep: unknown command '%s' (see lockstep --help)\n", argv[1]);
    return 2;
}
