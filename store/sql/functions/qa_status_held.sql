-- STATUS from a session that holds the pending messages p_held whose deliveries are not
-- counted yet: they are counted first (so that qa_status sees them as delivered), then
-- qa_status, in one transaction committed synchronously.
CREATE OR REPLACE FUNCTION qa_status_held(p_agent text, p_held bigint[], p_ids uuid[],
    p_codes smallint[], p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  IF cardinality(p_held) > 0 THEN
    UPDATE qa_messages m SET delivery_count = m.delivery_count + 1
     WHERE m.seq = ANY (p_held) AND m.recipient = p_agent AND m.status + 0 = 1; -- see qa_ack_group
  END IF;
  RETURN qa_status(p_agent, p_ids, p_codes, p_now);
END $$;
