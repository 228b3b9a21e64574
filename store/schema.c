/* Schema migrations and worker registration; see schema.h. The SQL functions
 * defined here are the store's whole write path: each gateway operation is
 * one statement (one round trip, one transaction), see docs/design.md. */
#include "store/schema.h"

#include "gateway/log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Migration N is migrations[N-1]. Never edit a released migration: add one. */
static const char *const migrations[] = {
    /* 1: tables, indexes and the operations of QASync v1 */
    "CREATE TABLE qa_workers (\n"
    "  name text PRIMARY KEY,\n"
    "  node text NOT NULL,\n"
    "  advertise text NOT NULL,\n"
    "  tls boolean NOT NULL,\n"
    "  capacity integer NOT NULL,\n"
    "  registered_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE TABLE qa_agents (\n"
    "  agent_id text PRIMARY KEY,\n"
    "  first_seen_ms bigint NOT NULL,\n"
    "  last_hello_ms bigint,\n"
    "  primary_sent text,\n"
    "  last_worker text);\n"
    "CREATE TABLE qa_messages (\n"
    "  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "  id uuid NOT NULL UNIQUE,\n"
    "  sender text NOT NULL,\n"
    "  sender_is_agent boolean NOT NULL,\n"
    "  recipient text NOT NULL,\n"
    "  queue text NOT NULL,\n"
    "  priority smallint NOT NULL,\n"
    "  created_ms bigint NOT NULL,\n"
    "  expires_ms bigint NOT NULL,\n"
    "  props bytea NOT NULL,\n"
    "  body bytea NOT NULL,\n"
    "  status smallint NOT NULL DEFAULT 1,\n"
    "  status_ms bigint NOT NULL,\n"
    "  delivery_count integer NOT NULL DEFAULT 0,\n"
    "  held_by bigint);\n"
    "CREATE INDEX qa_messages_pending ON qa_messages (recipient, priority DESC, seq) WHERE status "
    "= 1;\n"
    "CREATE INDEX qa_messages_final ON qa_messages (status_ms) WHERE status <> 1;\n"

    /* props in the wire's props layout (u16 n, then str key, str value) */
    "CREATE FUNCTION qa_props_encode(k text[], v text[]) RETURNS bytea\n"
    "LANGUAGE plpgsql IMMUTABLE AS $$\n"
    "DECLARE\n"
    "  n integer := coalesce(array_length(k, 1), 0);\n"
    "  r bytea := substring(int4send(n) from 3 for 2);\n"
    "BEGIN\n"
    "  FOR i IN 1..n LOOP\n"
    "    r := r || substring(int4send(octet_length(k[i])) from 3 for 2) || convert_to(k[i], "
    "'UTF8')\n"
    "          || substring(int4send(octet_length(v[i])) from 3 for 2) || convert_to(v[i], "
    "'UTF8');\n"
    "  END LOOP;\n"
    "  RETURN r;\n"
    "END $$;\n"

    "CREATE FUNCTION qa_hello(p_agent text, p_primary text, p_worker text, p_now bigint)\n"
    "RETURNS TABLE (name text, advertise text, tls boolean) LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "BEGIN\n"
    "  INSERT INTO qa_agents AS a (agent_id, first_seen_ms, last_hello_ms, primary_sent, "
    "last_worker)\n"
    "  VALUES (p_agent, p_now, p_now, p_primary, p_worker)\n"
    "  ON CONFLICT (agent_id) DO UPDATE\n"
    "    SET last_hello_ms = p_now, primary_sent = p_primary, last_worker = p_worker;\n"
    "  RETURN QUERY SELECT w.name, w.advertise, w.tls FROM qa_workers w ORDER BY w.name;\n"
    "END $$;\n"

    /* One UPLOAD batch. The gateway has already refused invalid messages
     * and passes p_flag 3 (expired) or 4 (too_large) for the others; the
     * precedence of protocol.md is kept: duplicate/conflict, then the
     * flags, then quota. Returns (ord, result) for every input, in order. */
    "CREATE FUNCTION qa_upload(p_sender text, p_now bigint, p_max_pending integer,\n"
    "    p_ids uuid[], p_rcpt text[], p_queue text[], p_prio smallint[], p_expires bigint[],\n"
    "    p_flag smallint[], p_props bytea[], p_body bytea[])\n"
    "RETURNS TABLE (ord integer, result smallint) LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "BEGIN\n"
    "  RETURN QUERY\n"
    "  WITH inp AS (\n"
    "    SELECT t.*, row_number() OVER (PARTITION BY t.id ORDER BY t.ord) AS dupn\n"
    "      FROM unnest(p_ids, p_rcpt, p_queue, p_prio, p_expires, p_flag, p_props, p_body)\n"
    "           WITH ORDINALITY AS t(id, rcpt, queue, prio, expires, flag, props, body, ord)\n"
    "  ), pre AS (\n"
    "    SELECT i.*, CASE\n"
    "        WHEN m.sender IS NOT NULL AND m.sender = p_sender AND m.sender_is_agent THEN 1\n"
    "        WHEN m.sender IS NOT NULL THEN 6\n"
    "        WHEN i.dupn > 1 THEN 1\n"
    "        ELSE i.flag END::smallint AS r\n"
    "      FROM inp i LEFT JOIN qa_messages m ON m.id = i.id\n"
    "  ), cnt AS (\n"
    "    SELECT m.recipient, count(*) AS n FROM qa_messages m\n"
    "     WHERE m.status = 1 AND m.recipient IN (SELECT p.rcpt FROM pre p WHERE p.r = 0)\n"
    "     GROUP BY m.recipient\n"
    "  ), q AS (\n"
    "    SELECT p.*, CASE WHEN p.r = 0 AND coalesce(c.n, 0)\n"
    "        + row_number() OVER (PARTITION BY p.rcpt, p.r = 0 ORDER BY p.ord) > p_max_pending\n"
    "        THEN 5 ELSE p.r END::smallint AS r2\n"
    "      FROM pre p LEFT JOIN cnt c ON c.recipient = p.rcpt\n"
    "  ), seen AS (\n"
    "    INSERT INTO qa_agents (agent_id, first_seen_ms)\n"
    "    SELECT DISTINCT q.rcpt, p_now FROM q WHERE q.r2 = 0\n"
    "    ON CONFLICT (agent_id) DO NOTHING\n"
    "  ), ins AS (\n"
    "    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,\n"
    "                             created_ms, expires_ms, props, body, status_ms)\n"
    "    SELECT q.id, p_sender, true, q.rcpt, q.queue, q.prio, p_now, q.expires, q.props, q.body, "
    "p_now\n"
    "      FROM q WHERE q.r2 = 0 ORDER BY q.ord\n"
    "    ON CONFLICT (id) DO NOTHING\n"
    "    RETURNING qa_messages.id\n"
    "  )\n"
    "  SELECT q.ord::integer, (CASE WHEN q.r2 = 0 AND ins.id IS NULL THEN 1 ELSE q.r2 "
    "END)::smallint\n"
    "    FROM q LEFT JOIN ins ON ins.id = q.id ORDER BY q.ord;\n"
    "END $$;\n"

    /* One FETCH: expire what is due, then hold the most urgent, oldest
     * pending messages this session does not hold yet, as many as fit in
     * p_max_count and p_max_bytes (at least one), counting each MSG_IN's
     * exact encoded size including the two server-set properties. */
    "CREATE FUNCTION qa_fetch(p_agent text, p_session bigint, p_max_count integer,\n"
    "    p_max_bytes bigint, p_now bigint)\n"
    "RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,\n"
    "    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,\n"
    "    more boolean)\n"
    "LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  picked bigint[];\n"
    "  n_cand integer;\n"
    "BEGIN\n"
    "  UPDATE qa_messages m SET status = 30, status_ms = p_now, held_by = NULL\n"
    "   WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0\n"
    "     AND m.expires_ms <= p_now;\n"
    "  WITH cand AS (\n"
    "    SELECT m.seq, m.priority,\n"
    "           8 + 16 + 2 + octet_length(m.sender) + 2 + octet_length(m.queue) + 1 + 8 + 8\n"
    "           + octet_length(m.props) + (2 + 14 + 2 + octet_length(m.sender))\n"
    "           + (2 + 17 + 2 + length((m.delivery_count + 1)::text)) + 4 + octet_length(m.body) "
    "AS sz\n"
    "      FROM qa_messages m\n"
    "     WHERE m.recipient = p_agent AND m.status = 1 AND m.held_by IS DISTINCT FROM p_session\n"
    "     ORDER BY m.priority DESC, m.seq\n"
    "     LIMIT p_max_count + 1\n"
    "     FOR UPDATE SKIP LOCKED\n"
    "  ), run AS (\n"
    "    SELECT c.seq, row_number() OVER w AS rn, sum(c.sz) OVER w AS cum\n"
    "      FROM cand c WINDOW w AS (ORDER BY c.priority DESC, c.seq)\n"
    "  )\n"
    "  SELECT array_agg(r.seq), (SELECT count(*) FROM cand) INTO picked, n_cand\n"
    "    FROM run r WHERE r.rn <= p_max_count AND (r.rn = 1 OR r.cum <= p_max_bytes);\n"
    "  RETURN QUERY\n"
    "  WITH upd AS (\n"
    "    UPDATE qa_messages m SET held_by = p_session, delivery_count = m.delivery_count + 1\n"
    "     WHERE m.seq = ANY (picked)\n"
    "    RETURNING m.seq, m.id, m.sender, m.queue, m.priority, m.created_ms, m.expires_ms,\n"
    "              m.props, m.body, m.delivery_count\n"
    "  )\n"
    "  SELECT u.seq, u.id, u.sender, u.queue, u.priority, u.created_ms, u.expires_ms, u.props,\n"
    "         u.body, u.delivery_count, n_cand > coalesce(array_length(picked, 1), 0)\n"
    "    FROM upd u ORDER BY u.priority DESC, u.seq;\n"
    "END $$;\n"

    /* Retention: final messages older than keep_days go, in small batches
     * so that a purge never holds locks for long. */
    "CREATE FUNCTION qa_purge(p_before bigint, p_limit integer) RETURNS integer\n"
    "LANGUAGE sql AS $$\n"
    "  WITH d AS (\n"
    "    DELETE FROM qa_messages WHERE seq IN (\n"
    "      SELECT m.seq FROM qa_messages m WHERE m.status <> 1 AND m.status_ms < p_before\n"
    "       LIMIT p_limit FOR UPDATE SKIP LOCKED)\n"
    "    RETURNING 1)\n"
    "  SELECT count(*)::integer FROM d;\n"
    "$$;\n"

    /* DELIVER_ACK: only this agent's delivered, still pending messages. */
    "CREATE FUNCTION qa_ack(p_agent text, p_seqs bigint[], p_now bigint) RETURNS integer\n"
    "LANGUAGE sql AS $$\n"
    "  WITH u AS (\n"
    "    UPDATE qa_messages m SET status = 20, status_ms = p_now, held_by = NULL\n"
    "     WHERE m.seq = ANY (p_seqs) AND m.recipient = p_agent AND m.status = 1\n"
    "       AND m.delivery_count > 0\n"
    "    RETURNING 1)\n"
    "  SELECT count(*)::integer FROM u;\n"
    "$$;\n"

    /* STATUS: only this agent's delivered messages not yet final; the
     * sender (if an agent) is told through its system queue, and the
     * gateways are notified so that the status message is pushed. */
    "CREATE FUNCTION qa_status(p_agent text, p_ids uuid[], p_codes smallint[], p_now bigint)\n"
    "RETURNS integer LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  applied integer;\n"
    "BEGIN\n"
    "  WITH inp AS (\n"
    "    SELECT DISTINCT ON (t.id) t.id, t.code\n"
    "      FROM unnest(p_ids, p_codes) WITH ORDINALITY AS t(id, code, ord)\n"
    "     ORDER BY t.id, t.ord DESC\n"
    "  ), u AS (\n"
    "    UPDATE qa_messages m SET status = inp.code, status_ms = p_now, held_by = NULL\n"
    "      FROM inp\n"
    "     WHERE m.id = inp.id AND m.recipient = p_agent AND m.delivery_count > 0\n"
    "       AND m.status IN (1, 20)\n"
    "    RETURNING m.id, m.sender, m.sender_is_agent, inp.code\n"
    "  ), notes AS (\n"
    "    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,\n"
    "                             created_ms, expires_ms, props, body, status_ms)\n"
    "    SELECT gen_random_uuid(), 'server', false, u.sender, 'system', 4, p_now, 0,\n"
    "           qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],\n"
    "                           ARRAY['status', u.code::text, replace(u.id::text, '-', '')]),\n"
    "           ''::bytea, p_now\n"
    "      FROM u WHERE u.sender_is_agent\n"
    "    RETURNING qa_messages.id, qa_messages.recipient\n"
    "  ), notified AS (\n"
    "    SELECT pg_notify('qa_send', n.recipient || ' ' || n.id::text || ' ' || p_now::text)\n"
    "      FROM notes n\n"
    "  )\n"
    "  SELECT count(*) INTO applied FROM u CROSS JOIN (SELECT count(*) FROM notified) x;\n"
    "  RETURN applied;\n"
    "END $$;\n",

    /* 2: server-side sends (qa_send, with NOTIFY for push routing),
     * cancellation, and the pending count at HELLO (for the PUSH that
     * follows WELCOME). */
    "DROP FUNCTION qa_hello(text, text, text, bigint);\n"
    "CREATE FUNCTION qa_hello(p_agent text, p_primary text, p_worker text, p_now bigint)\n"
    "RETURNS TABLE (name text, advertise text, tls boolean, pending bigint)\n"
    "LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  n bigint;\n"
    "BEGIN\n"
    "  INSERT INTO qa_agents AS a (agent_id, first_seen_ms, last_hello_ms, primary_sent, "
    "last_worker)\n"
    "  VALUES (p_agent, p_now, p_now, p_primary, p_worker)\n"
    "  ON CONFLICT (agent_id) DO UPDATE\n"
    "    SET last_hello_ms = p_now, primary_sent = p_primary, last_worker = p_worker;\n"
    "  SELECT count(*) INTO n FROM qa_messages m\n"
    "   WHERE m.recipient = p_agent AND m.status = 1\n"
    "     AND (m.expires_ms = 0 OR m.expires_ms > p_now);\n"
    "  RETURN QUERY SELECT w.name, w.advertise, w.tls, n FROM qa_workers w ORDER BY w.name;\n"
    "END $$;\n"

    /* qa_send: what POST /api/messages and SQL applications use. Raises
     * an error naming the bad argument; NOTIFYs qa_send with
     * "RECIPIENT ID COMMIT_MS" so that every gateway can route a push. */
    "CREATE FUNCTION qa_send(p_to text, p_body text, p_from text DEFAULT 'server',\n"
    "    p_priority integer DEFAULT 4, p_expires_ms bigint DEFAULT 0,\n"
    "    p_props jsonb DEFAULT '{}'::jsonb)\n"
    "RETURNS TABLE (id uuid, seq bigint) LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  rcpt text := split_part(p_to, E'\\\\', 1);\n"
    "  q text := substr(p_to, length(split_part(p_to, E'\\\\', 1)) + 2);\n"
    "  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  new_id uuid := gen_random_uuid();\n"
    "  new_seq bigint;\n"
    "  k text[];\n"
    "  v text[];\n"
    "BEGIN\n"
    "  IF p_to IS NULL OR rcpt !~ '^[A-Za-z0-9._-]{1,120}$' OR q = '' OR octet_length(q) > 128\n"
    "     OR position(E'\\\\' IN q) > 0 OR q ~ '[\\x01-\\x1f\\x7f]' OR q = 'system'\n"
    "     OR octet_length(p_to) > 255 THEN\n"
    "    RAISE EXCEPTION 'qa_send: bad \"to\" address %', p_to USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  IF p_body IS NULL THEN\n"
    "    RAISE EXCEPTION 'qa_send: \"body\" is required' USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  IF p_priority IS NULL OR p_priority < 0 OR p_priority > 9 THEN\n"
    "    RAISE EXCEPTION 'qa_send: bad \"priority\" % (0..9)', p_priority USING ERRCODE = "
    "'22023';\n"
    "  END IF;\n"
    "  IF p_from IS NULL OR p_from = '' OR octet_length(p_from) > 120 THEN\n"
    "    RAISE EXCEPTION 'qa_send: bad \"from\"' USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  IF p_expires_ms IS NULL OR p_expires_ms < 0 THEN\n"
    "    RAISE EXCEPTION 'qa_send: bad \"expires_ms\"' USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  IF jsonb_typeof(coalesce(p_props, '{}'::jsonb)) <> 'object' THEN\n"
    "    RAISE EXCEPTION 'qa_send: \"props\" must be an object of strings' USING ERRCODE = "
    "'22023';\n"
    "  END IF;\n"
    "  SELECT coalesce(array_agg(e.key ORDER BY e.key), '{}'), coalesce(array_agg(e.value ORDER BY "
    "e.key), '{}')\n"
    "    INTO k, v FROM jsonb_each_text(coalesce(p_props, '{}'::jsonb)) e;\n"
    "  IF EXISTS (SELECT 1 FROM unnest(k) x WHERE lower(x) LIKE 'ias\\_%' OR x = ''\n"
    "             OR octet_length(x) > 128) THEN\n"
    "    RAISE EXCEPTION 'qa_send: bad \"props\" key (empty, too long or reserved ias_)'\n"
    "      USING ERRCODE = '22023';\n"
    "  END IF;\n"
    "  INSERT INTO qa_agents (agent_id, first_seen_ms) VALUES (rcpt, now_ms)\n"
    "  ON CONFLICT (agent_id) DO NOTHING;\n"
    "  INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority, "
    "created_ms,\n"
    "                           expires_ms, props, body, status_ms)\n"
    "  VALUES (new_id, p_from, false, rcpt, q, p_priority, now_ms, p_expires_ms,\n"
    "          qa_props_encode(k, v), convert_to(p_body, 'UTF8'), now_ms)\n"
    "  RETURNING qa_messages.seq INTO new_seq;\n"
    "  PERFORM pg_notify('qa_send', rcpt || ' ' || new_id::text || ' ' || now_ms::text);\n"
    "  RETURN QUERY SELECT new_id, new_seq;\n"
    "END $$;\n"

    /* Cancel a message its recipient has not acknowledged: 1 canceled,
     * 2 already final, 0 unknown. The sender (an agent) is told. */
    "CREATE FUNCTION qa_cancel(p_id uuid, p_now bigint) RETURNS integer\n"
    "LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  m record;\n"
    "  note uuid := gen_random_uuid();\n"
    "BEGIN\n"
    "  SELECT * INTO m FROM qa_messages WHERE id = p_id FOR UPDATE;\n"
    "  IF NOT FOUND THEN RETURN 0; END IF;\n"
    "  IF m.status <> 1 THEN RETURN 2; END IF;\n"
    "  UPDATE qa_messages SET status = 40, status_ms = p_now, held_by = NULL WHERE id = p_id;\n"
    "  IF m.sender_is_agent THEN\n"
    "    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,\n"
    "                             created_ms, expires_ms, props, body, status_ms)\n"
    "    VALUES (note, 'server', false, m.sender, 'system', 4, p_now, 0,\n"
    "            qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],\n"
    "                            ARRAY['status', '40', replace(p_id::text, '-', '')]),\n"
    "            ''::bytea, p_now);\n"
    "    PERFORM pg_notify('qa_send', m.sender || ' ' || note::text || ' ' || p_now::text);\n"
    "  END IF;\n"
    "  RETURN 1;\n"
    "END $$;\n",

    /* 3: agent credentials (gateway.md "Authentication"): only the
     * SHA-256 of each token is kept. */
    "CREATE TABLE qa_credentials (\n"
    "  agent_id text PRIMARY KEY,\n"
    "  token_sha256 bytea NOT NULL CHECK (octet_length(token_sha256) = 32),\n"
    "  created_ms bigint NOT NULL);\n",

    /* 4: router assignments (gateway.md "Redis": Redis is never the only
     * record): the primary the router gave each agent that names none,
     * returned at HELLO so that an emptied Redis is refilled without
     * moving anyone; qa_assign records a batch of moves. */
    "ALTER TABLE qa_agents ADD COLUMN assigned text;\n"
    "DROP FUNCTION qa_hello(text, text, text, bigint);\n"
    "CREATE FUNCTION qa_hello(p_agent text, p_primary text, p_worker text, p_now bigint)\n"
    "RETURNS TABLE (name text, advertise text, tls boolean, pending bigint, assigned text)\n"
    "LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  n bigint;\n"
    "  asg text;\n"
    "BEGIN\n"
    "  INSERT INTO qa_agents AS a (agent_id, first_seen_ms, last_hello_ms, primary_sent, "
    "last_worker)\n"
    "  VALUES (p_agent, p_now, p_now, p_primary, p_worker)\n"
    "  ON CONFLICT (agent_id) DO UPDATE\n"
    "    SET last_hello_ms = p_now, primary_sent = p_primary, last_worker = p_worker\n"
    "  RETURNING a.assigned INTO asg;\n"
    "  SELECT count(*) INTO n FROM qa_messages m\n"
    "   WHERE m.recipient = p_agent AND m.status = 1\n"
    "     AND (m.expires_ms = 0 OR m.expires_ms > p_now);\n"
    "  RETURN QUERY SELECT w.name, w.advertise, w.tls, n, coalesce(asg, '')\n"
    "    FROM qa_workers w ORDER BY w.name;\n"
    "END $$;\n"
    "CREATE FUNCTION qa_assign(p_agents text[], p_primaries text[]) RETURNS integer\n"
    "LANGUAGE sql AS $$\n"
    "  WITH u AS (UPDATE qa_agents a SET assigned = x.p\n"
    "    FROM unnest(p_agents, p_primaries) AS x(a, p)\n"
    "    WHERE a.agent_id = x.a RETURNING 1)\n"
    "  SELECT count(*)::integer FROM u;\n"
    "$$;\n",

    /* 5: FETCH and DELIVER_ACK commit asynchronously (synchronous_commit
     * off for their transaction only). What a PostgreSQL crash can forget
     * of them is a hold or an acknowledgement from the last moments: the
     * message is delivered again, and its id makes that harmless. UPLOAD,
     * STATUS and server-side sends stay synchronous: their commit is what
     * an acknowledgement promises. */
    "CREATE FUNCTION qa_fetch_async(p_agent text, p_session bigint, p_max_count integer,\n"
    "    p_max_bytes bigint, p_now bigint)\n"
    "RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,\n"
    "    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,\n"
    "    more boolean)\n"
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM set_config('synchronous_commit', 'off', true);\n"
    "  RETURN QUERY SELECT * FROM qa_fetch(p_agent, p_session, p_max_count, p_max_bytes, p_now);\n"
    "END $$;\n"
    "CREATE FUNCTION qa_ack_async(p_agent text, p_seqs bigint[], p_now bigint) RETURNS integer\n"
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM set_config('synchronous_commit', 'off', true);\n"
    "  RETURN qa_ack(p_agent, p_seqs, p_now);\n"
    "END $$;\n",

    /* 6: message lifecycle (issue 10). Expiry tells the sender (status 30
     * through its system queue), whether a FETCH or the background job
     * (gateway/retention.c) finds the message due; the job finds due
     * messages through qa_messages_expiring without scanning the table. */
    "CREATE INDEX qa_messages_expiring ON qa_messages (expires_ms)\n"
    "  WHERE status = 1 AND expires_ms <> 0;\n"
    "CREATE FUNCTION qa_expire_seqs(p_seqs bigint[], p_now bigint) RETURNS integer\n"
    "LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  n integer;\n"
    "BEGIN\n"
    "  IF coalesce(array_length(p_seqs, 1), 0) = 0 THEN RETURN 0; END IF;\n"
    "  WITH u AS (\n"
    "    UPDATE qa_messages m SET status = 30, status_ms = p_now, held_by = NULL\n"
    "     WHERE m.seq = ANY (p_seqs) AND m.status = 1 AND m.expires_ms <> 0\n"
    "       AND m.expires_ms <= p_now\n"
    "    RETURNING m.id, m.sender, m.sender_is_agent\n"
    "  ), notes AS (\n"
    "    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,\n"
    "                             created_ms, expires_ms, props, body, status_ms)\n"
    "    SELECT gen_random_uuid(), 'server', false, u.sender, 'system', 4, p_now, 0,\n"
    "           qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],\n"
    "                           ARRAY['status', '30', replace(u.id::text, '-', '')]),\n"
    "           ''::bytea, p_now\n"
    "      FROM u WHERE u.sender_is_agent\n"
    "    RETURNING qa_messages.id, qa_messages.recipient\n"
    "  ), notified AS (\n"
    "    SELECT pg_notify('qa_send', n.recipient || ' ' || n.id::text || ' ' || p_now::text)\n"
    "      FROM notes n\n"
    "  )\n"
    "  SELECT count(*) INTO n FROM u CROSS JOIN (SELECT count(*) FROM notified) x;\n"
    "  RETURN n;\n"
    "END $$;\n"
    /* The background job's step: at most p_limit due messages, skipping
     * rows a session holds locked at this moment (the next run takes them). */
    "CREATE FUNCTION qa_expire(p_now bigint, p_limit integer) RETURNS integer\n"
    "LANGUAGE sql AS $$\n"
    "  SELECT qa_expire_seqs(ARRAY(\n"
    "    SELECT m.seq FROM qa_messages m\n"
    "     WHERE m.status = 1 AND m.expires_ms <> 0 AND m.expires_ms <= p_now\n"
    "     ORDER BY m.expires_ms LIMIT p_limit FOR UPDATE SKIP LOCKED), p_now);\n"
    "$$;\n"
    "CREATE OR REPLACE FUNCTION qa_fetch(p_agent text, p_session bigint, p_max_count integer,\n"
    "    p_max_bytes bigint, p_now bigint)\n"
    "RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,\n"
    "    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,\n"
    "    more boolean)\n"
    "LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  picked bigint[];\n"
    "  n_cand integer;\n"
    "BEGIN\n"
    "  PERFORM qa_expire_seqs(ARRAY(\n"
    "    SELECT m.seq FROM qa_messages m\n"
    "     WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0\n"
    "       AND m.expires_ms <= p_now), p_now);\n"
    "  WITH cand AS (\n"
    "    SELECT m.seq, m.priority,\n"
    "           8 + 16 + 2 + octet_length(m.sender) + 2 + octet_length(m.queue) + 1 + 8 + 8\n"
    "           + octet_length(m.props) + (2 + 14 + 2 + octet_length(m.sender))\n"
    "           + (2 + 17 + 2 + length((m.delivery_count + 1)::text)) + 4 + octet_length(m.body) "
    "AS sz\n"
    "      FROM qa_messages m\n"
    "     WHERE m.recipient = p_agent AND m.status = 1 AND m.held_by IS DISTINCT FROM p_session\n"
    "     ORDER BY m.priority DESC, m.seq\n"
    "     LIMIT p_max_count + 1\n"
    "     FOR UPDATE SKIP LOCKED\n"
    "  ), run AS (\n"
    "    SELECT c.seq, row_number() OVER w AS rn, sum(c.sz) OVER w AS cum\n"
    "      FROM cand c WINDOW w AS (ORDER BY c.priority DESC, c.seq)\n"
    "  )\n"
    "  SELECT array_agg(r.seq), (SELECT count(*) FROM cand) INTO picked, n_cand\n"
    "    FROM run r WHERE r.rn <= p_max_count AND (r.rn = 1 OR r.cum <= p_max_bytes);\n"
    "  RETURN QUERY\n"
    "  WITH upd AS (\n"
    "    UPDATE qa_messages m SET held_by = p_session, delivery_count = m.delivery_count + 1\n"
    "     WHERE m.seq = ANY (picked)\n"
    "    RETURNING m.seq, m.id, m.sender, m.queue, m.priority, m.created_ms, m.expires_ms,\n"
    "              m.props, m.body, m.delivery_count\n"
    "  )\n"
    "  SELECT u.seq, u.id, u.sender, u.queue, u.priority, u.created_ms, u.expires_ms, u.props,\n"
    "         u.body, u.delivery_count, n_cand > coalesce(array_length(picked, 1), 0)\n"
    "    FROM upd u ORDER BY u.priority DESC, u.seq;\n"
    "END $$;\n",

    /* 7: qa_purge picks its batch through qa_messages_final in status
     * order, as an array of seqs, so that a batch costs two index scans
     * whatever the table's size (migration 1's IN (subquery) was planned as
     * a scan of the whole table inside the function). */
    "CREATE OR REPLACE FUNCTION qa_purge(p_before bigint, p_limit integer) RETURNS integer\n"
    "LANGUAGE sql AS $$\n"
    "  WITH d AS (\n"
    "    DELETE FROM qa_messages WHERE seq = ANY (ARRAY(\n"
    "      SELECT m.seq FROM qa_messages m WHERE m.status <> 1 AND m.status_ms < p_before\n"
    "       ORDER BY m.status_ms LIMIT p_limit FOR UPDATE SKIP LOCKED))\n"
    "    RETURNING 1)\n"
    "  SELECT count(*)::integer FROM d;\n"
    "$$;\n",

};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int st_schema_version(void)
{
	return N_MIGRATIONS;
}

