/* qabench nats-ingest (issue 7, scenario 3): scenario 1's shape against NATS
 * JetStream, the durable peer — 64 agents uploading batches of 32 messages of
 * 128 bytes as fast as acks return, into a file-storage stream.
 *
 * Shape chosen to mirror qagw's ingest most fairly: each agent is its own
 * NATS connection (as each qagw agent is its own TCP session) and keeps
 * exactly one batch in flight. The batch goes out as `batch` js_PublishAsync
 * calls, which libnats writes back to back, and the next batch is sent when
 * the last ack of this one arrives — what one UPLOAD of 32 with its single
 * ack is to qagw. Synchronous js_Publish would instead have one message in
 * flight per agent (a round trip each), and an unbounded async window would
 * measure something qagw's agents never do. The next batch is sent from the
 * ack handler itself (libnats allows publishing there) rather than from a
 * thread per agent woken by it: one thread hop less per batch, which matters
 * when the load generator shares a 2-core machine with the server.
 * Each message carries a Nats-Msg-Id (--msg-id 1, the default) because qagw
 * deduplicates uploads by message id; --msg-id 0 turns that off.
 *
 * Figures: "committed" counts acknowledged messages of the batches sent after
 * the warm-up and acked before the end; "ack" is the batch latency (first
 * publish of the batch to its last ack). "fsync" states what an ack means on
 * nats-server 2.9. */
#include "bench/qb.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* nats-server 2.9 (Debian's 2.9.10): the file store appends each message to
 * its block file through the OS page cache and then acks; fsync comes later,
 * from a background timer (FileStoreConfig.SyncInterval, 2 minutes).
 * 2.9 has no setting to sync before the ack: its config parser rejects
 * jetstream { sync_interval: ... } as an unknown field (the option, with
 * "always", arrived in 2.10). Checked on this machine: strace of the server
 * shows no fsync/fdatasync during a run. */
static const char nats_fsync_text[] =
    "no: nats-server 2.9 acks once the message is in the page cache; the file store fsyncs "
    "every 2 min (sync_interval, with an 'always' choice, only exists from 2.10)";

/* Shared by all agent threads; read-only once they start, except atomics. */
struct na_run {
	const char *url;
	int batch, size, msg_id;
	int64_t measure_from_us, end_us;
	atomic_int failed;   /* agents that stopped on an error */
	atomic_int finished; /* agents that stopped (error or end of run) */
};

/* One agent: its connection, its JetStream context, its batch in flight.
 * After the first batch (sent by the main thread) everything runs in the ack
 * handler, on the connection's message delivery thread; mu orders the two. */
struct na_agent {
	struct na_run *run;
	int index;
	char subject[32];
	natsConnection *nc;
	jsCtx *js;
	pthread_mutex_t mu;
	uint8_t *payload;
	int64_t t0;        /* the batch in flight: first publish */
	int acked, nacked; /* the batch in flight: answers so far */
	long committed, nack_total;
	struct qb_lat ack; /* per batch, measured window only */
};

