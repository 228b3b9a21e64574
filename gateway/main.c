/* qagw: one node of the pool. The main thread loads the configuration,
 * migrates the store, binds every listener, starts one thread per worker,
 * serves the admin port and handles signals (SIGTERM/SIGINT drain, SIGHUP
 * reload). Fatal errors stop the process only here, at start. */
#include "admin/admin.h"
#include "gateway/config.h"
#include "gateway/log.h"
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

struct node {
	struct gw_config conf;
	struct gw_worker *workers[GW_MAX_WORKERS];
	int n_workers;
	struct event_base *base;
	struct event *stop_check;
	int stopping;
};

static void usage(void)
{
	fprintf(stderr, "usage: qagw -c FILE [--check]\n"
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
	for (int i = 0; i < n->n_workers; i++)
		if (n->workers[i] && pthread_tryjoin_np(n->workers[i]->thread, NULL) != 0)
			return;
	event_base_loopexit(n->base, NULL);
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
	for (int i = 0; i < n->n_workers; i++)
		gw_worker_post(n->workers[i], GW_CMD_STOP);
	struct timeval tv = {0, 100000};
	event_add(n->stop_check, &tv);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct node *n = arg;
	struct gw_config *fresh = malloc(sizeof(*fresh));
	char err[1024];
	if (!fresh)
		return;
	if (gw_config_load(n->conf.path, fresh, err, sizeof(err)) != 0) {
		gw_log(GW_LOG_ERROR, "SIGHUP: configuration not reloaded, keeping the old one: %s",
		       err);
	} else {
		/* Only reloadable keys take effect: the log level. */
		atomic_store(&gw_log_threshold, gw_log_parse_level(fresh->log_level));
		snprintf(n->conf.log_level, sizeof(n->conf.log_level), "%s", fresh->log_level);
		gw_log(GW_LOG_INFO, "SIGHUP: configuration reloaded (log_level %s)",
		       fresh->log_level);
	}
	free(fresh);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--check") == 0)
			check = 1;
		else
			usage();
	}
	if (!path)
		usage();

	static struct node n;
	char err[2048];
	if (gw_config_load(path, &n.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s\n", err);
		return 1;
	}
	if (check) {
		printf("qagw: %s: configuration ok (%d workers)\n", path, n.conf.n_workers);
		return 0;
	}
	atomic_store(&gw_log_threshold, gw_log_parse_level(n.conf.log_level));
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() != 0)
		die("libevent has no pthreads support");
	if (!n.conf.auth_off)
		gw_log(GW_LOG_WARN, "[node] auth = token: agent authentication is not built yet; "
		                    "running as auth = off (loopback listeners only)");

	struct st_worker_row rows[GW_MAX_WORKERS];
	for (int i = 0; i < n.conf.n_workers; i++) {
		rows[i].name = n.conf.workers[i].name;
		rows[i].node = n.conf.node_name;
		rows[i].advertise = n.conf.workers[i].advertise;
		rows[i].tls = n.conf.workers[i].tls;
		rows[i].capacity = n.conf.workers[i].capacity;
	}
	if (st_startup(n.conf.conninfo, STORE_START_WAIT_S, rows, n.conf.n_workers, err,
	               sizeof(err)) != 0)
		die(err);

	n.base = event_base_new();
	if (!n.base)
		die("cannot create the main event loop");
	for (int i = 0; i < n.conf.n_workers; i++) {
		n.workers[i] = gw_worker_new(&n.conf, i, err, sizeof(err));
		if (!n.workers[i])
			die(err);
		n.n_workers++;
	}
	struct adm_server *admin = adm_start(n.base, (struct sockaddr *)&n.conf.admin_sa,
	                                     n.conf.admin_sa_len, err, sizeof(err));
	if (!admin)
		die(err);
	for (int i = 0; i < n.n_workers; i++)
		if (gw_worker_start(n.workers[i]) != 0)
			die("cannot start a worker thread");

	struct event *sigterm = evsignal_new(n.base, SIGTERM, on_term, &n);
	struct event *sigint = evsignal_new(n.base, SIGINT, on_term, &n);
	struct event *sighup = evsignal_new(n.base, SIGHUP, on_hup, &n);
	n.stop_check = event_new(n.base, -1, EV_PERSIST, on_stop_check, &n);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_add(sighup, NULL);
	gw_log(GW_LOG_INFO, "node %s: %d workers, admin on %s, store schema v%d", n.conf.node_name,
	       n.n_workers, n.conf.admin_listen, st_schema_version());

	event_base_dispatch(n.base);

	for (int i = 0; i < n.n_workers; i++)
		gw_worker_join_and_free(n.workers[i]);
	adm_stop(admin);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_free(n.stop_check);
	event_base_free(n.base);
	gw_log(GW_LOG_INFO, "node %s: stopped", n.conf.node_name);
	return 0;
}
