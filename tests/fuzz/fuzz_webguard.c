/* libFuzzer target: the admin port's header rules (admin/webguard.c) on
 * arbitrary [admin] allowed_hosts, Host, Origin, Sec-Fetch-Site and
 * Content-Type values (the input's NUL-separated fields). They must never
 * crash; what they accept must hold invariants a browser relies on. */
#include "admin/webguard.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The next NUL-terminated field of [*p, end) copied into out (at most n-1 bytes). */
static const char *field(const uint8_t **p, const uint8_t *end, char *out, size_t n)
{
	size_t i = 0;
	while (*p < end && **p != 0) {
		if (i + 1 < n)
			out[i++] = (char)**p;
		(*p)++;
	}
	if (*p < end)
		(*p)++;
	out[i] = 0;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct adm_guard g;
	char allowed[1100], host[600], origin[600], site[64], ctype[300], err[512];
	const uint8_t *p = data, *end = data + size;
	field(&p, end, allowed, sizeof(allowed));
	field(&p, end, host, sizeof(host));
	field(&p, end, origin, sizeof(origin));
	field(&p, end, site, sizeof(site));
	field(&p, end, ctype, sizeof(ctype));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(8439)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	(void)adm_guard_init(&g, allowed, (const struct sockaddr *)&sa, err, sizeof(err));
	int host_ok = adm_guard_host_ok(&g, host[0] ? host : NULL);
	int origin_ok = adm_guard_origin_ok(origin[0] ? origin : NULL, site[0] ? site : NULL,
	                                    host[0] ? host : NULL);
	(void)adm_guard_is_json(ctype);
	/* a cross-site fetch never passes, whatever else it says */
	if (strcmp(site, "cross-site") == 0 && origin_ok)
		abort();
	/* an Origin naming another host than the request's own never passes */
	if (origin[0] && host[0] && origin_ok && !strcasestr(origin, host))
		abort();
	(void)host_ok;
	return 0;
}
