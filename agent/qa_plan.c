/* The connection plan of an agent: see qa_plan.h. */
#include "agent/qa_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* auto(...): the servers of the last WELCOME or REASSIGN, kept in meta
 * "servers" as lines "NAME STREAM", primary first. */
static int save_servers(struct qa_agent *a, const struct qa_server_list *l, struct qa_error *e)
{
	size_t cap = 1;
	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->v[i].name) + strlen(l->v[i].stream) + 2;
	char *text = malloc(cap);
	if (text == NULL)
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	size_t used = 0;
	text[0] = '\0';
	for (size_t i = 0; i < l->n; i++)
		used += (size_t)snprintf(text + used, cap - used, "%s %s\n", l->v[i].name,
		                         l->v[i].stream);
	int rc = qa_store_meta_set(a->store, "servers", text, e);
	free(text);
	return rc;
}

/* Whether an entry of a server list (WELCOME, REASSIGN) may be followed by
 * an agent bootstrapped through boot, and how: never an auto(...) entry; under
 * a TLS bootstrap never a cleartext one (a server list, which comes from
 * Redis, cannot lower the protection the operator chose: the token would
 * cross the network unencrypted), dropped rather than upgraded, as a tcpip
 * listener does not speak TLS; and a tls entry is always verified with the
 * bootstrap's trusted certificates, whatever the entry names (agent.md step
 * 8: the server does not choose whom the agent trusts). Returns 1 and
 * adjusts v, or 0 with the reason in *why. */
static int follow_entry(const struct qa_stream *boot, struct qa_stream *v, const char **why)
{
	if (v->scheme == QA_SCHEME_AUTO) {
		*why = "an auto(...) entry";
		return 0;
	}
	if (boot->tls && !v->tls) {
		*why = "a cleartext entry under a TLS bootstrap (the token would cross the "
		       "network unencrypted)";
		return 0;
	}
	if (v->tls)
		memcpy(v->ca_file, boot->ca_file, sizeof v->ca_file);
	return 1;
}

/* Logs the entries of a server list that the agent will not follow as given
 * (at each WELCOME or REASSIGN that carries them, so an operator sees why a
 * worker is never tried). */
static void warn_entries(struct qa_agent *a, const struct qa_server_list *l)
{
	const struct qa_stream *boot = &a->cfg->streams[0];
	if (boot->scheme != QA_SCHEME_AUTO)
		return; /* an -x list is followed as given, never a server's */
	for (size_t i = 0; i < l->n; i++) {
		const struct qa_server_entry *x = &l->v[i];
		struct qa_stream v;
		char err[256];
		const char *why;
		if (qa_stream_parse(x->stream, &v, err, sizeof err) != 0) {
			qa_log_write(&a->log, "server list: ignoring %s: %s", x->name, err);
			continue;
		}
		const int named_ca = v.ca_file[0] != '\0';
		if (!follow_entry(boot, &v, &why))
			qa_log_write(&a->log, "server list: ignoring %s %s: %s", x->name, x->stream,
			             why);
		else if (named_ca)
			qa_log_write(&a->log,
			             "server list: %s %s: its trusted_certificates is ignored, the "
			             "bootstrap's (%s) verifies it",
			             x->name, x->stream,
			             boot->ca_file[0] != '\0' ? boot->ca_file : "the system's");
	}
}

/* The streams to try: the -x list, or for auto(...) the stored server list
 * (labelled with the workers' names) then the bootstrap. Returns the count,
 * or -1. */
static int build_attempts(struct qa_agent *a, struct qa_stream *v, qa_cycle_label *labels,
                          size_t cap, struct qa_error *e)
{
	const struct qa_config *cfg = a->cfg;
	if (cfg->n_streams == 0)
		return qa_error_set(e, QA_FAIL_USAGE, "no -x stream given: nothing to connect to");
	memset(labels, 0, cap * sizeof *labels);
	if (cfg->streams[0].scheme != QA_SCHEME_AUTO) {
		memcpy(v, cfg->streams, cfg->n_streams * sizeof *v);
		return (int)cfg->n_streams;
	}
	const struct qa_stream *boot = &cfg->streams[0];
	char *text = NULL;
	size_t n = 0;
	int got = qa_store_meta_get(a->store, "servers", &text, e);
	if (got < 0)
		return -1;
	for (char *line = text, *next; got > 0 && line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		char *stream = strchr(line, ' ');
		char err[256];
		const char *why;
		if (stream == NULL || n + 1 >= cap ||
		    qa_stream_parse(stream + 1, &v[n], err, sizeof err) != 0 ||
		    !follow_entry(boot, &v[n], &why))
			continue; /* a server this agent cannot use; the bootstrap remains */
		const size_t name_len = (size_t)(stream - line);
		snprintf(labels[n], sizeof labels[n], "%.*s",
		         (int)(name_len < QA_NAME_MAX ? name_len : QA_NAME_MAX), line);
		n++;
	}
	free(text);
	snprintf(labels[n], sizeof labels[n], "bootstrap");
	v[n++] = *boot;
	return (int)n;
}

