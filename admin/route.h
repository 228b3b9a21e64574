/* The admin port's path routing: a table of (method, pattern, handler) rows
 * matched against a request path. A pattern is a literal path in which "{}"
 * stands for one non-empty segment, captured in order ("/api/workers/{}/drain").
 * Pure (no I/O): admin.c holds the real table, the unit tests their own. */
#ifndef ADM_ROUTE_H
#define ADM_ROUTE_H

#include <stddef.h>

struct adm_req;
typedef void (*adm_handler_fn)(struct adm_req *r);

#define ADM_MAX_PARAMS    2
#define ADM_MAX_PARAM_LEN 256

/* Methods, as bits (the same values as libevent's enum evhttp_cmd_type). */
enum {
	ADM_GET = 1 << 0,
	ADM_POST = 1 << 1,
	ADM_HEAD = 1 << 2,
	ADM_PUT = 1 << 3,
	ADM_DELETE = 1 << 4,
};

/* Who may call a route when [admin] token is set. */
enum adm_access {
	ADM_TOKEN = 0, /* Authorization: Bearer TOKEN */
	ADM_OPEN = 1,  /* anyone (only /healthz) */
	ADM_TOKEN_OR_QUERY =
	    2, /* Bearer, or ?token=TOKEN (the dashboard page, see docs/admin.md) */
};

struct adm_route {
	int method; /* one ADM_* bit */
	const char *pattern;
	adm_handler_fn handler;
	enum adm_access access;
};

struct adm_params {
	int n;
	char v[ADM_MAX_PARAMS][ADM_MAX_PARAM_LEN];
};

/* The outcome of adm_route_find besides a row index. */
#define ADM_ROUTE_NOT_FOUND  (-1) /* no pattern matches the path: 404 */
#define ADM_ROUTE_BAD_METHOD (-2) /* a pattern matches, not with this method: 405 */

/* Finds the row for (method, path). path is the URI path without the query;
 * one trailing '/' is ignored ("/api/workers/" is "/api/workers"). On a match
 * returns its index and fills params; ADM_ROUTE_BAD_METHOD sets *allowed to
 * the methods the path does take. A segment longer than ADM_MAX_PARAM_LEN-1
 * bytes never matches "{}". */
int adm_route_find(const struct adm_route *table, int n, int method, const char *path,
                   struct adm_params *params, int *allowed);

/* Writes the Allow header value for a method mask ("GET, POST"). */
void adm_route_allow_header(int methods, char *out, size_t outlen);

/* The method's name ("GET"), or NULL for a method this port never serves. */
const char *adm_method_name(int method);

#endif
