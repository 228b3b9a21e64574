-- (its parameters changed while migration 8 was unreleased: replaced whole)
DROP FUNCTION IF EXISTS qa_upload_group(bigint, integer, text[], uuid[], text[], text[],
    smallint[], bigint[], smallint[], bytea[], bytea[]);
-- UPLOAD batches of one or more sessions in one transaction (group commit,
-- docs/design.md "Store"). Row i is p_sender[i]'s message. The gateway has
-- refused invalid messages already and passes in p_flag: 0 (store it), 1 (its
-- id came earlier in the same sender's batch: a duplicate, or a conflict if
-- another sender stored it), 3 (expired) or 4 (too_large). Among rows with
-- flag 0 every id is distinct: the gateway puts a batch that repeats an id of
-- another batch of the group in the next group. Returns (ord, result) for
-- every row, in order, with protocol.md's precedence: duplicate/conflict, then
-- expired/too_large, then quota.
--
-- The common case costs one INSERT of the rows and one upsert per recipient and
-- per sender:
-- 1. The quota is decided from each recipient's counters (migration 8) and each
--    sender's (migration 9), read without a lock: what fits under max_pending
--    for its recipient and max_pending_per_sender (p_max_per_sender; NULL: no
--    limit) for its sender is accepted.
-- 2. One INSERT of the accepted rows (again with ON CONFLICT (id) DO NOTHING if
--    an id was stored before); the insert trigger does not count them
--    (qa.counted: this function counts its own rows).
-- 3. Last, one upsert per recipient (in recipient order, so that two groups
--    never deadlock) adds what was inserted to its counter and locks it until
--    the commit: groups to the same recipients wait for each other only for
--    this step and the commit, not for the whole statement. If a concurrent
--    upload got there first and the count is now past max_pending, this
--    group's newest rows for that recipient are deleted again and answered
--    quota: a recipient never has more than max_pending pending messages.
--    Then the same for the senders (their counters locked after the
--    recipients', by every writer): a sender never has more than
--    max_pending_per_sender pending messages.
-- 4. Only if a row was flagged, refused or not inserted: its id is looked up to
--    tell duplicate (same sender) from conflict.
CREATE OR REPLACE FUNCTION qa_upload_group(p_now bigint, p_max_pending integer,
    p_max_per_sender integer, p_sender text[], p_ids uuid[], p_rcpt text[], p_queue text[],
    p_prio smallint[], p_expires bigint[], p_flag smallint[], p_props bytea[], p_body bytea[])
RETURNS TABLE (ord integer, result smallint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  n_rows integer := coalesce(cardinality(p_ids), 0);
  n_ins bigint;
  n_cand bigint;
  n_ins0 bigint;
  capped boolean;
  acc_r text[];
  acc_n bigint[];
  acc_s text[];
  acc_sn bigint[];
  lim_s bigint := coalesce(p_max_per_sender, 2147483647); -- (NULL: no limit)
  ins_ids uuid[];
  ins_ids0 uuid[];
  over_r text[];
  over_n bigint[];
  out_ids uuid[];
BEGIN
  -- Every statement here is written for a generic plan (no join whose plan depends on the
  -- arrays' sizes): plpgsql would otherwise plan each call afresh (a custom plan costs
  -- ~0.25 ms of planning; measured with pg_stat_user_functions, issue 15), as it judges
  -- the generic plan's estimates for unnest() of a parameter too uncertain.
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
  -- Committed without waiting for the WAL flush: the rows are visible (and pushed) at
  -- once; the gateway acknowledges them only after a barrier (store/group.h), whose own
  -- commit waits for the flush (and the synchronous standbys) past this one's.
  PERFORM set_config('synchronous_commit', 'off', true);

  -- 1. what fits, from the counters as they are (no lock): per recipient, per sender.
  -- A small group (an UPLOAD or a few at push rates) first tries a bound that needs no
  -- grouping (issue 15: the grouped query below was a fifth of a small UPLOAD's cost): no
  -- recipient or sender of the group has fewer free places than the group has rows to
  -- store, so every row fits. One probe of each counter a row, through its primary key
  -- (scalar subqueries: a generic plan of "= ANY (p_rcpt)" may filter a sequential scan
  -- of the counters with the whole array, row by row). A large group (ingest) repeats its
  -- recipients: it counts per recipient and sender at once, as does a group the bound
  -- does not clear.
  n_cand := coalesce(cardinality(array_positions(p_flag, 0::smallint)), 0);
  capped := n_rows > 64 OR n_cand > p_max_pending OR n_cand > lim_s
    OR EXISTS (SELECT 1 FROM unnest(p_rcpt) AS t(r)
                WHERE coalesce((SELECT i.n FROM qa_pending_in i WHERE i.recipient = t.r), 0)
                      - coalesce((SELECT o.n FROM qa_pending_out o WHERE o.recipient = t.r), 0)
                      > p_max_pending - n_cand)
    OR EXISTS (SELECT 1 FROM unnest(p_sender) AS t(s)
                WHERE coalesce((SELECT i.n FROM qa_sender_in i WHERE i.sender = t.s), 0)
                      - coalesce((SELECT o.n FROM qa_sender_out o WHERE o.sender = t.s), 0)
                      > lim_s - n_cand);
  IF capped THEN
    SELECT x.capped OR y.capped, x.r, x.acc, x.n, y.s, y.acc
      INTO capped, acc_r, acc_n, n_cand, acc_s, acc_sn
      FROM (SELECT coalesce(bool_or(x.acc < x.k), false) AS capped, array_agg(x.r) AS r,
                   array_agg(x.acc) AS acc, coalesce(sum(x.k), 0) AS n
              FROM (SELECT k.r, k.k, greatest(0, least(k.k, p_max_pending
                     - (coalesce((SELECT i.n FROM qa_pending_in i WHERE i.recipient = k.r), 0)
                        - coalesce((SELECT o.n FROM qa_pending_out o WHERE o.recipient = k.r), 0))))
                     AS acc
                      FROM (SELECT t.rcpt AS r, count(*) AS k
                              FROM unnest(p_rcpt, p_flag) AS t(rcpt, flag)
                             WHERE t.flag = 0 GROUP BY t.rcpt) k) x) x,
           (SELECT coalesce(bool_or(y.acc < y.k), false) AS capped, array_agg(y.s) AS s,
                   array_agg(y.acc) AS acc
              FROM (SELECT k.s, k.k, greatest(0, least(k.k, lim_s
                     - (coalesce((SELECT i.n FROM qa_sender_in i WHERE i.sender = k.s), 0)
                        - coalesce((SELECT o.n FROM qa_sender_out o WHERE o.sender = k.s), 0))))
                     AS acc
                      FROM (SELECT t.sender AS s, count(*) AS k
                              FROM unnest(p_sender, p_flag) AS t(sender, flag)
                             WHERE t.flag = 0 GROUP BY t.sender) k) y) y;
  END IF;

  -- 2. the rows
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
        RETURNING qa_messages.id
      )
      SELECT count(*), array_agg(ins.id) INTO n_ins, ins_ids FROM ins;
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
        RETURNING qa_messages.id
      )
      SELECT count(*), array_agg(ins.id) INTO n_ins, ins_ids FROM ins;
    END;
  ELSE -- some recipient or sender is full: the first new rows (in order) that fit under
        -- the recipient's room, then of those the first that fit under the sender's; ids
        -- stored before take no place (they are duplicates or conflicts)
    PERFORM set_config('enable_nestloop', 'off', true);
    WITH ins AS (
      INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                               created_ms, expires_ms, props, body, status_ms)
      SELECT t.id, t.sender, true, t.rcpt, t.queue, t.prio, p_now, t.expires, t.props, t.body,
             p_now
        FROM (SELECT t.*, row_number() OVER (PARTITION BY t.sender ORDER BY t.ord) AS sk
                FROM (SELECT u.*, row_number() OVER (PARTITION BY u.rcpt ORDER BY u.ord) AS rk
                        FROM unnest(p_sender, p_ids, p_rcpt, p_queue, p_prio, p_expires,
                                    p_flag, p_props, p_body) WITH ORDINALITY
                             AS u(sender, id, rcpt, queue, prio, expires, flag, props, body,
                                  ord)
                       WHERE u.flag = 0
                         AND NOT EXISTS (SELECT 1 FROM qa_messages m WHERE m.id = u.id)) t
                JOIN unnest(acc_r, acc_n) AS a(r, n) ON a.r = t.rcpt
               WHERE t.rk <= a.n) t
        JOIN unnest(acc_s, acc_sn) AS b(s, n) ON b.s = t.sender
       WHERE t.sk <= b.n
       ORDER BY t.ord
      ON CONFLICT (id) DO NOTHING
      RETURNING qa_messages.id
    )
    SELECT count(*), array_agg(ins.id) INTO n_ins, ins_ids FROM ins;
    PERFORM set_config('enable_nestloop', 'on', true);
  END IF;
  PERFORM set_config('qa.counted', 'off', true);

  -- 3. the counters, last: add what was inserted, see whether it still fits
  n_ins0 := n_ins;
  ins_ids0 := ins_ids;
  IF n_ins > 0 THEN
    IF n_ins < n_cand THEN -- (not all inserted: a hash join with what was)
      PERFORM set_config('enable_nestloop', 'off', true);
    END IF;
    WITH add AS (
      SELECT t.rcpt AS r, count(*) AS n
        FROM unnest(p_ids, p_rcpt, p_flag) AS t(id, rcpt, flag)
        LEFT JOIN unnest(ins_ids) AS s(id) ON n_ins < n_cand AND s.id = t.id
       WHERE t.flag = 0 AND (n_ins = n_cand OR s.id IS NOT NULL)
       GROUP BY t.rcpt
    ), up AS (
      INSERT INTO qa_pending_in AS c (recipient, n)
      SELECT add.r, add.n FROM add ORDER BY add.r
      ON CONFLICT (recipient) DO UPDATE SET n = c.n + excluded.n
      RETURNING c.recipient, c.n, (c.xmax = 0) AS fresh
    ), seen AS (
      INSERT INTO qa_agents (agent_id, first_seen_ms)
      SELECT up.recipient, p_now FROM up WHERE up.fresh ORDER BY 1
      ON CONFLICT (agent_id) DO NOTHING
    )
    SELECT array_agg(v.recipient), array_agg(v.excess) INTO over_r, over_n
      FROM (SELECT up.recipient, up.n - coalesce((SELECT o.n FROM qa_pending_out o
                                                  WHERE o.recipient = up.recipient), 0)
                   - p_max_pending AS excess
              FROM up) v
     WHERE v.excess > 0;
    PERFORM set_config('enable_nestloop', 'on', true);
    IF over_r IS NOT NULL THEN -- a concurrent upload won: this group's newest rows go
      -- (the delete trigger counts them out again)
      WITH gone AS (
        DELETE FROM qa_messages m
         WHERE m.seq = ANY (ARRAY(
           SELECT x.seq FROM (
             SELECT m2.seq, m2.recipient,
                    row_number() OVER (PARTITION BY m2.recipient ORDER BY m2.seq DESC) AS rk
               FROM qa_messages m2 WHERE m2.id = ANY (ins_ids)
                AND m2.recipient = ANY (over_r)) x
             JOIN unnest(over_r, over_n) AS o(r, n) ON o.r = x.recipient
            WHERE x.rk <= o.n))
        RETURNING m.id
      )
      SELECT array_agg(gone.id) INTO out_ids FROM gone;
      n_ins := n_ins - coalesce(cardinality(out_ids), 0);
      ins_ids := ARRAY(SELECT u FROM unnest(ins_ids) AS u
                        WHERE u <> ALL (coalesce(out_ids, '{}')));
    END IF;
    -- the senders' counters, the same way (after the recipients': every writer locks
    -- them in that order). Everything inserted counts in: rows deleted just above were
    -- counted out by the delete trigger.
    IF n_ins0 < n_cand THEN
      PERFORM set_config('enable_nestloop', 'off', true);
    END IF;
    WITH add AS (
      SELECT t.sender AS s, count(*) AS n
        FROM unnest(p_ids, p_sender, p_flag) AS t(id, sender, flag)
        LEFT JOIN unnest(ins_ids0) AS s(id) ON n_ins0 < n_cand AND s.id = t.id
       WHERE t.flag = 0 AND (n_ins0 = n_cand OR s.id IS NOT NULL)
       GROUP BY t.sender
    ), up AS (
      INSERT INTO qa_sender_in AS c (sender, n)
      SELECT add.s, add.n FROM add ORDER BY add.s
      ON CONFLICT (sender) DO UPDATE SET n = c.n + excluded.n
      RETURNING c.sender, c.n
    )
    SELECT array_agg(v.sender), array_agg(v.excess) INTO over_r, over_n
      FROM (SELECT up.sender, up.n - coalesce((SELECT o.n FROM qa_sender_out o
                                               WHERE o.sender = up.sender), 0)
                   - lim_s AS excess
              FROM up) v
     WHERE v.excess > 0;
    PERFORM set_config('enable_nestloop', 'on', true);
    IF over_r IS NOT NULL AND n_ins > 0 THEN -- a concurrent upload of the sender won
      WITH gone AS (
        DELETE FROM qa_messages m
         WHERE m.seq = ANY (ARRAY(
           SELECT x.seq FROM (
             SELECT m2.seq, m2.sender,
                    row_number() OVER (PARTITION BY m2.sender ORDER BY m2.seq DESC) AS rk
               FROM qa_messages m2 WHERE m2.id = ANY (ins_ids)
                AND m2.sender = ANY (over_r)) x
             JOIN unnest(over_r, over_n) AS o(s, n) ON o.s = x.sender
            WHERE x.rk <= o.n))
        RETURNING m.id
      )
      SELECT array_agg(gone.id) INTO out_ids FROM gone;
      n_ins := n_ins - coalesce(cardinality(out_ids), 0);
      ins_ids := ARRAY(SELECT u FROM unnest(ins_ids) AS u
                        WHERE u <> ALL (coalesce(out_ids, '{}')));
    END IF;
  END IF;

  -- 4. results
  IF n_ins = n_rows THEN -- every row stored: nothing to look up
    RETURN QUERY SELECT g::integer, 0::smallint FROM generate_series(1, n_rows) AS g;
    RETURN;
  END IF;
  PERFORM set_config('enable_nestloop', 'off', true);
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
