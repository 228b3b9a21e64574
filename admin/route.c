/* Path routing; see route.h. */
#include "admin/route.h"

#include <stdio.h>
#include <string.h>

/* Matches path (len bytes, no trailing '/') against pattern; fills p. */
static int match(const char *pattern, const char *path, size_t len, struct adm_params *p)
{
	const char *end = path + len;
	p->n = 0;
	while (*pattern) {
		if (pattern[0] == '{' && pattern[1] == '}') {
			const char *seg_end = memchr(path, '/', (size_t)(end - path));
			if (!seg_end)
				seg_end = end;
			size_t n = (size_t)(seg_end - path);
			if (n == 0 || n >= ADM_MAX_PARAM_LEN || p->n == ADM_MAX_PARAMS)
				return 0;
			memcpy(p->v[p->n], path, n);
			p->v[p->n][n] = 0;
			p->n++;
			path = seg_end;
			pattern += 2;
			continue;
		}
		if (path == end || *path != *pattern)
			return 0;
		path++;
		pattern++;
	}
	return path == end;
}

int adm_route_find(const struct adm_route *table, int n, int method, const char *path,
                   struct adm_params *params, int *allowed)
{
	size_t len = strlen(path);
	if (len > 1 && path[len - 1] == '/')
		len--;
	int methods = 0;
	for (int i = 0; i < n; i++) {
		struct adm_params p;
		if (!match(table[i].pattern, path, len, &p))
			continue;
		if (table[i].method == method) {
			*params = p;
			return i;
		}
		methods |= table[i].method;
	}
	if (!methods)
		return ADM_ROUTE_NOT_FOUND;
	*allowed = methods;
	return ADM_ROUTE_BAD_METHOD;
}

const char *adm_method_name(int method)
{
	switch (method) {
	case ADM_GET:
		return "GET";
	case ADM_POST:
		return "POST";
	case ADM_HEAD:
		return "HEAD";
	case ADM_PUT:
		return "PUT";
	case ADM_DELETE:
		return "DELETE";
	}
	return NULL;
}

void adm_route_allow_header(int methods, char *out, size_t outlen)
{
	size_t used = 0;
	out[0] = 0;
	for (int bit = ADM_GET; bit <= ADM_DELETE; bit <<= 1) {
		if (!(methods & bit))
			continue;
		int w = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "",
		                 adm_method_name(bit));
		if (w < 0 || (size_t)w >= outlen - used) {
			out[used] = 0; /* whole method names only */
			return;
		}
		used += (size_t)w;
	}
}
