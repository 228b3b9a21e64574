-- UPLOAD batches of one or more sessions in one statement and one transaction
-- (group commit, docs/design.md "Store"). Row i is p_sender[i]'s message; the
-- gateway has refused invalid messages already and passes p_flag 3 (expired)
-- or 4 (too_large) for the others. Returns (ord, result) for every row, in
-- order, keeping protocol.md's precedence: duplicate/conflict, then the flags,
-- then quota.
--
-- Cost: one INSERT ... ON CONFLICT DO NOTHING of the batch; an id is looked up
-- only for the rows that were not inserted (a conflict, a flag, the quota).
-- The quota reads each recipient's counters (migration 8) instead of counting
-- its pending rows: the recipient's qa_pending_in row is locked (in recipient
-- order) until the commit, so concurrent uploads to one recipient never take
-- it past max_pending. The same upsert registers a recipient never seen.
CREATE OR REPLACE FUNCTION qa_upload_group(p_now bigint, p_max_pending integer,
    p_sender text[], p_ids uuid[], p_rcpt text[], p_queue text[], p_prio smallint[],
    p_expires bigint[], p_flag smallint[], p_props bytea[], p_body bytea[])
RETURNS TABLE (ord integer, result smallint) LANGUAGE sql AS $$
  WITH inp AS (
    SELECT t.*, row_number() OVER (PARTITION BY t.id ORDER BY t.ord) AS dupn,
           first_value(t.sender) OVER (PARTITION BY t.id ORDER BY t.ord) AS first_sender
      FROM unnest(p_sender, p_ids, p_rcpt, p_queue, p_prio, p_expires, p_flag, p_props, p_body)
           WITH ORDINALITY AS t(sender, id, rcpt, queue, prio, expires, flag, props, body, ord)
  ), cand AS (
    SELECT i.ord, i.rcpt, row_number() OVER (PARTITION BY i.rcpt ORDER BY i.ord) AS rank
      FROM inp i WHERE i.flag = 0 AND i.dupn = 1
  ), lk AS (
    INSERT INTO qa_pending_in AS c (recipient, n)
    SELECT DISTINCT cand.rcpt, 0::bigint FROM cand ORDER BY 1
    ON CONFLICT (recipient) DO UPDATE SET n = c.n
    RETURNING c.recipient, c.n, (c.xmax = 0) AS fresh
  ), room AS (
    SELECT lk.recipient, p_max_pending - (lk.n - coalesce(o.n, 0)) AS free, lk.fresh
      FROM lk LEFT JOIN qa_pending_out o ON o.recipient = lk.recipient
  ), seen AS (
    INSERT INTO qa_agents (agent_id, first_seen_ms)
    SELECT room.recipient, p_now FROM room WHERE room.fresh ORDER BY 1
    ON CONFLICT (agent_id) DO NOTHING
  ), ok AS (
    SELECT cand.ord FROM cand JOIN room ON room.recipient = cand.rcpt
     WHERE cand.rank <= room.free
  ), ins AS (
    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                             created_ms, expires_ms, props, body, status_ms)
    SELECT i.id, i.sender, true, i.rcpt, i.queue, i.prio, p_now, i.expires, i.props, i.body, p_now
      FROM inp i JOIN ok ON ok.ord = i.ord ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING qa_messages.id
  )
  SELECT i.ord::integer, (CASE
      WHEN s.id IS NOT NULL THEN 0
      ELSE coalesce(
        (SELECT CASE WHEN m.sender = i.sender AND m.sender_is_agent THEN 1 ELSE 6 END
           FROM qa_messages m WHERE m.id = i.id),
        CASE WHEN i.dupn > 1 THEN CASE WHEN i.first_sender = i.sender THEN 1 ELSE 6 END
             WHEN i.flag <> 0 THEN i.flag
             WHEN ok.ord IS NULL THEN 5
             ELSE 1 END) -- a concurrent upload of the same id won the race
    END)::smallint
    FROM inp i LEFT JOIN ins s ON s.id = i.id AND i.dupn = 1
               LEFT JOIN ok ON ok.ord = i.ord
   ORDER BY i.ord;
$$;
