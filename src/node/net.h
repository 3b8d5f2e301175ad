/* net.h - socket addresses from "HOST:PORT" and "[V6]:PORT" strings, and the resolver. */
#ifndef LS_NET_H
#define LS_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* The one parser of "HOST:PORT" and "[V6]:PORT" (every address flag goes through it): host
 * (without brackets; may be empty) into host[n], port 0..65535. 0, or LS_EINVAL on bad syntax
 * (no port, a port that is not a number, unbalanced brackets, a host too long for n). */
int net_split_hostport(const char *addr, char *host, size_t n, int *port);
/* net_split_hostport, then a blocking getaddrinfo: for listening addresses at start-up only
 * (the upstream is resolved without blocking, in repl_down.c). */
int parse_hostport(const char *addr, struct sockaddr_storage *ss, int *sslen);
void format_sockaddr(const struct sockaddr *sa, char *out, size_t n);
/* Do two "host:port" strings name the same host? */
int same_host(const char *a, const char *b);

struct event_base;
struct evdns_base;
struct ls_error;
/* A resolver that never blocks the loop: the system's (/etc/resolv.conf, /etc/hosts), or the
 * resolv.conf named by LOCKSTEP_RESOLV_CONF (tests). NULL (err set) when it cannot be made. */
struct evdns_base *net_dns_new(struct event_base *base, struct ls_error *err);

#endif
