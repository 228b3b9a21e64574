/* qagw: one node of the pool. The main thread loads the configuration,
 * migrates the store, binds every listener, starts one thread per worker,
 * serves the admin port and handles signals (SIGTERM/SIGINT drain, SIGHUP
 * reload and log reopen), telling the service manager (sd_notify) as it goes.
 * Fatal errors stop the process only here, at start; the exit codes are
 * enum gw_exit (cli.h). The same program runs the command-line subcommands
 * (--check, agent ..., workers, agents ID). */
#include "admin/admin.h"
#include "admin/webguard.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/cli.h"
#include "gateway/config.h"
#include "gateway/credentials.h"
#include "gateway/fd_budget.h"
#include "gateway/node.h"
#include "gateway/tls.h"
#include "gateway/worker.h"
#include "store/schema.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdatomic.h>
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

static const char usage_text[] =
    "usage: qagw -c FILE                      run a node (SIGTERM/SIGINT: drain and stop,\n"
    "                                         SIGHUP: reload log level, log file, TLS)\n"
    "       qagw -c FILE --check              validate the configuration and exit\n"
    "       qagw -c FILE agent add ID         provision an agent (prints its token once)\n"
    "       qagw -c FILE agent remove ID\n"
    "       qagw -c FILE agent list\n"
    "       qagw -c FILE workers [--json]     the pool's workers, from the admin port\n"
    "       qagw -c FILE workers remove NAME [--json]\n"
    "                                         a worker that is down leaves the pool\n"
    "       qagw -c FILE agents ID [--json]   one agent, from the admin port\n"
    "       qagw --version | -V               print the version and exit\n"
    "       qagw --help | -h                  print this help and exit\n"
    "exit codes: 0 ok or stopped cleanly, 1 runtime failure, 2 usage error or invalid\n"
    "configuration, 3 request refused by the admin port, 4 admin port unreachable\n";

static void usage(const char *why)
{
	if (why)
		fprintf(stderr, "qagw: %s\n", why);
	fputs(usage_text, stderr);
	exit(GW_EXIT_USAGE);
}

/* A failure at start: logged, and also written to the stderr qagw was
 * started with when the log goes to a file (the operator at a terminal). */
static void die(const char *what)
{
	gw_log(GW_LOG_ERROR, "qagw: %s", what);
	if (gw_log_to_file())
		dprintf(gw_log_original_stderr(), "qagw: %s\n", what);
	else if (!gw_log_enabled(GW_LOG_ERROR))
		fprintf(stderr, "qagw: %s\n", what);
	exit(GW_EXIT_FAILURE);
}

/* --check opens what the node will open: the log file, the store's host
 * names, and the certificate and key (parsed, and matched), from the
 * working directory the node would start in. */
static int check_opens(const struct gw_config *c, char *err, size_t errlen)
{
	if (gw_config_check_opens(c, stderr, err, errlen) != 0)
		return -1;
	for (int i = 0; i < c->n_workers; i++) {
		if (!c->workers[i].tls)
			continue;
		char why[512];
		struct gw_tls *t = gw_tls_new(c->tls_cert, c->tls_key, why, sizeof(why));
		if (!t) {
			snprintf(err, errlen, "[tls] keys \"cert\" and \"key\" (worker %s): %s",
			         c->workers[i].name, why);
			return -1;
		}
		gw_tls_free(t);
		break;
	}
	return 0;
}

static void on_stop_check(evutil_socket_t fd, short what, void *arg)
{
	struct node *n = arg;
	/* Every worker's loop has returned: stop the main loop. The threads are
	 * joined once, after it (gw_worker_join_and_free); a try-join here would
	 * join a thread again on the next tick, or there. */
	for (int i = 0; i < n->node.n_workers; i++)
		if (n->node.workers[i] && !atomic_load(&n->node.workers[i]->stopped))
			return;
	event_base_loopexit(n->node.base, NULL);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	struct node *n = arg;
	if (n->stopping) {
		gw_log(GW_LOG_WARN, "second signal %d: exiting without waiting for the drain",
		       (int)sig);
		_exit(GW_EXIT_FAILURE);
	}
	n->stopping = 1;
	gw_node_notify_stopping(&n->node);
	gw_log(GW_LOG_INFO, "signal %d: draining and stopping", (int)sig);
	for (int i = 0; i < n->node.n_workers; i++)
		gw_worker_post(n->node.workers[i], GW_CMD_STOP);
	struct timeval tv = {0, 100000};
	event_add(n->stop_check, &tv);
}