static void na_log(const char *what, natsStatus s)
{
	fprintf(stderr, "qabench nats-ingest: %s: %s (%s)\n", what, natsStatus_GetText(s),
	        nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
}

/* Sends the agent's next batch; called with mu held. 0, or -1 when the agent
 * has stopped (counted in finished/failed). */
static int na_send_batch(struct na_agent *a)
{
	struct na_run *r = a->run;
	a->acked = a->nacked = 0;
	a->t0 = gw_mono_us();
	for (int i = 0; i < r->batch; i++) {
		uint8_t id[16];
		char id_text[40];
		jsPubOptions po;
		jsPubOptions_Init(&po);
		qb_uuid(id);
		memcpy(a->payload, id, r->size < 16 ? (size_t)r->size : 16);
		if (r->msg_id) {
			for (int k = 0; k < 16; k++)
				snprintf(id_text + 2 * k, 3, "%02x", id[k]);
			po.MsgId = id_text;
		}
		natsStatus s = js_PublishAsync(a->js, a->subject, a->payload, r->size, &po);
		if (s != NATS_OK) {
			na_log("js_PublishAsync", s);
			atomic_fetch_add(&r->failed, 1);
			atomic_fetch_add(&r->finished, 1);
			return -1;
		}
	}
	return 0;
}

static void na_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	struct na_agent *a = closure;
	struct na_run *r = a->run;
	natsMsg_Destroy(msg); /* ours to free, per jsPubAckHandler */
	pthread_mutex_lock(&a->mu);
	if (pa && !pae)
		a->acked++;
	else
		a->nacked++;
	if (a->acked + a->nacked == r->batch) {
		int64_t t1 = gw_mono_us();
		if (a->t0 >= r->measure_from_us && t1 <= r->end_us) {
			a->committed += a->acked;
			a->nack_total += a->nacked;
			qb_lat_add(&a->ack, t1 - a->t0);
		}
		if (t1 < r->end_us)
			na_send_batch(a);
		else
			atomic_fetch_add(&r->finished, 1);
	}
	pthread_mutex_unlock(&a->mu);
}

static natsStatus na_connect(const char *url, const char *name, natsConnection **nc, jsCtx **js,
                             struct na_agent *a)
{
	natsOptions *opts = NULL;
	natsStatus s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, url);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, name);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(opts, false); /* a drop is a failure here */
	if (s == NATS_OK)
		s = natsConnection_Connect(nc, opts);
	natsOptions_Destroy(opts);
	if (s != NATS_OK)
		return s;
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = 10000;
	if (a) {
		jo.PublishAsync.AckHandler = na_on_ack;
		jo.PublishAsync.AckHandlerClosure = a;
	}
	return natsConnection_JetStream(js, *nc, &jo);
}

/* The stream every agent publishes into: created with file storage and one
 * replica when missing; an existing one is used as it is. */
static int na_ensure_stream(const char *url, const char *stream, const char *subjects)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = na_connect(url, "qabench-setup", &nc, &js, NULL);
	if (s != NATS_OK) {
		na_log("connect", s);
		natsConnection_Destroy(nc);
		return -1;
	}
	s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
	if (s == NATS_NOT_FOUND) {
		jsStreamConfig sc;
		jsStreamConfig_Init(&sc);
		sc.Name = stream;
		sc.Subjects = &subjects;
		sc.SubjectsLen = 1;
		sc.Storage = js_FileStorage;
		sc.Replicas = 1;
		s = js_AddStream(&si, js, &sc, NULL, &jerr);
		if (s == NATS_OK)
			fprintf(stderr, "qabench nats-ingest: created stream %s (%s, file, R1)\n",
			        stream, subjects);
	}
	if (s != NATS_OK)
		na_log(s == NATS_NO_RESPONDERS ? "stream (no JetStream: server without -js?)"
		                               : "stream",
		       s);
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : -1;
}

/* CPU seconds this process has used: libnats costs the client about as much
 * CPU per message as the server spends (a thread hop per ack), so the output
 * says how busy the load generator was. */
static double na_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

