/* The admin port's handlers, one per row of the route table in admin.c
 * (admin.md has the contract, docs/admin.md what is implemented). Each takes
 * a request with its path parameters in r->params and answers it, at once
 * or once its Redis/store calls have returned (http.h). */
#ifndef ADM_API_H
#define ADM_API_H

struct adm_req;

/* api_pool.c: health and the workers of the pool */
void adm_get_healthz(struct adm_req *r);
void adm_get_workers(struct adm_req *r);
void adm_post_worker_drain(struct adm_req *r);
void adm_post_worker_resume(struct adm_req *r);
void adm_delete_worker(struct adm_req *r);

/* api_push.c */
void adm_get_push(struct adm_req *r);

/* api_agents.c */
void adm_get_agent(struct adm_req *r);
void adm_get_agents(struct adm_req *r);
void adm_post_agent(struct adm_req *r);
void adm_delete_agent_token(struct adm_req *r);
void adm_put_agent_primary(struct adm_req *r);

/* api_offprimary.c: agents whose primary is down or draining */
void adm_get_agents_off_primary(struct adm_req *r);

/* api_quota.c: recipients nearest their max_pending quota */
void adm_get_agents_near_quota(struct adm_req *r);

/* api_messages.c */
void adm_post_message(struct adm_req *r);
void adm_get_message(struct adm_req *r);
void adm_delete_message(struct adm_req *r);

/* dashboard.c */
void adm_get_dashboard(struct adm_req *r);

/* metrics.c (declared in metrics.h too) */
void adm_get_metrics(struct adm_req *r);

#endif
