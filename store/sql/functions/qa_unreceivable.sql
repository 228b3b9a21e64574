-- A pending message of p_agent that can never be delivered (its DELIVER would not fit the
-- gateway's max_frame, e.g. stored before max_frame was lowered, or its properties are too
-- many for the ones delivery adds) becomes unreceivable (status 50) instead of blocking
-- everything behind it; its sender, if an agent, is told through its system queue, as for
-- expiry (qa_expire_seqs). Called by FETCH (gateway/requests.c), rarely. Returns 1 if the
-- message was still pending, else 0.
CREATE OR REPLACE FUNCTION qa_unreceivable(p_agent text, p_seq bigint, p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  m record;
  note uuid := gen_random_uuid();
BEGIN
  UPDATE qa_messages SET status = 50, status_ms = p_now, held_by = NULL
   WHERE seq = p_seq AND recipient = p_agent AND status = 1
  RETURNING id, sender, sender_is_agent INTO m;
  IF NOT FOUND THEN RETURN 0; END IF;
  IF m.sender_is_agent THEN
    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                             created_ms, expires_ms, props, body, status_ms)
    VALUES (note, 'server', false, m.sender, 'system', 4, p_now, 0,
            qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],
                            ARRAY['status', '50', replace(m.id::text, '-', '')]),
            ''::bytea, p_now);
    PERFORM pg_notify('qa_send', m.sender || ' ' || note::text || ' ' || p_now::text);
  END IF;
  RETURN 1;
END $$;
