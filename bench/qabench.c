/* qabench: mode dispatch and what every mode shares; see qb.h. */
#include "bench/qb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

const char *qb_opt(const struct qb_opts *o, const char *key, const char *def)
{
	for (int i = 0; i < o->argc; i++) {
		const char *a = o->argv[i];
		if (a[0] == '-' && a[1] == '-' && strcmp(a + 2, key) == 0)
			return i + 1 < o->argc && strncmp(o->argv[i + 1], "--", 2) != 0
			           ? o->argv[i + 1]
			           : "1";
	}
	return def;
}

int qb_parse_ports(const char *s, int *ports, int max)
{
	int n = 0;
	while (s && *s && n < max) {
		char *end;
		long p = strtol(s, &end, 10);
		if (end == s || p <= 0 || p > 65535 || (*end && *end != ','))
			return -1;
		ports[n++] = (int)p;
		s = *end == ',' ? end + 1 : end;
	}
	return n;
}

long qb_opt_int(const struct qb_opts *o, const char *key, long def)
{
	const char *v = qb_opt(o, key, NULL);
	return v ? strtol(v, NULL, 10) : def;
}

double qb_opt_double(const struct qb_opts *o, const char *key, double def)
{
	const char *v = qb_opt(o, key, NULL);
	return v ? strtod(v, NULL) : def;
}

int qb_opt_flag(const struct qb_opts *o, const char *key)
{
	const char *v = qb_opt(o, key, NULL);
	return v && (strcmp(v, "1") == 0 || strcmp(v, "on") == 0 || strcmp(v, "yes") == 0);
}

void qb_lat_add(struct qb_lat *l, int64_t us)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4096;
		uint32_t *p = realloc(l->us, cap * sizeof(*p));
		if (!p)
			return; /* a sample lost to memory pressure: counts stay honest below */
		l->us = p;
		l->cap = cap;
	}
	l->us[l->n++] = us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

double qb_lat_pct_ms(struct qb_lat *l, double pct)
{
	if (l->n == 0)
		return 0;
	qsort(l->us, l->n, sizeof(*l->us), cmp_u32);
	size_t i = (size_t)ceil(pct / 100.0 * (double)l->n);
	i = i == 0 ? 0 : i - 1;
	if (i >= l->n)
		i = l->n - 1;
	return l->us[i] / 1000.0;
}

void qb_lat_json(FILE *out, const char *name, struct qb_lat *l)
{
	fprintf(
	    out,
	    "\"%s\":{\"n\":%zu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}",
	    name, l->n, qb_lat_pct_ms(l, 50), qb_lat_pct_ms(l, 90), qb_lat_pct_ms(l, 99),
	    qb_lat_pct_ms(l, 100));
}

void qb_lat_free(struct qb_lat *l)
{
	free(l->us);
	l->us = NULL;
	l->n = l->cap = 0;
}

void qb_uuid(uint8_t id[16])
{
	if (getrandom(id, 16, 0) != 16) { /* never short for 16 bytes; keep ids unique anyway */
		static uint64_t n;
		uint64_t t = (uint64_t)gw_mono_us() ^ ++n;
		memcpy(id, &t, 8);
		memcpy(id + 8, &n, 8);
	}
	id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
	id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
}

static const struct {
	const char *name;
	int (*fn)(const struct qb_opts *o);
	const char *what;
} modes[] = {
    {"ingest", qb_mode_ingest, "agents uploading batches through qagw workers (TCP or TLS)"},
    {"store-limit", qb_mode_store_limit, "the same rows straight into the store (libpq)"},
    {"push", qb_mode_push, "PERSIST agents on their primaries, one sender: UPLOAD->PUSH"},
    {"coverage", qb_mode_coverage, "router-assigned agents' push coverage after a node loss"},
    {"idle", qb_mode_idle, "hold N idle PERSIST sessions"},
    {"handshakes", qb_mode_handshakes, "new TLS handshakes per second"},
    {"mqtt-push", qb_mode_mqtt_push, "Mosquitto: QoS 1 subscribers, one publisher"},
    {"mqtt-idle", qb_mode_mqtt_idle, "Mosquitto: hold N idle connections"},
    {"nats-ingest", qb_mode_nats_ingest, "NATS JetStream: the ingest shape, acks awaited"},
};

int main(int argc, char **argv)
{
	int n = (int)(sizeof(modes) / sizeof(modes[0]));
	if (argc >= 2)
		for (int i = 0; i < n; i++)
			if (strcmp(argv[1], modes[i].name) == 0) {
				struct qb_opts o = {argc - 2, argv + 2};
				return modes[i].fn(&o);
			}
	fprintf(stderr, "usage: qabench MODE [--key value]...\nmodes:\n");
	for (int i = 0; i < n; i++)
		fprintf(stderr, "  %-12s %s\n", modes[i].name, modes[i].what);
	return 2;
}
