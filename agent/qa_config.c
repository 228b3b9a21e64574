/* The agent's configuration: see qa_config.h. */
#include "agent/qa_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/qs_codec.h"

int qa_parse_int(const char *s, long long min, long long max, long long *v)
{
	const char *p = s;
	int neg = 0;
	long long x = 0;
	if (*p == '-') {
		neg = 1;
		p++;
	}
	if (*p == '\0' || strlen(p) > 15)
		return -1;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		x = x * 10 + (*p - '0');
	}
	if (neg)
		x = -x;
	if (x < min || x > max)
		return -1;
	*v = x;
	return 0;
}

int qa_parse_seconds(const char *s, uint64_t max_s, uint64_t *ms)
{
	uint64_t whole = 0, frac = 0;
	int digits = 0, frac_digits = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9'; p++, digits++) {
		whole = whole * 10 + (uint64_t)(*p - '0');
		if (whole > max_s)
			return -1;
	}
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++, frac_digits++)
			if (frac_digits < 3)
				frac = frac * 10 + (uint64_t)(*p - '0');
		if (frac_digits == 0)
			return -1;
		for (int i = frac_digits; i < 3; i++)
			frac *= 10;
	}
	if (*p != '\0' || digits + frac_digits == 0)
		return -1;
	*ms = whole * 1000 + frac;
	if (*ms > max_s * 1000)
		return -1;
	return 0;
}

typedef int (*opt_fn)(struct qa_config *c, const char *value, char *err, size_t errlen);

static int bad(char *err, size_t errlen, const char *opt, const char *value, const char *want)
{
	snprintf(err, errlen, "bad %s \"%.200s\": %s", opt, value, want);
	return -1;
}

static int opt_id(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);
	if (n == 0 || n > 120 || !qs_valid_agent_id(v, n))
		return bad(err, errlen, "-id", v, "1..120 characters of [A-Za-z0-9._-]");
	memcpy(c->agent_id, v, n + 1);
	return 0;
}

static int opt_db(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (v[0] == '\0')
		return bad(err, errlen, "-db", v, "an empty file name");
	free(c->db_path);
	c->db_path = strdup(v);
	return 0;
}

static int opt_x(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (c->n_streams == QA_MAX_STREAMS) {
		snprintf(err, errlen, "too many -x streams (at most %d)", QA_MAX_STREAMS);
		return -1;
	}
	if (qa_stream_parse(v, &c->streams[c->n_streams], err, errlen) != 0)
		return -1;
	c->n_streams++;
	return 0;
}

static int opt_fr(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	long long n;
	if (qa_parse_int(v, 0, 1000, &n) != 0)
		return bad(err, errlen, "-fr", v, "a number of retries, 0..1000");
	c->fr = (unsigned)n;
	return 0;
}

static int opt_fd(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (qa_parse_seconds(v, 86400, &c->fd_ms) != 0)
		return bad(err, errlen, "-fd", v, "seconds, 0..86400, fractions allowed (0.5)");
	return 0;
}

static int opt_push(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "connected") == 0)
		c->push = QA_PUSH_CONNECTED;
	else if (strcmp(v, "none") == 0)
		c->push = QA_PUSH_NONE;
	else
		return bad(err, errlen, "-push", v, "connected or none");
	return 0;
}

/* automatic | ondemand | scheduled | scheduledS | scheduled[S] */
static int opt_policy(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	static const char want[] = "automatic, ondemand, scheduled or scheduled[SECONDS]";
	if (strcmp(v, "automatic") == 0) {
		c->policy = QA_POLICY_AUTOMATIC;
		return 0;
	}
	if (strcmp(v, "ondemand") == 0) {
		c->policy = QA_POLICY_ONDEMAND;
		return 0;
	}
	if (strncmp(v, "scheduled", 9) != 0)
		return bad(err, errlen, "-policy", v, want);
	const char *arg = v + 9;
	c->policy = QA_POLICY_SCHEDULED;
	c->schedule_s = QA_DEFAULT_SCHEDULE_S;
	if (*arg == '\0')
		return 0;
	char num[16];
	size_t n = strlen(arg);
	if (arg[0] == '[') {
		if (n < 3 || arg[n - 1] != ']' || n - 2 >= sizeof num)
			return bad(err, errlen, "-policy", v, want);
		memcpy(num, arg + 1, n - 2);
		num[n - 2] = '\0';
	} else {
		if (n >= sizeof num)
			return bad(err, errlen, "-policy", v, want);
		memcpy(num, arg, n + 1);
	}
	long long s;
	if (num[0] == '-' || qa_parse_int(num, 1, 7 * 86400, &s) != 0)
		return bad(err, errlen, "-policy", v, "scheduled interval: 1..604800 seconds");
	c->schedule_s = (unsigned)s;
	return 0;
}

