/* limit_admin.h — registers the rate limiter's admin endpoints (/limits...,
 * see limit_admin.c and docs/ratelimit.md). Called by main.c before
 * admin_start. */
#ifndef REFLEX_HTTP_LIMIT_ADMIN_H
#define REFLEX_HTTP_LIMIT_ADMIN_H

void limit_admin_register(void);

#endif
