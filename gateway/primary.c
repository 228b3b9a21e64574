/* Primary resolution; see primary.h. */
#include "gateway/primary.h"

#include "gateway/config.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void normalize_host(char *h)
{
	for (char *p = h; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t n = strlen(h);
	if (n > 1 && h[n - 1] == '.')
		h[n - 1] = 0;
}

static int addr_equal(const struct gw_addr *a, const char *list)
{
	char copy[1024];
	snprintf(copy, sizeof(copy), "%s", list);
	for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		struct gw_addr b;
		if (gw_addr_parse(tok, &b) != 0)
			continue;
		normalize_host(b.host);
		if (b.port == a->port && strcmp(a->host, b.host) == 0)
			return 1;
	}
	return 0;
}

int gw_resolve_primary(const char *primary, size_t len, const struct gw_known_worker *ws, int n)
{
	char p[300];
	if (len == 0 || len >= sizeof(p))
		return -1;
	memcpy(p, primary, len);
	p[len] = 0;
	if (!strchr(p, ':')) {
		for (int i = 0; i < n; i++)
			if (strcmp(ws[i].name, p) == 0)
				return i;
		return -1;
	}
	struct gw_addr a;
	if (gw_addr_parse(p, &a) != 0)
		return -1;
	normalize_host(a.host);
	for (int i = 0; i < n; i++)
		if (addr_equal(&a, ws[i].advertise))
			return i;
	return -1;
}

int gw_worker_stream(const struct gw_known_worker *w, char *out, size_t outlen)
{
	char first[300];
	const char *comma = strchr(w->advertise, ',');
	size_t n = comma ? (size_t)(comma - w->advertise) : strlen(w->advertise);
	if (n >= sizeof(first))
		return -1;
	memcpy(first, w->advertise, n);
	first[n] = 0;
	struct gw_addr a;
	if (gw_addr_parse(first, &a) != 0)
		return -1;
	int r =
	    snprintf(out, outlen, "%s(host=%s;port=%u)", w->tls ? "tls" : "tcpip", a.host, a.port);
	return r < 0 || (size_t)r >= outlen ? -1 : 0;
}

/* The server list of WELCOME and REASSIGN (protocol.md): the primary (or,
 * unresolved, this worker) first, then the other serving workers in the
 * agent's ring order; while the router has no view of the pool (Redis
 * down), every known worker by name. ws gives each worker's streams. */
int gw_server_list(struct gw_worker *w, const char *agent, const char *primary,
                   const struct gw_known_worker *ws, int n, struct qs_server *servers,
                   char (*streams)[320])
{
	const char *names[RT_VIEW_MAX + 1];
	int nn = 0;
	names[nn++] = primary[0] ? primary : w->wc->name;
	const struct rt_view *v = w->pool ? rt_pool_view(w->pool) : NULL;
	if (v && v->n > 0) {
		int order[RT_VIEW_MAX];
		int k = rt_pool_order(w->pool, agent, order);
		for (int i = 0; i < k; i++)
			names[nn++] = v->w[order[i]].name;
		/* Workers the view has not seen yet (a node starting): not known to be
		 * down, so listed last. */
		for (int i = 0; i < n && nn < RT_VIEW_MAX + 1; i++) {
			int seen = 0;
			for (int j = 0; j < v->n && !seen; j++)
				seen = strcmp(v->w[j].name, ws[i].name) == 0;
			if (!seen)
				names[nn++] = ws[i].name;
		}
	} else {
		for (int i = 0; i < n && nn < RT_VIEW_MAX + 1; i++)
			names[nn++] = ws[i].name;
	}
	int k = 0;
	for (int i = 0; i < nn; i++) {
		int dup = 0;
		for (int j = 0; j < k && !dup; j++)
			dup = strcmp(servers[j].name.ptr, names[i]) == 0;
		int at = -1;
		for (int j = 0; j < n && at < 0; j++)
			if (strcmp(ws[j].name, names[i]) == 0)
				at = j;
		if (dup || at < 0 || gw_worker_stream(&ws[at], streams[k], sizeof(streams[k])) != 0)
			continue;
		servers[k].name = qs_str_c(ws[at].name);
		servers[k].stream = qs_str_c(streams[k]);
		k++;
	}
	return k;
}
