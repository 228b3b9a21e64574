-- Counts a delivery (ias_DeliveryCount) of each of p_agent's pending messages p_seqs: what
-- a session delivered and holds when it ends without acknowledging it, so that a later
-- session reports the next count. Committed asynchronously (a crash may forget a count).
CREATE OR REPLACE FUNCTION qa_delivered(p_agent text, p_seqs bigint[], p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  PERFORM set_config('synchronous_commit', 'off', true);
  UPDATE qa_messages m SET delivery_count = m.delivery_count + 1
   WHERE m.seq = ANY (p_seqs) AND m.recipient = p_agent AND m.status + 0 = 1; -- see qa_ack_group
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
