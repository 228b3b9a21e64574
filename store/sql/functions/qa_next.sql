-- (its columns changed while migration 8 was unreleased: replaced whole)
DROP FUNCTION IF EXISTS qa_next(text, bigint[], integer, bigint, bigint);
-- One FETCH of a previous release (this one groups them: qa_fetch_group, which this calls
-- after the expiry), as a read (docs/design.md "Delivery"): the most urgent, oldest pending
-- messages of p_agent except those this session holds (p_held: the session's holds are kept
-- in its worker's memory), up to p_max_count + 1 of them, each with its exact MSG_IN size
-- (including the two server-set properties; ias_DeliveryCount is delivery_count + 1) and the
-- running total `cum` in that order; rows from the first whose total passes p_max_bytes on
-- are left out, except that one (without its body, if it is not the first): the gateway delivers the rows with
-- rn <= p_max_count and (rn = 1 or cum <= p_max_bytes), and `more` is whether any row is
-- left. Nothing is written unless some of the agent's messages are due: those expire first
-- (their senders are told), in a transaction committed asynchronously.
CREATE OR REPLACE FUNCTION qa_next(p_agent text, p_held bigint[], p_max_count integer,
    p_max_bytes bigint, p_now bigint)
RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,
    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,
    rn bigint, cum bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  -- (a scalar subquery in qa_messages_expiring_rcpt's order, not EXISTS, which would drop
  -- ORDER BY and LIMIT: see qa_hello)
  IF (SELECT 1 FROM qa_messages m
       WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0
         AND m.expires_ms <= p_now
       ORDER BY m.recipient, m.expires_ms LIMIT 1) IS NOT NULL THEN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM qa_expire_seqs(ARRAY(
      SELECT m.seq FROM qa_messages m
       WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0
         AND m.expires_ms <= p_now), p_now);
  END IF;
  RETURN QUERY -- what qa_fetch_group reads for one FETCH (none due now), its row of none left out
  SELECT f.seq, f.id, f.sender, f.queue, f.priority, f.created_ms, f.expires_ms, f.props,
         f.body, f.delivery_count, f.rn, f.cum
    FROM qa_fetch_group(p_now, ARRAY[p_agent], ARRAY[p_held::text], ARRAY[p_max_count],
                        ARRAY[p_max_bytes]) f
   WHERE f.seq IS NOT NULL;
END $$;
