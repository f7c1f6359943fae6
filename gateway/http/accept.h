/* accept.h — a worker's listeners: one SO_REUSEPORT socket per configured
 * address (or the sockets inherited from the process being upgraded), a
 * multishot accept on each, new connections handed to req.c. */
#ifndef REFLEX_HTTP_ACCEPT_H
#define REFLEX_HTTP_ACCEPT_H

#include <stdbool.h>

struct worker;
struct config;

/* Open the listeners of w->cfg; they are armed when w->serving is set
 * (accept_serve). Returns 0 or -errno (w->start_msg says which address
 * failed). */
int accept_open(struct worker *w);
/* Set w->serving and arm every listener not armed yet (worker thread). */
void accept_serve(struct worker *w);
/* Reload: open the addresses ncfg adds, close those it drops. 0, or -1 if
 * an address could not be opened (logged; the others still apply). */
int accept_update(struct worker *w, const struct config *ncfg);
/* Stop accepting (drain). keep_sockets: another process accepts on these
 * sockets now, so close our descriptors without shutting the sockets. */
void accept_close(struct worker *w, bool keep_sockets);
/* Free what is left at worker exit (the ring is gone by then). */
void accept_free(struct worker *w);
/* The worker's open listening descriptors (for an upgrade hand-off);
 * read from another thread while the worker runs: the list only changes
 * on reload and drain, which the upgrade path does not overlap. */
unsigned accept_fds(struct worker *w, int *fds, unsigned max);

#endif