/* Points the log at log_file ("" = stderr), reopening it; keeps the log
 * where it was when the file cannot be opened. */
static int reopen_log(struct gw_config *conf, const char *log_file)
{
	char err[1200];
	if (gw_log_open(log_file, err, sizeof(err)) != 0) {
		gw_log(GW_LOG_ERROR, "SIGHUP: log not reopened, keeping %s: %s",
		       conf->log_file[0] ? conf->log_file : "stderr", err);
		return -1;
	}
	if (log_file != conf->log_file)
		snprintf(conf->log_file, sizeof(conf->log_file), "%s", log_file);
	gw_log(GW_LOG_INFO, "SIGHUP: log reopened (%s)",
	       conf->log_file[0] ? conf->log_file : "stderr");
	return 0;
}

/* SIGHUP: the reloadable keys (log level, log file, TLS certificate) from a
 * fresh parse; a file or a certificate that does not load keeps what is in
 * force. The log file is reopened either way (logrotate renames it first). */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct node *n = arg;
	struct gw_config *fresh = malloc(sizeof(*fresh));
	char err[1024];
	if (!fresh)
		return;
	gw_node_notify_reloading(&n->node);
	const struct gw_config *c = &n->node.conf;
	if (gw_config_load(n->node.conf.path, fresh, err, sizeof(err)) != 0) {
		(void)reopen_log(&n->node.conf, n->node.conf.log_file);
		gw_log(GW_LOG_ERROR, "SIGHUP: configuration not reloaded, keeping the old one: %s",
		       err);
	} else {
		c = fresh;
		(void)reopen_log(&n->node.conf, fresh->log_file);
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
	gw_node_notify_reloaded(&n->node);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0, json = 0;
	const char *command = NULL; /* "agent", "workers", "agents" */
	const char *agent_id = NULL;
	const char *remove_worker = NULL; /* workers remove NAME */
	char **agent_cmd = NULL;
	int agent_argc = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("qagw %s\n", QAGW_VERSION);
			return GW_EXIT_OK;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage_text, stdout);
			return GW_EXIT_OK;
		} else if (strcmp(a, "-c") == 0) {
			if (i + 1 >= argc)
				usage("-c needs a FILE");
			path = argv[++i];
		} else if (strcmp(a, "--check") == 0 && !command) {
			check = 1;
		} else if (strcmp(a, "--json") == 0 && command && strcmp(command, "agent") != 0) {
			json = 1;
		} else if (strcmp(a, "agent") == 0 && !command) {
			/* the rest is agent add|remove|list's (credentials.c) */
			command = a;
			agent_cmd = argv + i + 1;
			agent_argc = argc - i - 1;
			break;
		} else if (strcmp(a, "workers") == 0 && !command) {
			command = a;
			if (i + 1 < argc && strcmp(argv[i + 1], "remove") == 0) {
				if (i + 2 >= argc || argv[i + 2][0] == '-')
					usage("workers remove needs a worker NAME");
				remove_worker = argv[i + 2];
				i += 2;
			}
		} else if (strcmp(a, "agents") == 0 && !command) {
			command = a;
			if (i + 1 >= argc || argv[i + 1][0] == '-')
				usage("agents needs an agent ID");
			agent_id = argv[++i];
		} else {
			char why[300];
			snprintf(why, sizeof(why), "unknown option or argument \"%.200s\"", a);
			usage(why);
		}
	}
	if (!path)
		usage("-c FILE is required");
	if (check && command)
		usage("--check does not go with a subcommand");

	static struct node n;
	char err[2048];
	if (gw_config_load(path, &n.node.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s\n", err);
		return GW_EXIT_USAGE;
	}
	if (command && strcmp(command, "workers") == 0)
		return remove_worker ? gw_cli_worker_remove(&n.node.conf, remove_worker, json)
		                     : gw_cli_workers(&n.node.conf, json);
	if (command && strcmp(command, "agents") == 0)
		return gw_cli_agent(&n.node.conf, agent_id, json);
	if (agent_cmd) {
		/* Provisioning needs the schema: migrate first (idempotent). */
		char app[96];
		snprintf(app, sizeof(app), "%s/agent-cli", n.node.conf.node_name);
		if (st_startup(n.node.conf.conninfo, app, 5, NULL, 0, err, sizeof(err)) != 0) {
			fprintf(stderr, "qagw: %s\n", err);
			return GW_EXIT_FAILURE;
		}
		return gw_credentials_cli(&n.node.conf, agent_argc, agent_cmd);
	}
	/* [admin] allowed_hosts is parsed by the admin port at start: a bad
	 * entry stops --check too. */
	static struct adm_guard guard;
	if (adm_guard_init(&guard, n.node.conf.admin_allowed_hosts,
	                   (const struct sockaddr *)&n.node.conf.admin_sa, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s: %s\n", path, err);
		return GW_EXIT_USAGE;
	}
	/* The caps must fit in the descriptor limit (fd_budget.h), raised first. */
	struct gw_fd_budget fds;
	char note[1024] = "";
	if (gw_fd_budget_check(&n.node.conf, gw_fd_limit_raise(), &fds, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s\n", err);
		return GW_EXIT_USAGE;
	}
	gw_fd_budget_note(&n.node.conf, &fds, note, sizeof(note));
	if (check) {
		if (check_opens(&n.node.conf, err, sizeof(err)) != 0) {
			fprintf(stderr, "qagw: %s\n", err);
			return GW_EXIT_USAGE;
		}
		gw_config_warnings(&n.node.conf, stderr);
		if (note[0])
			fprintf(stderr, "qagw: note: %s\n", note);
		printf("qagw: %s: configuration ok (%d workers)\n", path, n.node.conf.n_workers);
		return GW_EXIT_OK;
	}
	if (gw_log_open(n.node.conf.log_file, err, sizeof(err)) != 0) {
		fprintf(stderr, "qagw: %s\n", err);
		return GW_EXIT_FAILURE;
	}
	atomic_store(&gw_log_threshold, gw_log_parse_level(n.node.conf.log_level));
	if (note[0])
		gw_log(GW_LOG_WARN, "%s", note);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN); /* until the main loop handles it (store start-up may wait) */
	if (evthread_use_pthreads() != 0)
		die("libevent has no pthreads support");
	gw_log(GW_LOG_INFO, "qagw %s starting: node %s, pid %ld, configuration %s", QAGW_VERSION,
	       n.node.conf.node_name, (long)getpid(), path);
	gw_config_warnings(&n.node.conf, NULL);
	gw_node_notify_status("starting: migrating the store schema");

	struct st_worker_row rows[GW_MAX_WORKERS];
	for (int i = 0; i < n.node.conf.n_workers; i++) {
		rows[i].name = n.node.conf.workers[i].name;
		rows[i].node = n.node.conf.node_name;
		rows[i].advertise = n.node.conf.workers[i].advertise;
		rows[i].tls = n.node.conf.workers[i].tls;
		rows[i].capacity = n.node.conf.workers[i].capacity;
	}
	char app[96];
	snprintf(app, sizeof(app), "%s/startup", n.node.conf.node_name);
	if (st_startup(n.node.conf.conninfo, app, STORE_START_WAIT_S, rows, n.node.conf.n_workers,
	               err, sizeof(err)) != 0)
		die(err);

	n.node.started_ms = gw_wall_ms();
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

	if (gw_node_watch_ready(&n.node) != 0)
		die("cannot create the readiness timer");

	gw_log(GW_LOG_INFO, "qagw %s node %s: %d workers, admin on %s, store schema v%d",
	       QAGW_VERSION, n.node.conf.node_name, n.node.n_workers, n.node.conf.admin_listen,
	       st_schema_version());

	event_base_dispatch(n.node.base);

	/* The node's Redis and store first: freeing them answers their pending
	 * callbacks (NOTIFY routing), which count into workers[0] (a use after free
	 * when the workers went first: make test-asan, test_mixed_faults_short). */
	gw_node_stop_services(&n.node);
	for (int i = 0; i < n.node.n_workers; i++)
		gw_worker_join_and_free(n.node.workers[i]);
	adm_stop(admin);
	gw_tls_free(n.tls);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_free(n.stop_check);
	event_base_free(n.node.base);
	gw_log(GW_LOG_INFO, "node %s: stopped", n.node.conf.node_name);
	return GW_EXIT_OK;
}
