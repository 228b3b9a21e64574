/* Unit tests of the client message store (agent/qa_store.c) against a temp
 * SQLite file: outbox until UPLOAD_ACK (quota stays), inbox deduplication by
 * message id, taking messages queues STATUS reports, the status queue,
 * meta, the agent id guard and reopening (durability across a restart). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/qa_store.h"
#include "proto/qs_codec.h"

struct fixture {
	char dir[64];
	char path[128];
	struct qa_store *st;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/qa_store_test.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/client.db", f->dir);
	struct qa_error e;
	if (qa_store_open(&f->st, f->path, "dev1", &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char p[192];
	qa_store_close(f->st);
	static const char *const suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void make_id(uint8_t id[16], uint8_t n)
{
	memset(id, 0, 16);
	id[0] = 0xAB;
	id[15] = n;
}

static void queue_out(struct qa_store *st, uint8_t n, const char *body)
{
	struct qa_out_msg m = {
	    .address = "dev2\\inbox",
	    .priority = 4,
	    .props = (uint8_t *)"\0\0",
	    .props_len = 2,
	    .body = (uint8_t *)body,
	    .body_len = strlen(body),
	};
	make_id(m.id, n);
	struct qa_error e;
	assert_int_equal(qa_store_out_add(st, &m, &e), 0);
}

static struct qa_in_msg in_msg(uint8_t n, const char *queue, const char *body)
{
	struct qa_in_msg m = {
	    .seq = 100u + n,
	    .from = "dev9",
	    .queue = (char *)queue,
	    .priority = 5,
	    .created_ms = 1000,
	    .expires_ms = 0,
	    .props = (uint8_t *)"\0\0",
	    .props_len = 2,
	    .body = (uint8_t *)body,
	    .body_len = strlen(body),
	};
	make_id(m.id, n);
	return m;
}

static struct qa_store_counts counts(struct qa_store *st)
{
	struct qa_store_counts c;
	struct qa_error e;
	assert_int_equal(qa_store_counts(st, &c, &e), 0);
	return c;
}

static void test_outbox_order_and_resolve(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	queue_out(f->st, 1, "one");
	queue_out(f->st, 2, "two");
	queue_out(f->st, 3, "");
	assert_int_equal(counts(f->st).outgoing, 3);

	struct qa_out_list l;
	assert_int_equal(qa_store_out_next(f->st, 0, 2, &l, &e), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.v[0].id[15], 1);
	assert_int_equal(l.v[1].id[15], 2);
	assert_string_equal(l.v[0].address, "dev2\\inbox");
	assert_int_equal(l.v[0].body_len, 3);
	assert_memory_equal(l.v[0].body, "one", 3);
	int64_t after = l.v[1].qid;
	qa_out_list_free(&l);
	assert_int_equal(qa_store_out_next(f->st, after, 10, &l, &e), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].body_len, 0);
	qa_out_list_free(&l);

	/* stored and duplicate leave the outbox; quota stays queued. */
	struct qa_out_result r[3] = {
	    {.result = QS_R_STORED}, {.result = QS_R_QUOTA}, {.result = QS_R_DUPLICATE}};
	make_id(r[0].id, 1);
	make_id(r[1].id, 2);
	make_id(r[2].id, 3);
	assert_int_equal(qa_store_out_resolve(f->st, r, 3, &e), 0);
	struct qa_store_counts c = counts(f->st);
	assert_int_equal(c.outgoing, 1);
	assert_int_equal(c.sent[QS_R_STORED], 1);
	assert_int_equal(c.sent[QS_R_DUPLICATE], 1);
	assert_int_equal(c.sent[QS_R_QUOTA], 0);
	assert_int_equal(qa_store_out_next(f->st, 0, 10, &l, &e), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].id[15], 2);
	qa_out_list_free(&l);
}

static void test_resolve_unknown_id_is_harmless(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	queue_out(f->st, 1, "one");
	struct qa_out_result r = {.result = QS_R_STORED};
	make_id(r.id, 77);
	assert_int_equal(qa_store_out_resolve(f->st, &r, 1, &e), 0);
	struct qa_store_counts c = counts(f->st);
	assert_int_equal(c.outgoing, 1);
	assert_int_equal(c.sent[QS_R_STORED], 0);
}

static void test_inbox_dedup(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	struct qa_in_msg batch[3] = {in_msg(1, "q", "a"), in_msg(2, "q", "b"), in_msg(1, "q", "a")};
	size_t added = 99;
	uint8_t is_new[3] = {9, 9, 9};
	assert_int_equal(qa_store_inbox_add(f->st, batch, 3, is_new, &added, &e), 0);
	assert_int_equal(added, 2);
	/* The repeat inside one DELIVER is the one marked not new. */
	assert_int_equal(is_new[0], 1);
	assert_int_equal(is_new[1], 1);
	assert_int_equal(is_new[2], 0);
	/* A redelivery on a later session: not stored again. */
	assert_int_equal(qa_store_inbox_add(f->st, batch + 1, 1, is_new, &added, &e), 0);
	assert_int_equal(added, 0);
	assert_int_equal(is_new[0], 0);
	struct qa_store_counts c = counts(f->st);
	assert_int_equal(c.incoming_total, 2);
	assert_int_equal(c.incoming_unread, 2);
}

