/* The admin port (admin.md). Not built yet: this listener answers every
 * request with 501 and a JSON error saying so, so that nobody mistakes it
 * for a working API. Runs on the node's main event loop. */
#ifndef ADM_ADMIN_H
#define ADM_ADMIN_H

#include <sys/socket.h>

struct event_base;
struct adm_server;

/* Binds the admin listener. Returns NULL with err on failure. */
struct adm_server *adm_start(struct event_base *base, const struct sockaddr *sa, socklen_t len,
                             char *err, size_t errlen);
void adm_stop(struct adm_server *a);

#endif
