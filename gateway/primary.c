/* Primary resolution; see primary.h. */
#include "gateway/primary.h"

#include "gateway/config.h"

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
