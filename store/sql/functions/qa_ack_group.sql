-- DELIVER_ACKs of many sessions in one statement and one transaction (group commit,
-- committed asynchronously: what a PostgreSQL crash forgets is delivered again, harmless by
-- id). Row i acknowledges seq p_seq[i] for agent p_agent[i]; p_held[i]: the acknowledging
-- session holds it (delivered on that session, its delivery not counted yet: counted now).
-- A seq not held there counts only if it was delivered before (delivery_count > 0): never
-- another agent's message, never one already final. Returns the ord of each row applied.
-- The pending counters (migrations 8 and 9) are advanced here, in the same statement, and
-- the update trigger passes (qa.counted): one upsert per agent, and one per agent sender of
-- the acknowledged messages, instead of the trigger's transition-table queries.
CREATE OR REPLACE FUNCTION qa_ack_group(p_now bigint, p_agent text[], p_seq bigint[],
    p_held boolean[])
RETURNS TABLE (ord integer) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM set_config('qa.counted', 'on', true);
  RETURN QUERY
  WITH u AS (
    UPDATE qa_messages m
       SET status = 20, status_ms = p_now, held_by = NULL,
           delivery_count = m.delivery_count + t.held::integer
      FROM unnest(p_agent, p_seq, p_held) WITH ORDINALITY AS t(agent, seq, held, ord)
     WHERE m.seq = t.seq AND m.recipient = t.agent AND m.status = 1
       AND (m.delivery_count > 0 OR t.held)
    RETURNING t.ord, m.recipient, m.sender, m.sender_is_agent
  ), counted AS (
    INSERT INTO qa_pending_out AS c (recipient, n)
    SELECT u.recipient, count(*) FROM u GROUP BY u.recipient ORDER BY u.recipient
    ON CONFLICT (recipient) DO UPDATE SET n = c.n + excluded.n
    RETURNING 1
  ), senders AS ( -- after the recipients' (the order every writer locks them in)
    INSERT INTO qa_sender_out AS c (sender, n)
    SELECT u.sender, count(*) FROM u
     WHERE u.sender_is_agent AND (SELECT count(*) FROM counted) >= 0
     GROUP BY u.sender ORDER BY u.sender
    ON CONFLICT (sender) DO UPDATE SET n = c.n + excluded.n
  )
  SELECT u.ord::integer FROM u;
  PERFORM set_config('qa.counted', 'off', true);
END $$;
