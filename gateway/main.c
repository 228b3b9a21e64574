/* qagw: one node of the pool. The main thread loads the configuration,
 * migrates the store, binds every listener, starts one thread per worker,
 * serves the admin port and handles signals (SIGTERM/SIGINT drain, SIGHUP
 * reload). Fatal errors stop the process only here, at start. */
#include "admin/admin.h"
#include "gateway/config.h"
#include "gateway/credentials.h"
#include "gateway/log.h"
#include "gateway/node.h"
#include "gateway/tls.h"
#include "gateway/worker.h"
#include "store/schema.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORE_START_WAIT_S 30

/* The node plus what only the main thread's signal handling needs. */
struct node {
	struct gw_node node;
	struct gw_tls *tls; /* NULL unless a worker has tls = on */
	struct event *stop_check;
	int stopping;
};

static void usage(void)
{
	fprintf(stderr, "usage: qagw -c FILE [--check]\n"
	                "       qagw -c FILE agent add ID | agent remove ID | agent list\n"
	                "  -c FILE    configuration file (see conf/qagw.conf)\n"
	                "  --check    validate the configuration and exit\n");
	exit(2);
}

static void die(const char *what)
{
	gw_log(GW_LOG_ERROR, "qagw: %s", what);
	fprintf(stderr, "qagw: %s\n", what);
	exit(1);
}

static void on_stop_check(evutil_socket_t fd, short what, void *arg)
{
	struct node *n = arg;
	/* A worker's loop has exited once its thread can be joined; the
	 * workers set no flag, so try-join each. */
	for (int i = 0; i < n->node.n_workers; i++)
		if (n->node.workers[i] && pthread_tryjoin_np(n->node.workers[i]->thread, NULL) != 0)
			return;
	event_base_loopexit(n->node.base, NULL);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	struct node *n = arg;
	if (n->stopping) {
		gw_log(GW_LOG_WARN, "second signal %d: exiting without waiting for the drain",
		       (int)sig);
		_exit(1);
	}
	n->stopping = 1;
	gw_log(GW_LOG_INFO, "signal %d: draining and stopping", (int)sig);
	for (int i = 0; i < n->node.n_workers; i++)
		gw_worker_post(n->node.workers[i], GW_CMD_STOP);
	struct timeval tv = {0, 100000};
	event_add(n->stop_check, &tv);
}

