-- Expires the given due messages and tells each sender that is an agent (status 30
-- through its system queue, pushed through the qa_send notification).
CREATE OR REPLACE FUNCTION qa_expire_seqs(p_seqs bigint[], p_now bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  IF coalesce(array_length(p_seqs, 1), 0) = 0 THEN RETURN 0; END IF;
  WITH u AS (
    UPDATE qa_messages m SET status = 30, status_ms = p_now, held_by = NULL
     WHERE m.seq = ANY (p_seqs) AND m.status + 0 = 1 AND m.expires_ms <> 0 -- see qa_ack_group
       AND m.expires_ms <= p_now
    RETURNING m.id, m.sender, m.sender_is_agent
  ), notes AS (
    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                             created_ms, expires_ms, props, body, status_ms)
    SELECT gen_random_uuid(), 'server', false, u.sender, 'system', 4, p_now, 0,
           qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],
                           ARRAY['status', '30', replace(u.id::text, '-', '')]),
           ''::bytea, p_now
      FROM u WHERE u.sender_is_agent
    RETURNING qa_messages.id, qa_messages.recipient
  ), notified AS (
    SELECT pg_notify('qa_send', n.recipient || ' ' || n.id::text || ' ' || p_now::text)
      FROM notes n
  )
  SELECT count(*) INTO n FROM u CROSS JOIN (SELECT count(*) FROM notified) x;
  RETURN n;
END $$;
