/* The store's SQL, embedded at build time from store/sql/ (scripts/embed-sql.sh):
 * the schema migrations in order (migration N is st_sql_migrations[N-1]) and
 * one file per function (CREATE OR REPLACE, applied after the migrations). */
#ifndef ST_SQL_H
#define ST_SQL_H

struct st_sql_file {
	const char *name;
	const char *text;
};

extern const char *const st_sql_migrations[];
extern const int st_sql_n_migrations;
extern const struct st_sql_file st_sql_functions[];
extern const int st_sql_n_functions;

#endif