static void test_take_queues_status_and_dedup_survives(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	struct qa_in_msg batch[3] = {in_msg(1, "q", "a"), in_msg(2, "other", "b"),
	                             in_msg(3, "system", "s")};
	size_t added;
	assert_int_equal(qa_store_inbox_add(f->st, batch, 3, NULL, &added, &e), 0);

	struct qa_in_list l;
	assert_int_equal(qa_store_inbox_unread(f->st, "q", &l, &e), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.v[0].from, "dev9");
	assert_int_equal(l.v[0].seq, 101);
	qa_in_list_free(&l);

	assert_int_equal(qa_store_inbox_unread(f->st, NULL, &l, &e), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.v[0].id[15], 1); /* arrival order */
	assert_int_equal(l.v[2].id[15], 3);
	assert_int_equal(qa_store_inbox_take(f->st, &l, QS_ST_RECEIVED, &e), 0);
	/* Taking twice queues nothing more. */
	assert_int_equal(qa_store_inbox_take(f->st, &l, QS_ST_RECEIVED, &e), 0);
	qa_in_list_free(&l);

	struct qa_store_counts c = counts(f->st);
	assert_int_equal(c.incoming_unread, 0);
	assert_int_equal(c.incoming_total, 3);
	assert_int_equal(c.statuses_queued, 2); /* none for the system message */

	/* Taken messages still deduplicate a late redelivery. */
	assert_int_equal(qa_store_inbox_add(f->st, batch, 1, NULL, &added, &e), 0);
	assert_int_equal(added, 0);
	assert_int_equal(counts(f->st).incoming_unread, 0);
}

static void test_status_queue(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	struct qa_in_msg batch[3] = {in_msg(1, "q", "a"), in_msg(2, "q", "b"), in_msg(3, "q", "c")};
	size_t added;
	struct qa_in_list l;
	assert_int_equal(qa_store_inbox_add(f->st, batch, 3, NULL, &added, &e), 0);
	assert_int_equal(qa_store_inbox_unread(f->st, NULL, &l, &e), 0);
	assert_int_equal(qa_store_inbox_take(f->st, &l, QS_ST_RECEIVED, &e), 0);
	qa_in_list_free(&l);

	struct qa_status_list s1, s2;
	assert_int_equal(qa_store_status_next(f->st, 0, 2, &s1, &e), 0);
	assert_int_equal(s1.n, 2);
	assert_int_equal(s1.v[0].status, QS_ST_RECEIVED);
	assert_int_equal(s1.v[0].id[15], 1);
	assert_int_equal(qa_store_status_next(f->st, s1.v[1].sid, 2, &s2, &e), 0);
	assert_int_equal(s2.n, 1);
	assert_int_equal(s2.v[0].id[15], 3);
	/* Only the confirmed ones leave. */
	assert_int_equal(qa_store_status_done(f->st, &s1, &e), 0);
	assert_int_equal(counts(f->st).statuses_queued, 1);
	assert_int_equal(qa_store_status_done(f->st, &s2, &e), 0);
	assert_int_equal(counts(f->st).statuses_queued, 0);
	qa_status_list_free(&s1);
	qa_status_list_free(&s2);
}

static void test_meta_and_reopen(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	char *v = NULL;
	assert_int_equal(qa_store_meta_get(f->st, "last_server", &v, &e), 0);
	assert_null(v);
	assert_int_equal(qa_store_meta_set(f->st, "last_server", "ml2", &e), 0);
	assert_int_equal(qa_store_meta_set(f->st, "last_server", "ml3", &e), 0);
	queue_out(f->st, 9, "kept");

	/* A restart keeps everything. */
	qa_store_close(f->st);
	assert_int_equal(qa_store_open(&f->st, f->path, "dev1", &e), 0);
	assert_int_equal(qa_store_meta_get(f->st, "last_server", &v, &e), 1);
	assert_string_equal(v, "ml3");
	free(v);
	assert_int_equal(counts(f->st).outgoing, 1);
}

static void test_other_agent_refused(void **state)
{
	struct fixture *f = *state;
	struct qa_error e;
	struct qa_store *other = NULL;
	assert_int_equal(qa_store_open(&other, f->path, "dev2", &e), -1);
	assert_null(other);
	assert_int_equal(e.kind, QA_FAIL_USAGE);
	assert_non_null(strstr(e.msg, "dev1"));
}

static void test_unopenable_path(void **state)
{
	struct qa_error e;
	struct qa_store *st = NULL;
	assert_int_equal(qa_store_open(&st, "/nonexistent-dir/x/y.db", "dev1", &e), -1);
	assert_null(st);
	assert_int_equal(e.kind, QA_FAIL_STORE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_outbox_order_and_resolve, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_unknown_id_is_harmless, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inbox_dedup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_take_queues_status_and_dedup_survives, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_status_queue, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_meta_and_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_agent_refused, setup, teardown),
	    cmocka_unit_test(test_unopenable_path),
	};
	return cmocka_run_group_tests_name("agent_store", tests, NULL, NULL);
}
