/* upgrade.h — handing listening sockets to a new reflexd (zero-downtime
 * binary upgrade).
 *
 * The running process listens on the abstract Unix socket
 * "@reflexd-upgrade-<pid>" (SOCK_SEQPACKET; no file to clean up, gone with
 * the process). A new process started with --upgrade-from PID connects,
 * receives every listening descriptor in one message (SCM_RIGHTS), starts
 * its workers on them and answers "READY". Only then does the old process
 * stop accepting and drain; its copies of the descriptors are closed
 * without shutting the sockets down, so connections waiting in a backlog
 * are accepted by the new process, not reset.
 *
 * Only a process of the same user may connect (SO_PEERCRED is checked).
 */
#ifndef REFLEX_CORE_UPGRADE_H
#define REFLEX_CORE_UPGRADE_H

#include <sys/types.h>

#define UPGRADE_MAX_FDS 250 /* under SCM_MAX_FD (253) */

/* Old side: the listening socket for hand-off requests, or -errno. */
int upgrade_listen(pid_t self);
/* Old side: accept one new process on lfd, send it fds[0..n), and wait
 * (up to timeout_ms) for its READY. 0 when it took over; -errno otherwise
 * (then the old process just keeps serving). */
int upgrade_serve(int lfd, const int *fds, unsigned n, int timeout_ms);

/* New side: connect to the process `old`, receive its descriptors into
 * fds (room for max). Returns how many, or -errno; *conn is kept open for
 * upgrade_ready(). */
int upgrade_fetch(pid_t old, int *fds, unsigned max, int *conn);
/* New side: tell the old process we serve now; closes conn. */
int upgrade_ready(int conn);

#endif