int qa_plan_make(struct qa_agent *a, uint8_t flags, struct qa_plan *c, struct qa_error *e)
{
	const struct qa_config *cfg = a->cfg;
	int n = build_attempts(a, c->streams, c->labels, QA_MAX_STREAMS + 1, e);
	if (n < 0)
		return -1;
	c->is_auto = cfg->streams[0].scheme == QA_SCHEME_AUTO;
	c->primary[0] = '\0';
	if (!c->is_auto && qa_stream_primary(&cfg->streams[0], c->primary, sizeof c->primary) < 0)
		return qa_error_set(e, QA_FAIL_USAGE, "primary stream too long");
	c->hello = (struct qa_hello_params){
	    .agent_id = cfg->agent_id,
	    .token = cfg->token != NULL ? cfg->token : "",
	    .primary = c->primary,
	    .flags = flags,
	};
	c->cycle = (struct qa_cycle_params){
	    .streams = c->streams,
	    .n_streams = (size_t)n,
	    .labels = c->labels,
	    .hello = &c->hello,
	    .connect_timeout_ms = QA_CONNECT_TIMEOUT_MS,
	    .fr = cfg->fr,
	    .fd_ms = cfg->fd_ms,
	    .trace = a->trace,
	    .cycle_no = 1,
	};
	return 0;
}

int qa_plan_record_welcome(struct qa_agent *a, const struct qa_plan *c, const struct qa_session *s,
                           struct qa_error *e)
{
	int rc = qa_store_meta_set(a->store, "last_server", s->welcome.server, e);
	/* An empty list (a server that knows no other) does not erase the one
	 * kept: the bootstrap alone would remain. */
	if (rc == 0 && c->is_auto && s->welcome.servers.n > 0) {
		warn_entries(a, &s->welcome.servers);
		rc = save_servers(a, &s->welcome.servers, e);
	}
	return rc;
}

void qa_plan_record_reassign(struct qa_agent *a, const struct qa_session *s)
{
	struct qa_error ignored;
	if (s->reassigned)
		warn_entries(a, &s->reassign);
	if (s->reassigned && save_servers(a, &s->reassign, &ignored) != 0)
		qa_log_write(&a->log, "cannot record REASSIGN: %s", ignored.msg);
}

void qa_plan_copy(struct qa_plan *dst, const struct qa_plan *src)
{
	*dst = *src;
	dst->hello.primary = dst->primary;
	dst->cycle.streams = dst->streams;
	dst->cycle.labels = dst->labels;
	dst->cycle.hello = &dst->hello;
}

int qa_plan_failback(struct qa_agent *a, const struct qa_plan *plan, size_t index,
                     const struct qa_session *s, struct qa_plan *probe, struct qa_error *e)
{
	if (s->welcome.on_primary)
		return 0;
	if (!plan->is_auto) {
		if (index == 0)
			return 0;
		qa_plan_copy(probe, plan);
	} else {
		/* Only when the router named a primary and put it first: with no
		 * assignment (primary "") every worker is as good as another. */
		const struct qa_server_list *l = &s->welcome.servers;
		if (s->welcome.primary[0] == '\0' || l->n == 0 ||
		    strcmp(l->v[0].name, s->welcome.primary) != 0)
			return 0;
		if (qa_plan_make(a, QS_FLAG_PERSIST, probe, e) != 0)
			return -1;
		/* The primary's entry may not be followed (a cleartext one under a
		 * TLS bootstrap): then the plan starts elsewhere, no better. */
		if (strcmp(probe->labels[0], s->welcome.primary) != 0)
			return 0;
		char here[QA_STREAM_TEXT_MAX], there[QA_STREAM_TEXT_MAX];
		if (probe->cycle.n_streams < 2 ||
		    qa_stream_format(&plan->streams[index], here, sizeof here) < 0 ||
		    qa_stream_format(&probe->streams[0], there, sizeof there) < 0 ||
		    strcmp(here, there) == 0)
			return 0;
	}
	return 1;
}
