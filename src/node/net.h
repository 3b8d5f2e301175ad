/* net.h - socket addresses from "HOST:PORT" and "[V6]:PORT" strings. */
#ifndef LS_NET_H
#define LS_NET_H

#include <sys/socket.h>

int parse_hostport(const char *addr, struct sockaddr_storage *ss, int *sslen);
void format_sockaddr(const struct sockaddr *sa, char *out, size_t n);
/* Do two "host:port" strings name the same host? */
int same_host(const char *a, const char *b);

#endif
