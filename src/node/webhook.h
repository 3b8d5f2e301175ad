/*
 * webhook.h - webhooks (`--webhook NAME=URL[,channel=C]...`, docs/messenger.md "Webhooks"):
 * consumers of this server that POST their notifications, in batches, to an HTTP endpoint.
 *
 * The loop thread only.
 */
#ifndef LS_WEBHOOK_H
#define LS_WEBHOOK_H

#include <jansson.h>

struct server;
struct strlist;
struct ls_error;

/* Checks every --webhook value: 0, or LS_EINVAL with one line in err naming the bad one. */
int webhook_check(const struct strlist *specs, struct ls_error *err);
/* After messenger_start: each webhook opens its consumer and starts delivering. */
int webhook_start(struct server *srv, struct ls_error *err);
/* After the readers stop (every read has come back) and before messenger_stop (which saves
 * the last acknowledgements): a POST in flight is dropped, and sent again at the next start. */
void webhook_stop(struct server *srv);
/* Consumer name was moved (rewind, reset): its webhook, waiting for commits, reads again now. */
void webhook_kick(struct server *srv, const char *name);
/* The "webhook" object of consumer name's JSON; NULL when no webhook has that name. */
json_t *webhook_json(struct server *srv, const char *name);
/* The names of the webhooks that are failing now. */
json_t *webhook_failing_json(struct server *srv);

#endif
