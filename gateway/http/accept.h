/* accept.h — a worker's listeners: one SO_REUSEPORT socket per configured
 * address, a multishot accept on each, new connections handed to req.c. */
#ifndef REFLEX_HTTP_ACCEPT_H
#define REFLEX_HTTP_ACCEPT_H

struct worker;

/* Open and arm the worker's listeners. Returns 0 or -errno (w->start_msg
 * says which address failed). */
int accept_open(struct worker *w);
/* Stop accepting: cancel the accepts and close the sockets (drain). */
void accept_close(struct worker *w);

#endif
