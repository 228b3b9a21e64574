/* qabench, the benchmark load generator (issue 7; docs/benchmarks.md).
 *
 * One binary, one scenario per run: `qabench MODE --key value ...`. Each
 * mode prints exactly one JSON object with its figures on stdout (progress
 * and errors on stderr) and exits 0, or non-zero with the reason on stderr.
 * Many simulated agents share one process and one libevent loop. The
 * orchestration (services, pinning, tables, plot) is bench/run.py. */
#ifndef QB_H
#define QB_H

#include "common/clock.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Command-line options: "--key value" pairs after the mode. */
struct qb_opts {
	int argc;
	char **argv;
};
const char *qb_opt(const struct qb_opts *o, const char *key, const char *def);
/* "P1,P2,...": up to max ports 1..65535; the count, or -1 on a bad list. */
int qb_parse_ports(const char *s, int *ports, int max);
long qb_opt_int(const struct qb_opts *o, const char *key, long def);
double qb_opt_double(const struct qb_opts *o, const char *key, double def);
int qb_opt_flag(const struct qb_opts *o,
                const char *key); /* "--key" present (value "1"/"on"/none) */

/* The clocks are common/clock.h's: gw_mono_us (latencies, pacing) and
 * gw_wall_ms (HELLO now_ms, stored timestamps). */

/* Latency samples (microseconds); percentiles by sorting at the end. */
struct qb_lat {
	uint32_t *us;
	size_t n, cap;
};
void qb_lat_add(struct qb_lat *l, int64_t us);
double qb_lat_pct_ms(struct qb_lat *l, double pct); /* sorts; 0 when empty */
/* Writes "name":{"n":N,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..} */
void qb_lat_json(FILE *out, const char *name, struct qb_lat *l);
void qb_lat_free(struct qb_lat *l);

/* Fills a 16-byte message id (random v4 UUID). */
void qb_uuid(uint8_t id[16]);

/* The modes (one file each). */
int qb_mode_ingest(const struct qb_opts *o);      /* qb_ingest.c */
int qb_mode_store_limit(const struct qb_opts *o); /* qb_store.c */
int qb_mode_push(const struct qb_opts *o);        /* qb_push.c */
int qb_mode_coverage(const struct qb_opts *o);    /* qb_coverage.c */
int qb_mode_idle(const struct qb_opts *o);        /* qb_idle.c */
int qb_mode_handshakes(const struct qb_opts *o);  /* qb_tls.c */
int qb_mode_mqtt_push(const struct qb_opts *o);   /* qb_mqtt.c */
int qb_mode_mqtt_idle(const struct qb_opts *o);   /* qb_mqtt.c */
int qb_mode_nats_ingest(const struct qb_opts *o); /* qb_nats.c */

#endif
