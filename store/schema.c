/* Schema migrations and worker registration; see schema.h. The SQL lives in
 * store/sql/ (embedded, store/sql.h): numbered migrations for the tables, one
 * file per function for the store's operations (docs/design.md "Store"). */
#include "store/schema.h"

#include "store/sql.h"
#include "store/store.h"

#include "common/clock.h"
#include "common/log.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_MIGRATIONS st_sql_n_migrations

int st_schema_version(void)
{
	return N_MIGRATIONS;
}

static int exec_ok(PGconn *pg, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType s = PQresultStatus(r);
	int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY;
	if (!ok)
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

/* The SHA-256 of every function file, in hex: what the store records so that
 * a build whose functions differ re-applies them. */
static void functions_digest(char hex[65])
{
	unsigned char md[32] = {0};
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
		for (int i = 0; i < st_sql_n_functions; i++) {
			const struct st_sql_file *f = &st_sql_functions[i];
			EVP_DigestUpdate(ctx, f->name, strlen(f->name) + 1);
			EVP_DigestUpdate(ctx, f->text, strlen(f->text) + 1);
		}
		EVP_DigestFinal_ex(ctx, md, NULL);
	}
	EVP_MD_CTX_free(ctx);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* One query's single value as text into out ("" when there is no row). */
static int query_value(PGconn *pg, const char *sql, char *out, size_t outlen, char *err,
                       size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
		PQclear(r);
		return -1;
	}
	snprintf(out, outlen, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return 0;
}

/* In one transaction: every function (CREATE OR REPLACE, bodies checked at
 * first call: a function may name a table a later migration creates), then
 * the migrations from have+1, then the functions' digest. */
static int apply(PGconn *pg, int have, const char *digest, char *err, size_t errlen)
{
	char why[512];
	if (exec_ok(pg, "BEGIN", err, errlen) ||
	    exec_ok(pg, "SET LOCAL check_function_bodies = off", err, errlen))
		goto fail;
	for (int i = 0; i < st_sql_n_functions; i++)
		if (exec_ok(pg, st_sql_functions[i].text, err, errlen)) {
			snprintf(why, sizeof(why), "%s", err);
			snprintf(err, errlen, "function file %s: %s", st_sql_functions[i].name,
			         why);
			goto fail;
		}
	for (int v = have + 1; v <= N_MIGRATIONS; v++) {
		char record[96];
		snprintf(record, sizeof(record),
		         "INSERT INTO qa_schema_version (version) VALUES (%d)", v);
		if (exec_ok(pg, st_sql_migrations[v - 1], err, errlen) ||
		    exec_ok(pg, record, err, errlen)) {
			snprintf(why, sizeof(why), "%s", err);
			snprintf(err, errlen, "migration %d failed: %s", v, why);
			goto fail;
		}
	}
	const char *vals[1] = {digest};
	if (exec_ok(pg, "DELETE FROM qa_schema_functions", err, errlen))
		goto fail;
	PGresult *r = PQexecParams(pg, "INSERT INTO qa_schema_functions (digest) VALUES ($1)", 1,
	                           NULL, vals, NULL, NULL, 0);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		snprintf(err, errlen, "recording the functions: %s", PQresultErrorMessage(r));
	PQclear(r);
	if (!ok || exec_ok(pg, "COMMIT", err, errlen))
		goto fail;
	for (int v = have + 1; v <= N_MIGRATIONS; v++)
		gw_log(GW_LOG_INFO, "store: schema migrated to version %d", v);
	gw_log(GW_LOG_INFO, "store: %d functions applied (%.12s)", st_sql_n_functions, digest);
	return 0;
fail:
	PQclear(PQexec(pg, "ROLLBACK"));
	return -1;
}

static int migrate(PGconn *pg, char *err, size_t errlen)
{
	/* The lock serialises nodes that start together; it is released
	 * with the session (this connection) whatever happens. */
	if (exec_ok(pg, "SELECT pg_advisory_lock(7426001)", err, errlen) ||
	    exec_ok(pg,
	            "CREATE TABLE IF NOT EXISTS qa_schema_version (version integer PRIMARY KEY,"
	            " applied_at timestamptz NOT NULL DEFAULT now())",
	            err, errlen) ||
	    exec_ok(pg, "CREATE TABLE IF NOT EXISTS qa_schema_functions (digest text NOT NULL)",
	            err, errlen))
		return -1;
	char have_s[32], stored[80], digest[65];
	if (query_value(pg, "SELECT coalesce(max(version), 0) FROM qa_schema_version", have_s,
	                sizeof(have_s), err, errlen) ||
	    query_value(pg, "SELECT digest FROM qa_schema_functions", stored, sizeof(stored), err,
	                errlen))
		return -1;
	int have = atoi(have_s);
	if (have > N_MIGRATIONS) {
		snprintf(err, errlen, "the store's schema is version %d, newer than this qagw (%d)",
		         have, N_MIGRATIONS);
		return -1;
	}
	functions_digest(digest);
	/* A node of the same schema version with other functions (a development
	 * build) re-applies its own: a function change comes with a migration. */
	if ((have < N_MIGRATIONS || strcmp(stored, digest) != 0) &&
	    apply(pg, have, digest, err, errlen))
		return -1;
	return exec_ok(pg, "SELECT pg_advisory_unlock(7426001)", err, errlen);
}

static int register_workers(PGconn *pg, const struct st_worker_row *rows, int n, char *err,
                            size_t errlen)
{
	for (int i = 0; i < n; i++) {
		char cap[16];
		snprintf(cap, sizeof(cap), "%d", rows[i].capacity);
		const char *vals[5] = {rows[i].name, rows[i].node, rows[i].advertise,
		                       rows[i].tls ? "true" : "false", cap};
		PGresult *r = PQexecParams(
		    pg,
		    "INSERT INTO qa_workers (name, node, advertise, tls, capacity)"
		    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET node = $2,"
		    " advertise = $3, tls = $4, capacity = $5, registered_at = now()",
		    5, NULL, vals, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			snprintf(err, errlen, "registering worker %s: %s", rows[i].name,
			         PQresultErrorMessage(r));
			PQclear(r);
			return -1;
		}
		PQclear(r);
	}
	return 0;
}

int st_startup(const char *conninfo, const char *name, int wait_s, const struct st_worker_row *rows,
               int n, char *err, size_t errlen)
{
	int64_t deadline = gw_mono_ms() + (int64_t)wait_s * 1000;
	PGconn *pg = NULL;
	for (;;) {
		pg = st_connect_blocking(conninfo, name);
		if (PQstatus(pg) == CONNECTION_OK)
			break;
		snprintf(err, errlen, "cannot connect to the store: %s", PQerrorMessage(pg));
		char *nl = strchr(err, '\n');
		if (nl)
			*nl = 0;
		PQfinish(pg);
		if (gw_mono_ms() >= deadline)
			return -1;
		gw_log(GW_LOG_WARN, "%s (retrying)", err);
		sleep(1);
	}
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	int rc = migrate(pg, err, errlen);
	if (rc == 0)
		rc = register_workers(pg, rows, n, err, errlen);
	PQfinish(pg);
	return rc;
}