int qb_mode_nats_ingest(const struct qb_opts *o)
{
	struct na_run run = {
	    .url = qb_opt(o, "url", "nats://127.0.0.1:4222"),
	    .batch = (int)qb_opt_int(o, "batch", 32),
	    .size = (int)qb_opt_int(o, "size", 128),
	    .msg_id = (int)qb_opt_int(o, "msg-id", 1),
	};
	long agents = qb_opt_int(o, "agents", 64);
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	const char *stream = qb_opt(o, "stream", "QA");
	const char *subjects = qb_opt(o, "subjects", "qa.>");
	const char *prefix = qb_opt(o, "subject-prefix", "qa.");
	if (agents < 1 || agents > 4096 || run.batch < 1 || run.batch > 100000 || run.size < 1 ||
	    run.size > 1 << 20 || seconds <= 0 || warmup < 0) {
		fprintf(stderr, "qabench nats-ingest: bad --agents/--batch/--size/--seconds\n");
		return 2;
	}
	if (na_ensure_stream(run.url, stream, subjects) != 0)
		return 1;

	struct na_agent *ag = calloc((size_t)agents, sizeof(*ag));
	if (!ag)
		return 1;
	for (long i = 0; i < agents; i++) {
		struct na_agent *a = &ag[i];
		a->run = &run;
		a->index = (int)i;
		snprintf(a->subject, sizeof(a->subject), "%s%ld", prefix, i);
		pthread_mutex_init(&a->mu, NULL);
		a->payload = malloc((size_t)run.size);
		if (!a->payload)
			return 1;
		memset(a->payload, 'q', (size_t)run.size);
	}
	for (long i = 0; i < agents; i++) {
		char name[48];
		snprintf(name, sizeof(name), "qabench-agent-%ld", i);
		natsStatus s = na_connect(run.url, name, &ag[i].nc, &ag[i].js, &ag[i]);
		if (s != NATS_OK) {
			na_log("agent connect", s);
			return 1; /* exiting: the connections go with the process */
		}
	}

	double cpu0 = na_cpu_s();
	int64_t t0 = gw_mono_us();
	run.measure_from_us = t0 + (int64_t)(warmup * 1e6);
	run.end_us = run.measure_from_us + (int64_t)(seconds * 1e6);
	for (long i = 0; i < agents; i++) {
		pthread_mutex_lock(&ag[i].mu);
		na_send_batch(&ag[i]);
		pthread_mutex_unlock(&ag[i].mu);
	}
	/* Each agent finishes with the first batch acked after the end. */
	int64_t give_up = run.end_us + 30000000;
	while (atomic_load(&run.finished) < agents && gw_mono_us() < give_up)
		usleep(10000);
	double client_cpu = (na_cpu_s() - cpu0) / ((double)(gw_mono_us() - t0) / 1e6);
	if (atomic_load(&run.finished) < agents) {
		fprintf(stderr, "qabench nats-ingest: %ld agent(s) still waiting for acks\n",
		        agents - atomic_load(&run.finished));
		return 1; /* handlers may still run: leave the cleanup to the exit */
	}
	if (atomic_load(&run.failed)) {
		fprintf(stderr, "qabench nats-ingest: %d agent(s) failed\n",
		        atomic_load(&run.failed));
		return 1;
	}

	struct qb_lat all = {0};
	long committed = 0, nacked = 0;
	for (long i = 0; i < agents; i++) {
		struct na_agent *a = &ag[i];
		pthread_mutex_lock(&a->mu); /* the last handler has let go */
		pthread_mutex_unlock(&a->mu);
		committed += a->committed;
		nacked += a->nack_total;
		for (size_t k = 0; k < a->ack.n; k++)
			qb_lat_add(&all, a->ack.us[k]);
		qb_lat_free(&a->ack);
		jsCtx_Destroy(a->js);
		natsConnection_Destroy(a->nc);
		pthread_mutex_destroy(&a->mu);
		free(a->payload);
	}
	free(ag);
	printf("{\"mode\":\"nats-ingest\",\"agents\":%ld,\"batch\":%d,\"size\":%d,"
	       "\"seconds\":%.3f,\"committed\":%ld,\"msgs_per_s\":%.1f,\"nacked\":%ld,"
	       "\"msg_id\":%s,",
	       agents, run.batch, run.size, seconds, committed, (double)committed / seconds, nacked,
	       run.msg_id ? "true" : "false");
	qb_lat_json(stdout, "ack", &all);
	printf(",\"client_cpu\":%.2f,\"fsync\":\"%s\"}\n", client_cpu, nats_fsync_text);
	fflush(stdout);
	qb_lat_free(&all);
	nats_Close();
	return 0;
}
