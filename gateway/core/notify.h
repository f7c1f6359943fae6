/* notify.h — the service manager's readiness protocol (sd_notify), written
 * here so reflexd does not depend on libsystemd.
 *
 * When $NOTIFY_SOCKET names an AF_UNIX datagram socket (a path, or an
 * abstract name written with a leading '@'), each call sends one datagram of
 * newline-separated VAR=value assignments to it:
 *   READY=1                      listeners are up (start, and after a reload)
 *   RELOADING=1 MONOTONIC_USEC=  a reload (SIGHUP or POST /reload) begins
 *   STOPPING=1                   drain begins
 *   MAINPID=<pid> READY=1        a binary upgrade took over (the unit needs
 *                                NotifyAccess=all: the new process is not the
 *                                one systemd started)
 *   STATUS=<text>                a free-form line for `systemctl status`
 * Without $NOTIFY_SOCKET every call is a no-op that returns 0, so reflexd
 * runs the same under a shell, a container engine or a test.
 *
 * Thread-safe (one socket per call, no shared state); never blocks: the
 * datagram is sent with MSG_DONTWAIT and a full receiver is reported as
 * -EAGAIN. The variable is left in the environment so a process started by
 * a binary upgrade can notify too.
 */
#ifndef REFLEX_CORE_NOTIFY_H
#define REFLEX_CORE_NOTIFY_H

#include <stdbool.h>

/* True when $NOTIFY_SOCKET is set to something notify_send can use. */
bool notify_enabled(void);

/* Send the formatted assignments (one datagram). 0 when sent or when there
 * is no socket to send to; -errno when the address is invalid (-EINVAL) or
 * the send failed. */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The common messages. Each returns what notify_send returns. */
int notify_ready(void);
int notify_reloading(void); /* RELOADING=1 with MONOTONIC_USEC (systemd ≥ 253 needs it) */
int notify_stopping(void);
int notify_mainpid_ready(void); /* MAINPID=<getpid()> and READY=1 */

#endif
