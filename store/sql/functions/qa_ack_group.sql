-- DELIVER_ACKs of many sessions in one statement and one transaction (group commit,
-- committed asynchronously: what a PostgreSQL crash forgets is delivered again, harmless by
-- id). Row i acknowledges seq p_seq[i] for agent p_agent[i]; p_held[i]: the acknowledging
-- session holds it (delivered on that session, its delivery not counted yet: counted now).
-- A seq not held there counts only if it was delivered before (delivery_count > 0): never
-- another agent's message, never one already final. Returns the ord of each row applied.
-- The pending counters (migrations 8 and 9) are advanced here, in the same statement, and
-- the update trigger passes (qa.counted): one upsert per agent, and one per agent sender of
-- the acknowledged messages, instead of the trigger's transition-table queries.
-- The rows are found through the primary key (seq = ANY), whatever the planner knew when it
-- made the plan the session keeps: "status + 0 = 1", not the partial index's predicate, so
-- that qa_messages_pending is never read whole (its statistics say few messages are pending
-- between two ANALYZEs, or before a backlog built up), and no sequential scan (the cheapest
-- plan for the tiny table a fresh store starts with, then kept while it grows). Either made
-- each acknowledgement cost the store's backlog (test_gw_store_pg test_ack_reads_only_its_rows).
CREATE OR REPLACE FUNCTION qa_ack_group(p_now bigint, p_agent text[], p_seq bigint[],
    p_held boolean[])
RETURNS TABLE (ord integer) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM set_config('qa.counted', 'on', true);
  PERFORM set_config('enable_seqscan', 'off', true);
  RETURN QUERY
  WITH u AS (
    UPDATE qa_messages m
       SET status = 20, status_ms = p_now, held_by = NULL,
           delivery_count = m.delivery_count + t.held::integer
      FROM unnest(p_agent, p_seq, p_held) WITH ORDINALITY AS t(agent, seq, held, ord)
     WHERE m.seq = ANY (p_seq) AND m.seq = t.seq AND m.recipient = t.agent
       AND m.status + 0 = 1 -- not "status = 1": see above
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
