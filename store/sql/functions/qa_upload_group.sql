-- UPLOAD batches of one or more sessions in one transaction (group commit,
-- docs/design.md "Store"). Row i is p_sender[i]'s message. The gateway has
-- refused invalid messages already and passes in p_flag: 0 (store it), 1 (its
-- id came earlier in the same sender's batch: a duplicate, or a conflict if
-- another sender stored it), 3 (expired) or 4 (too_large). Among rows with
-- flag 0 every id is distinct: the gateway puts a batch that repeats an id of
-- another batch of the group in the next group. Returns (ord, result) for every row, in order, with protocol.md's
-- precedence: duplicate/conflict, then expired/too_large, then quota.
--
-- The common case costs one upsert per recipient and one INSERT of the rows:
-- 1. The quota: each recipient's qa_pending_in row (migration 8) is locked, in
--    recipient order, and advanced by what fits under max_pending, in one
--    upsert that also tells whether the recipient is new (then registered).
--    The lock lasts until the commit, so concurrent uploads to one recipient
--    never take it past max_pending.
-- 2. One INSERT of the accepted rows (again with ON CONFLICT (id) DO NOTHING if
--    an id was stored before); the insert trigger does not count them again
--    (qa.counted).
-- 3. Only if a row was flagged, refused for quota or not inserted (its id was
--    stored before): those rows' ids are looked up to tell duplicate from
--    conflict, and the counter gives back what was not inserted.
CREATE OR REPLACE FUNCTION qa_upload_group(p_now bigint, p_max_pending integer,
    p_sender text[], p_ids uuid[], p_rcpt text[], p_queue text[], p_prio smallint[],
    p_expires bigint[], p_flag smallint[], p_props bytea[], p_body bytea[])