static int check_token(struct qa_config *c, const char *opt, char *err, size_t errlen)
{
	size_t n = strlen(c->token);
	if (n > 65535 || !qs_valid_utf8(c->token, n)) {
		snprintf(err, errlen, "bad %s: the token must be UTF-8, at most 65535 bytes", opt);
		return -1;
	}
	return 0;
}

static int opt_token(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	free(c->token);
	c->token = strdup(v);
	return check_token(c, "-token", err, errlen);
}

/* The token is the file's first line (a trailing CR/LF removed). */
static int opt_token_file(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	FILE *f = fopen(v, "r");
	if (f == NULL) {
		snprintf(err, errlen, "bad -token-file \"%.200s\": cannot open it", v);
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	fclose(f);
	if (n < 0) {
		free(line);
		line = strdup("");
		n = 0;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	free(c->token);
	c->token = line;
	if ((size_t)n != strlen(line)) {
		snprintf(err, errlen, "bad -token-file \"%.200s\": the token contains a NUL", v);
		return -1;
	}
	return check_token(c, "-token-file", err, errlen);
}

static int opt_o(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (v[0] == '\0')
		return bad(err, errlen, "-o", v, "an empty file name");
	free(c->log_path);
	c->log_path = strdup(v);
	return 0;
}

static int opt_trace(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	if (v[0] == '\0')
		return bad(err, errlen, "-trace", v, "an empty file name");
	free(c->trace_path);
	c->trace_path = strdup(v);
	return 0;
}

static int opt_v(struct qa_config *c, const char *v, char *err, size_t errlen)
{
	c->verbose = 1;
	return 0;
}

/* The global options: name, whether a value follows, whether it may repeat,
 * and the handler that validates it and stores it in struct qa_config. */
static const struct option {
	const char *name;
	int takes_value;
	int repeats;
	opt_fn set;
} options[] = {
    {"-id", 1, 0, opt_id},
    {"-db", 1, 0, opt_db},
    {"-x", 1, 1, opt_x},
    {"-fr", 1, 0, opt_fr},
    {"-fd", 1, 0, opt_fd},
    {"-push", 1, 0, opt_push},
    {"-policy", 1, 0, opt_policy},
    {"-token", 1, 0, opt_token},
    {"-token-file", 1, 0, opt_token_file},
    {"-o", 1, 0, opt_o},
    {"-trace", 1, 0, opt_trace},
    {"-v", 0, 1, opt_v},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

void qa_config_init(struct qa_config *c)
{
	memset(c, 0, sizeof *c);
	c->push = QA_PUSH_CONNECTED;
	c->policy = QA_POLICY_AUTOMATIC;
	c->schedule_s = QA_DEFAULT_SCHEDULE_S;
}

void qa_config_free(struct qa_config *c)
{
	free(c->db_path);
	free(c->token);
	free(c->log_path);
	free(c->trace_path);
	qa_config_init(c);
}

static unsigned bit_of(const char *name)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (strcmp(options[i].name, name) == 0)
			return 1u << i;
	return 0;
}

int qa_config_parse(struct qa_config *c, int argc, char **argv, int *command, char *err,
                    size_t errlen)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		size_t k = 0;
		while (k < N_OPTIONS && strcmp(options[k].name, argv[i]) != 0)
			k++;
		if (k == N_OPTIONS) {
			snprintf(err, errlen, "unknown option \"%.200s\"", argv[i]);
			return -1;
		}
		const struct option *o = &options[k];
		if ((c->seen & (1u << k)) && !o->repeats) {
			snprintf(err, errlen, "option %s given twice", o->name);
			return -1;
		}
		c->seen |= 1u << k;
		const char *value = NULL;
		if (o->takes_value) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "option %s needs a value", o->name);
				return -1;
			}
			value = argv[++i];
		}
		if (o->set(c, value, err, errlen) != 0)
			return -1;
	}
	*command = i;
	if (!(c->seen & bit_of("-id"))) {
		snprintf(err, errlen, "-id is required");
		return -1;
	}
	if (!(c->seen & bit_of("-db"))) {
		snprintf(err, errlen, "-db is required");
		return -1;
	}
	if ((c->seen & bit_of("-token")) && (c->seen & bit_of("-token-file"))) {
		snprintf(err, errlen, "-token and -token-file exclude each other");
		return -1;
	}
	for (size_t s = 0; s < c->n_streams; s++) {
		if (c->streams[s].scheme == QA_SCHEME_AUTO && c->n_streams > 1) {
			snprintf(err, errlen,
			         "bad -x: auto(...) names the bootstrap server and must be the "
			         "only -x");
			return -1;
		}
	}
	if (c->token == NULL)
		c->token = strdup("");
	if (c->db_path == NULL || c->token == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}
