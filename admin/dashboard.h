/* The dashboard's page (admin/dashboard.html), embedded at build time by
 * scripts/embed.sh into $(BUILD)/gen/admin_html.c; dashboard.c serves it at GET /. */
#ifndef ADM_DASHBOARD_H
#define ADM_DASHBOARD_H

extern const char adm_page_dashboard[];

#endif
