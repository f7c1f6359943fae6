/* sock.h — socket set-up helpers (no I/O on the data path happens here).
 * All return a file descriptor or -errno. */
#ifndef REFLEX_CORE_SOCK_H
#define REFLEX_CORE_SOCK_H

#include <stddef.h>
#include <sys/socket.h>

/* A listening TCP socket with SO_REUSEPORT (one per worker per address),
 * SO_REUSEADDR and a large backlog. IPv6 sockets are V6ONLY. Accepted
 * sockets inherit TCP_NODELAY and delayed ACKs (ping-pong mode: the ACK of
 * a request goes out with its response). */
int sock_listen(const struct sockaddr *sa, socklen_t len, int backlog);
/* TCP_DEFER_ACCEPT on a listener, on (1 s, as HAProxy's defer-accept) or off: a
 * connection is handed over once its first bytes arrive, or after the first SYN-ACK
 * retransmission when none do. 0 or -errno. */
int sock_defer_accept(int fd, int on);
/* A non-blocking TCP socket for an outgoing connection, TCP_NODELAY set. */
int sock_stream_for(const struct sockaddr *sa);
void sock_set_nodelay(int fd);
/* ACK what has arrived now, and every segment until the kernel's ping-pong
 * heuristic takes over again: for a peer that waits for an ACK before it
 * sends more (Nagle), such as the rest of a request body. */
void sock_ack_now(int fd);
/* Abortive close: SO_LINGER 0, so close() sends RST. */
void sock_set_linger0(int fd);
/* "1.2.3.4" or "2001:db8::1" for a peer address; returns buf. */
const char *sock_ntop(const struct sockaddr *sa, char *buf, size_t len);

#endif
