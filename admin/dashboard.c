/* GET /: the dashboard, one self-contained HTML page (inline CSS, script and
 * SVG; no outside assets) that polls /api/workers, /api/push and
 * /api/agents-off-primary every 2 s and shows the workers, the push figures
 * with rates and a chart computed in the page, the agents off their primary,
 * the recipients nearest their quota (/api/agents-near-quota, every 30 s) and
 * the recent push events; a banner when a fetch fails (docs/admin.md
 * "GET / (dashboard)").
 *
 * GET / itself needs the token as a Bearer header or ?token= (admin.c); the
 * page sends the token it was given (?token=, #token= or its token field,
 * kept in sessionStorage) as a Bearer header on every API call. Everything
 * from the API goes into the page as text nodes, never as HTML. Every figure
 * carries a data-figure attribute (e.g. "totals.acked"), which
 * tests/browser/dashboard.mjs reads.
 *
 * The page is admin/dashboard.html, embedded at build time (dashboard.h). */
#include "admin/api.h"
#include "admin/dashboard.h"
#include "admin/http.h"

#include <string.h>

void adm_get_dashboard(struct adm_req *r)
{
	/* The token may be in the page's URL: keep it out of Referer headers. */
	adm_add_header(r, "Referrer-Policy", "no-referrer");
	adm_add_header(r, "Content-Security-Policy",
	               "default-src 'none'; script-src 'unsafe-inline'; style-src "
	               "'unsafe-inline'; connect-src 'self'");
	adm_reply_raw(r, 200, "text/html; charset=utf-8", adm_page_dashboard,
	              strlen(adm_page_dashboard));
}
