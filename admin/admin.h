/* The admin port (admin.md). Not built yet: this listener answers every
 * request with 501 and a JSON error saying so, so that nobody mistakes it
 * for a working API. Runs on the node's main event loop. */
#ifndef ADM_ADMIN_H
#define ADM_ADMIN_H

#include <stddef.h>

struct gw_node;
struct adm_server;

/* Binds the admin listener on the node's main loop. Returns NULL with err. */
struct adm_server *adm_start(struct gw_node *node, char *err, size_t errlen);
void adm_stop(struct adm_server *a);

#endif