/* SIGHUP: the reloadable keys (log level, TLS certificate) from a fresh
 * parse; a file or a certificate that does not load keeps what is in force. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct node *n = arg;
	struct gw_config *fresh = malloc(sizeof(*fresh));
	char err[1024];
	if (!fresh)
		return;
	const struct gw_config *c = &n->node.conf;
	if (gw_config_load(n->node.conf.path, fresh, err, sizeof(err)) != 0) {
		gw_log(GW_LOG_ERROR, "SIGHUP: configuration not reloaded, keeping the old one: %s",
		       err);
	} else {
		c = fresh;
		atomic_store(&gw_log_threshold, gw_log_parse_level(fresh->log_level));
		snprintf(n->node.conf.log_level, sizeof(n->node.conf.log_level), "%s",
		         fresh->log_level);
		gw_log(GW_LOG_INFO, "SIGHUP: configuration reloaded (log_level %s)",
		       fresh->log_level);
	}
	if (n->tls) {
		if (gw_tls_reload(n->tls, c->tls_cert, c->tls_key, err, sizeof(err)) != 0)
			gw_log(GW_LOG_ERROR,
			       "SIGHUP: TLS certificate not reloaded, keeping the old one: %s",
			       err);
		else
			gw_log(GW_LOG_INFO, "SIGHUP: TLS certificate reloaded from %s",
			       c->tls_cert);
	}
	free(fresh);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0;
	char **agent_cmd = NULL;
	int agent_argc = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--check") == 0)
			check = 1;
		else if (strcmp(argv[i], "agent") == 0) {
			agent_cmd = argv + i + 1;
			agent_argc = argc - i - 1;
			break;
		} else
			usage();
	}
	if (!path)
		usage();

	static struct node n;
	char err[2048];
	if (gw_config_load(path, &n.node.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s\n", err);
		return 1;
	}
	if (agent_cmd) {
		/* Provisioning needs the schema: migrate first (idempotent). */
		if (st_startup(n.node.conf.conninfo, 5, NULL, 0, err, sizeof(err)) != 0) {
			fprintf(stderr, "qagw: %s\n", err);
			return 1;
		}
		return gw_credentials_cli(&n.node.conf, agent_argc, agent_cmd);
	}
	if (check) {
		printf("qagw: %s: configuration ok (%d workers)\n", path, n.node.conf.n_workers);
		return 0;
	}
	atomic_store(&gw_log_threshold, gw_log_parse_level(n.node.conf.log_level));
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN); /* until the main loop handles it (store start-up may wait) */
	if (evthread_use_pthreads() != 0)
		die("libevent has no pthreads support");

	struct st_worker_row rows[GW_MAX_WORKERS];
	for (int i = 0; i < n.node.conf.n_workers; i++) {
		rows[i].name = n.node.conf.workers[i].name;
		rows[i].node = n.node.conf.node_name;
		rows[i].advertise = n.node.conf.workers[i].advertise;
		rows[i].tls = n.node.conf.workers[i].tls;
		rows[i].capacity = n.node.conf.workers[i].capacity;
	}
	if (st_startup(n.node.conf.conninfo, STORE_START_WAIT_S, rows, n.node.conf.n_workers, err,
	               sizeof(err)) != 0)
		die(err);

	n.node.started_ms = gw_now_ms();
	n.node.base = event_base_new();
	if (!n.node.base)
		die("cannot create the main event loop");
	/* Signals are handled from here on, before any listener is bound: a
	 * SIGHUP or SIGTERM as soon as a port answers must not kill us. */
	struct event *sigterm = evsignal_new(n.node.base, SIGTERM, on_term, &n);
	struct event *sigint = evsignal_new(n.node.base, SIGINT, on_term, &n);
	struct event *sighup = evsignal_new(n.node.base, SIGHUP, on_hup, &n);
	n.stop_check = event_new(n.node.base, -1, EV_PERSIST, on_stop_check, &n);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_add(sighup, NULL);
	for (int i = 0; i < n.node.conf.n_workers && !n.tls; i++)
		if (n.node.conf.workers[i].tls &&
		    !(n.tls =
		          gw_tls_new(n.node.conf.tls_cert, n.node.conf.tls_key, err, sizeof(err))))
			die(err);
	for (int i = 0; i < n.node.conf.n_workers; i++) {
		n.node.workers[i] = gw_worker_new(&n.node.conf, i, err, sizeof(err));
		if (!n.node.workers[i])
			die(err);
		n.node.workers[i]->tls = n.tls;
		n.node.n_workers++;
	}
	if (gw_node_start_services(&n.node) != 0)
		die("cannot create the node's store and Redis connections");
	struct adm_server *admin = adm_start(&n.node, err, sizeof(err));
	if (!admin)
		die(err);
	for (int i = 0; i < n.node.n_workers; i++)
		if (gw_worker_start(n.node.workers[i]) != 0)
			die("cannot start a worker thread");

	gw_log(GW_LOG_INFO, "node %s: %d workers, admin on %s, store schema v%d",
	       n.node.conf.node_name, n.node.n_workers, n.node.conf.admin_listen,
	       st_schema_version());

	event_base_dispatch(n.node.base);

	for (int i = 0; i < n.node.n_workers; i++)
		gw_worker_join_and_free(n.node.workers[i]);
	adm_stop(admin);
	gw_node_stop_services(&n.node);
	gw_tls_free(n.tls);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_free(n.stop_check);
	event_base_free(n.node.base);
	gw_log(GW_LOG_INFO, "node %s: stopped", n.node.conf.node_name);
	return 0;
}
