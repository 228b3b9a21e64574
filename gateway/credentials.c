/* Agent credentials; see credentials.h. */
#include "gateway/credentials.h"

#include "gateway/config.h"
#include "proto/qs_codec.h"
#include "store/queries.h"

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

static void print_credential(void *arg, const struct st_credential *cr)
{
	printf("%.*s %lld\n", (int)cr->agent_len, cr->agent, (long long)cr->created_ms);
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
	char err[512];
	if (strcmp(verb, "add") == 0) {
		char token[65];
		uint8_t sha[32];
		if (gw_token_new(token, sha) != 0) {
			fprintf(stderr, "qagw: no random bytes for a token\n");
		} else {
			int added = st_credential_add_sync(pg, id, sha, (int64_t)time(NULL) * 1000,
			                                   err, sizeof(err));
			if (added < 0)
				fprintf(stderr, "qagw: %s\n", err);
			else if (!added)
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
		int removed = st_credential_remove_sync(pg, id, err, sizeof(err));
		if (removed < 0)
			fprintf(stderr, "qagw: %s\n", err);
		else if (!removed)
			fprintf(stderr, "qagw: agent %s has no token\n", id);
		else
			rc = 0;
	} else if (strcmp(verb, "list") == 0) {
		if (st_credential_list_sync(pg, print_credential, NULL, err, sizeof(err)) < 0)
			fprintf(stderr, "qagw: %s\n", err);
		else
			rc = 0;
	} else {
		rc = usage();
	}
	PQfinish(pg);
	return rc;
}
