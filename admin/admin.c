/* The admin port stub; see admin.h. */
#include "admin/admin.h"

#include "gateway/node.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct adm_server {
	struct evhttp *http;
};

static void on_request(struct evhttp_request *req, void *arg)
{
	struct evbuffer *body = evbuffer_new();
	evbuffer_add_printf(body,
	                    "{\"error\":\"not_built\",\"message\":\"the admin API is not built yet "
	                    "(it comes with push routing); nothing here is real\"}\n");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "application/json");
	evhttp_send_reply(req, 501, "Not Implemented", body);
	evbuffer_free(body);
}

struct adm_server *adm_start(struct gw_node *node, char *err, size_t errlen)
{
	struct adm_server *a = calloc(1, sizeof(*a));
	struct evconnlistener *l = NULL;
	if (a)
		a->http = evhttp_new(node->base);
	if (a && a->http)
		l = evconnlistener_new_bind(node->base, NULL, NULL,
		                            LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
		                                LEV_OPT_CLOSE_ON_EXEC,
		                            128, (struct sockaddr *)&node->conf.admin_sa, (int)node->conf.admin_sa_len);
	if (!l || !evhttp_bind_listener(a->http, l)) {
		snprintf(err, errlen, "admin: cannot listen: %s", strerror(errno));
		if (l)
			evconnlistener_free(l);
		if (a && a->http)
			evhttp_free(a->http);
		free(a);
		return NULL;
	}
	evhttp_set_gencb(a->http, on_request, a);
	return a;
}

void adm_stop(struct adm_server *a)
{
	if (!a)
		return;
	evhttp_free(a->http);
	free(a);
}