static int exec_ok(PGconn *pg, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType s = PQresultStatus(r);
	int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
	if (!ok)
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

static int migrate(PGconn *pg, char *err, size_t errlen)
{
	/* The lock serialises nodes that start together; it is released
	 * with the session (this connection) whatever happens. */
	if (exec_ok(pg, "SELECT pg_advisory_lock(7426001)", err, errlen) ||
	    exec_ok(pg,
	            "CREATE TABLE IF NOT EXISTS qa_schema_version (version integer PRIMARY KEY,"
	            " applied_at timestamptz NOT NULL DEFAULT now())",
	            err, errlen))
		return -1;
	PGresult *r = PQexec(pg, "SELECT coalesce(max(version), 0) FROM qa_schema_version");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
		PQclear(r);
		return -1;
	}
	int have = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (have > N_MIGRATIONS) {
		snprintf(err, errlen, "the store's schema is version %d, newer than this qagw (%d)",
		         have, N_MIGRATIONS);
		return -1;
	}
	for (int v = have + 1; v <= N_MIGRATIONS; v++) {
		char record[96];
		snprintf(record, sizeof(record),
		         "INSERT INTO qa_schema_version (version) VALUES (%d)", v);
		if (exec_ok(pg, "BEGIN", err, errlen) ||
		    exec_ok(pg, migrations[v - 1], err, errlen) ||
		    exec_ok(pg, record, err, errlen) || exec_ok(pg, "COMMIT", err, errlen)) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err);
			snprintf(err, errlen, "migration %d failed: %s", v, why);
			PQclear(PQexec(pg, "ROLLBACK"));
			return -1;
		}
		gw_log(GW_LOG_INFO, "store: schema migrated to version %d", v);
	}
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

int st_startup(const char *conninfo, int wait_s, const struct st_worker_row *rows, int n, char *err,
               size_t errlen)
{
	time_t deadline = time(NULL) + wait_s;
	PGconn *pg = NULL;
	for (;;) {
		pg = PQconnectdb(conninfo);
		if (PQstatus(pg) == CONNECTION_OK)
			break;
		snprintf(err, errlen, "cannot connect to the store: %s", PQerrorMessage(pg));
		char *nl = strchr(err, '\n');
		if (nl)
			*nl = 0;
		PQfinish(pg);
		if (time(NULL) >= deadline)
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
