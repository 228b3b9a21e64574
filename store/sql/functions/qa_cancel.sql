-- Cancel a message its recipient has not acknowledged: 1 canceled, 2 already final,
-- 0 unknown. The sender (an agent) is told through its system queue.
CREATE OR REPLACE FUNCTION qa_cancel(p_id uuid, p_now bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  m record;
  note uuid := gen_random_uuid();
BEGIN
  SELECT * INTO m FROM qa_messages WHERE id = p_id FOR UPDATE;
  IF NOT FOUND THEN RETURN 0; END IF;
  IF m.status <> 1 THEN RETURN 2; END IF;
  UPDATE qa_messages SET status = 40, status_ms = p_now, held_by = NULL WHERE id = p_id;
  IF m.sender_is_agent THEN
    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                             created_ms, expires_ms, props, body, status_ms)
    VALUES (note, 'server', false, m.sender, 'system', 4, p_now, 0,
            qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],
                            ARRAY['status', '40', replace(p_id::text, '-', '')]),
            ''::bytea, p_now);
    PERFORM pg_notify('qa_send', m.sender || ' ' || note::text || ' ' || p_now::text);
  END IF;
  RETURN 1;
END $$;