RETURNS TABLE (ord integer, result smallint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  n_rows integer := coalesce(cardinality(p_ids), 0);
  n_cand bigint;
  n_acc bigint;
  n_ins bigint;
  capped boolean;
  acc_r text[];
  acc_n bigint[];
  ins_ids uuid[];
  ins_r text[];
BEGIN
  WITH lk AS (
    INSERT INTO qa_pending_in AS c (recipient, n, last_add, last_req)
    SELECT t.rcpt, least(count(*), p_max_pending), least(count(*), p_max_pending), count(*)
      FROM unnest(p_rcpt, p_flag) AS t(rcpt, flag) WHERE t.flag = 0
     GROUP BY t.rcpt ORDER BY t.rcpt
    ON CONFLICT (recipient) DO UPDATE SET
      last_req = excluded.last_req,
      last_add = greatest(0, least(excluded.last_req, p_max_pending - (c.n - coalesce(
                   (SELECT o.n FROM qa_pending_out o WHERE o.recipient = c.recipient), 0)))),
      n = c.n + greatest(0, least(excluded.last_req, p_max_pending - (c.n - coalesce(
                   (SELECT o.n FROM qa_pending_out o WHERE o.recipient = c.recipient), 0))))
    RETURNING c.recipient, c.last_add, c.last_req, (c.xmax = 0) AS fresh
  ), seen AS (
    INSERT INTO qa_agents (agent_id, first_seen_ms)
    SELECT lk.recipient, p_now FROM lk WHERE lk.fresh ORDER BY 1
    ON CONFLICT (agent_id) DO NOTHING
  )
  SELECT coalesce(sum(lk.last_req), 0), coalesce(sum(lk.last_add), 0),
         coalesce(bool_or(lk.last_add < lk.last_req), false),
         array_agg(lk.recipient), array_agg(lk.last_add)
    INTO n_cand, n_acc, capped, acc_r, acc_n
    FROM lk;

  PERFORM set_config('qa.counted', 'on', true);
  IF NOT capped THEN
    -- A plain INSERT: a conflict is rare (a retried batch), and ON CONFLICT's speculative
    -- insertion costs about half again as much per row; on a conflict the subtransaction
    -- rolls back and the rows go again with ON CONFLICT DO NOTHING.
    BEGIN
      WITH ins AS (
        INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                                 created_ms, expires_ms, props, body, status_ms)
        SELECT t.id, t.sender, true, t.rcpt, t.queue, t.prio, p_now, t.expires, t.props,
               t.body, p_now
          FROM unnest(p_sender, p_ids, p_rcpt, p_queue, p_prio, p_expires, p_flag, p_props,
                      p_body) AS t(sender, id, rcpt, queue, prio, expires, flag, props, body)
         WHERE t.flag = 0
        RETURNING qa_messages.id, qa_messages.recipient
      )
      SELECT count(*), array_agg(ins.id), array_agg(ins.recipient) INTO n_ins, ins_ids, ins_r
        FROM ins;
    EXCEPTION WHEN unique_violation THEN
      WITH ins AS (
        INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                                 created_ms, expires_ms, props, body, status_ms)
        SELECT t.id, t.sender, true, t.rcpt, t.queue, t.prio, p_now, t.expires, t.props,
               t.body, p_now
          FROM unnest(p_sender, p_ids, p_rcpt, p_queue, p_prio, p_expires, p_flag, p_props,
                      p_body) AS t(sender, id, rcpt, queue, prio, expires, flag, props, body)
         WHERE t.flag = 0
        ON CONFLICT (id) DO NOTHING
        RETURNING qa_messages.id, qa_messages.recipient
      )
      SELECT count(*), array_agg(ins.id), array_agg(ins.recipient) INTO n_ins, ins_ids, ins_r
        FROM ins;
    END;
  ELSE -- some recipient is full: its first new rows (in order) up to what fits;
        -- ids stored before take no place (they are duplicates or conflicts)
    PERFORM set_config('enable_nestloop', 'off', true);
    WITH ins AS (
      INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                               created_ms, expires_ms, props, body, status_ms)
      SELECT t.id, t.sender, true, t.rcpt, t.queue, t.prio, p_now, t.expires, t.props, t.body,
             p_now
        FROM (SELECT u.*, row_number() OVER (PARTITION BY u.rcpt ORDER BY u.ord) AS rk
                FROM unnest(p_sender, p_ids, p_rcpt, p_queue, p_prio, p_expires, p_flag,
                            p_props, p_body) WITH ORDINALITY
                     AS u(sender, id, rcpt, queue, prio, expires, flag, props, body, ord)
               WHERE u.flag = 0
                 AND NOT EXISTS (SELECT 1 FROM qa_messages m WHERE m.id = u.id)) t
        JOIN unnest(acc_r, acc_n) AS a(r, n) ON a.r = t.rcpt
       WHERE t.rk <= a.n
       ORDER BY t.ord
      ON CONFLICT (id) DO NOTHING
      RETURNING qa_messages.id, qa_messages.recipient
    )
    SELECT count(*), array_agg(ins.id), array_agg(ins.recipient) INTO n_ins, ins_ids, ins_r
      FROM ins;
    PERFORM set_config('enable_nestloop', 'on', true);
  END IF;
  PERFORM set_config('qa.counted', 'off', true);

  IF n_ins = n_rows THEN -- every row stored: nothing to look up
    RETURN QUERY SELECT g::integer, 0::smallint FROM generate_series(1, n_rows) AS g;
    RETURN;
  END IF;
  PERFORM set_config('enable_nestloop', 'off', true);
  IF n_ins < n_acc THEN -- accepted rows that were not inserted give their place back
    UPDATE qa_pending_in c SET n = c.n - (a.n - coalesce(i.n, 0))
      FROM unnest(acc_r, acc_n) AS a(r, n)
      LEFT JOIN (SELECT x.r, count(*) AS n FROM unnest(ins_r) AS x(r) GROUP BY x.r) i
             ON i.r = a.r
     WHERE c.recipient = a.r AND a.n > coalesce(i.n, 0);
  END IF;
  RETURN QUERY
  SELECT t.ord::integer, (CASE
      WHEN s.id IS NOT NULL THEN 0
      ELSE coalesce(
        (SELECT CASE WHEN m.sender = t.sender AND m.sender_is_agent THEN 1 ELSE 6 END
           FROM qa_messages m WHERE m.id = t.id),
        CASE WHEN t.flag <> 0 THEN t.flag ELSE 5 END)
    END)::smallint
    FROM unnest(p_sender, p_ids, p_flag) WITH ORDINALITY AS t(sender, id, flag, ord)
    LEFT JOIN unnest(ins_ids) AS s(id) ON s.id = t.id AND t.flag = 0
   ORDER BY t.ord;
  PERFORM set_config('enable_nestloop', 'on', true);
END $$;
