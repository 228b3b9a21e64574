/* Agent credentials; see credentials.h. */
#include "gateway/credentials.h"

#include "gateway/config.h"
#include "proto/qs_codec.h"

#include <libpq-fe.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int gw_token_new(char token[65], uint8_t sha256[32])
{
	unsigned char raw[32];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	for (int i = 0; i < 32; i++)
		snprintf(token + 2 * i, 3, "%02x", raw[i]);
	SHA256((const unsigned char *)token, 64, sha256);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: qagw -c FILE agent add ID | agent remove ID | agent list\n");
	return 2;
}

static PGresult *run(PGconn *pg, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats)
{
	return PQexecParams(pg, sql, n, NULL, values, lengths, formats, 0);
}

int gw_credentials_cli(const struct gw_config *c, int argc, char **argv)
{
	if (argc < 1 || (strcmp(argv[0], "list") != 0 && argc != 2) ||
	    (strcmp(argv[0], "list") == 0 && argc != 1))
		return usage();
	const char *verb = argv[0], *id = argc > 1 ? argv[1] : "";
	if (argc > 1 && !qs_valid_agent_id(id, strlen(id))) {
		fprintf(stderr, "qagw: bad agent id \"%s\" (1..120 of [A-Za-z0-9._-])\n", id);
		return 2;
	}
	PGconn *pg = PQconnectdb(c->conninfo);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "qagw: cannot connect to the store: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return 1;
	}
	int rc = 1;
	PGresult *r = NULL;
	if (strcmp(verb, "add") == 0) {
		char token[65];
		uint8_t sha[32];
		char now[24];
		snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
		if (gw_token_new(token, sha) != 0) {
			fprintf(stderr, "qagw: no random bytes for a token\n");
		} else {
			const char *v[3] = {id, (const char *)sha, now};
			int len[3] = {0, 32, 0}, fmt[3] = {0, 1, 0};
			r = run(pg,
			        "INSERT INTO qa_credentials (agent_id, token_sha256, created_ms)"
			        " VALUES ($1, $2, $3) ON CONFLICT (agent_id) DO NOTHING",
			        3, v, len, fmt);
			if (PQresultStatus(r) != PGRES_COMMAND_OK)
				fprintf(stderr, "qagw: %s", PQresultErrorMessage(r));
			else if (strcmp(PQcmdTuples(r), "1") != 0)
				fprintf(stderr,
				        "qagw: agent %s already has a token (remove it first)\n",
				        id);
			else {
				printf("%s\n",
				       token); /* shown once: the store keeps only its hash */
				rc = 0;
			}
			memset(token, 0, sizeof(token));
		}
	} else if (strcmp(verb, "remove") == 0) {
		const char *v[1] = {id};
		r = run(pg, "DELETE FROM qa_credentials WHERE agent_id = $1", 1, v, NULL, NULL);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			fprintf(stderr, "qagw: %s", PQresultErrorMessage(r));
		else if (strcmp(PQcmdTuples(r), "1") != 0)
			fprintf(stderr, "qagw: agent %s has no token\n", id);
		else
			rc = 0;
	} else if (strcmp(verb, "list") == 0) {
		r = run(pg, "SELECT agent_id, created_ms FROM qa_credentials ORDER BY agent_id", 0,
		        NULL, NULL, NULL);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "qagw: %s", PQresultErrorMessage(r));
		} else {
			for (int i = 0; i < PQntuples(r); i++)
				printf("%s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
			rc = 0;
		}
	} else {
		rc = usage();
	}
	PQclear(r);
	PQfinish(pg);
	return rc;
}
