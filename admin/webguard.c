/* The admin port's defences against web pages; see webguard.h. */
#include "admin/webguard.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Copies host into name (lowercased), without brackets or port. Returns 1
 * for an IPv6 literal (it was in brackets), 0 for a name or IPv4 address, -1
 * when host is not "name[:port]" or "[v6][:port]". */
static int split_host(const char *host, char *name, size_t len)
{
	const char *start = host, *end, *port;
	int v6 = 0;
	if (*host == '[') {
		end = strchr(host, ']');
		if (!end)
			return -1;
		start = host + 1;
		port = end + 1;
		v6 = 1;
	} else {
		end = strchr(host, ':');
		if (!end)
			end = host + strlen(host);
		port = end;
	}
	if (*port == ':') {
		port++;
		size_t n = strspn(port, "0123456789");
		if (n > 5 || port[n])
			return -1;
	} else if (*port) {
		return -1;
	}
	size_t n = (size_t)(end - start);
	if (n == 0 || n >= len)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)start[i];
		if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || (v6 && ch == ':')))
			return -1;
		name[i] = (char)tolower(ch);
	}
	name[n] = 0;
	return v6;
}

static int same_v4(const struct in_addr *a, const struct sockaddr_storage *sa)
{
	return sa->ss_family == AF_INET &&
	       ((const struct sockaddr_in *)sa)->sin_addr.s_addr == a->s_addr;
}

static int same_v6(const struct in6_addr *a, const struct sockaddr_storage *sa)
{
	return sa->ss_family == AF_INET6 &&
	       memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, a, sizeof(*a)) == 0;
}

int adm_guard_init(struct adm_guard *g, const char *allowed, const struct sockaddr *listen_sa,
                   char *err, size_t errlen)
{
	int rc = 0;
	memset(g, 0, sizeof(*g));
	if (listen_sa && listen_sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)listen_sa;
		if (in->sin_addr.s_addr != htonl(INADDR_ANY))
			memcpy(&g->listen_sa, in, sizeof(*in));
	} else if (listen_sa && listen_sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)listen_sa;
		if (!IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			memcpy(&g->listen_sa, in6, sizeof(*in6));
	}
	for (const char *p = allowed ? allowed : ""; *p;) {
		size_t n = strcspn(p, ",");
		char entry[300];
		const char *s = p, *e = p + n;
		p = *e ? e + 1 : e;
		while (s < e && isspace((unsigned char)*s))
			s++;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (s == e)
			continue;
		snprintf(entry, sizeof(entry), "%.*s", (int)(e - s), s);
		/* An entry is a Host without port: a bare IPv6 address gets its
		 * brackets here so split_host reads it as one. */
		char bracketed[304];
		struct in6_addr a6;
		if (entry[0] != '[' && inet_pton(AF_INET6, entry, &a6) == 1)
			snprintf(bracketed, sizeof(bracketed), "[%s]", entry);
		else
			snprintf(bracketed, sizeof(bracketed), "%s", entry);
		char name[256];
		int kind = split_host(bracketed, name, sizeof(name));
		const char *after = kind == 1 ? strchr(bracketed, ']') : bracketed;
		if (kind < 0 || strchr(after, ':')) {
			if (rc == 0)
				snprintf(
				    err, errlen,
				    "[admin] allowed_hosts: \"%s\" is not a host name or address "
				    "(no scheme, no port)",
				    entry);
			rc = -1;
			continue;
		}
		if (g->n_hosts == ADM_GUARD_MAX_HOSTS) {
			if (rc == 0)
				snprintf(err, errlen, "[admin] allowed_hosts: more than %d names",
				         ADM_GUARD_MAX_HOSTS);
			rc = -1;
			break;
		}
		snprintf(g->hosts[g->n_hosts++], sizeof(g->hosts[0]), "%s", name);
	}
	return rc;
}

int adm_guard_host_ok(const struct adm_guard *g, const char *host)
{
	if (!host)
		return 1;
	char name[256];
	int kind = split_host(host, name, sizeof(name));
	if (kind < 0)
		return 0;
	if (kind == 1) {
		struct in6_addr a6;
		if (inet_pton(AF_INET6, name, &a6) != 1)
			return 0;
		if (IN6_IS_ADDR_LOOPBACK(&a6) || same_v6(&a6, &g->listen_sa) ||
		    (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127))
			return 1;
		for (int i = 0; i < g->n_hosts; i++) {
			struct in6_addr e6;
			if (inet_pton(AF_INET6, g->hosts[i], &e6) == 1 &&
			    !memcmp(&e6, &a6, sizeof(a6)))
				return 1;
		}
		return 0;
	}
	size_t n = strlen(name);
	if (!strcmp(name, "localhost") ||
	    (n > 10 && !strcmp(name + n - 10, ".localhost") && name[n - 11] != '.'))
		return 1;
	struct in_addr a4;
	if (inet_pton(AF_INET, name, &a4) == 1 &&
	    ((ntohl(a4.s_addr) >> 24) == 127 || same_v4(&a4, &g->listen_sa)))
		return 1;
	for (int i = 0; i < g->n_hosts; i++)
		if (!strcmp(g->hosts[i], name))
			return 1;
	return 0;
}

int adm_guard_origin_ok(const char *origin, const char *sec_fetch_site, const char *host)
{
	if (sec_fetch_site && !strcasecmp(sec_fetch_site, "cross-site"))
		return 0;
	if (!origin)
		return 1;
	const char *authority;
	if (!strncasecmp(origin, "http://", 7))
		authority = origin + 7;
	else if (!strncasecmp(origin, "https://", 8))
		authority = origin + 8;
	else
		return 0; /* "null" (sandboxed frames, file:), other schemes */
	return host && *host && !strcasecmp(authority, host);
}

int adm_guard_is_json(const char *content_type)
{
	static const char json[] = "application/json";
	if (!content_type)
		return 0;
	const char *p = content_type + strspn(content_type, " \t");
	if (strncasecmp(p, json, sizeof(json) - 1) != 0)
		return 0;
	p += sizeof(json) - 1;
	p += strspn(p, " \t");
	while (*p == ';') {
		p++;
		p += strspn(p, " \t");
		size_t n = strcspn(p, "=;");
		int charset = n == 7 && !strncasecmp(p, "charset", 7);
		p += n;
		if (*p != '=')
			return 0;
		p++;
		int quoted = *p == '"';
		p += quoted;
		size_t v = strcspn(p, quoted ? "\"" : "; \t");
		if (charset && !(v == 5 && !strncasecmp(p, "utf-8", 5)))
			return 0;
		p += v;
		if (quoted) {
			if (*p != '"')
				return 0;
			p++;
		}
		p += strspn(p, " \t");
	}
	return *p == 0;
}
