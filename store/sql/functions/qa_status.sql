-- STATUS: only this agent's delivered messages not yet final; the sender (if an agent) is
-- told through its system queue, and the gateways are notified so that it is pushed.
CREATE OR REPLACE FUNCTION qa_status(p_agent text, p_ids uuid[], p_codes smallint[], p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  applied integer;
BEGIN
  WITH inp AS (
    SELECT DISTINCT ON (t.id) t.id, t.code
      FROM unnest(p_ids, p_codes) WITH ORDINALITY AS t(id, code, ord)
     ORDER BY t.id, t.ord DESC
  ), u AS (
    UPDATE qa_messages m SET status = inp.code, status_ms = p_now, held_by = NULL
      FROM inp
     WHERE m.id = inp.id AND m.recipient = p_agent AND m.delivery_count > 0
       AND m.status IN (1, 20)
    RETURNING m.id, m.sender, m.sender_is_agent, inp.code
  ), notes AS (
    INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,
                             created_ms, expires_ms, props, body, status_ms)
    SELECT gen_random_uuid(), 'server', false, u.sender, 'system', 4, p_now, 0,
           qa_props_encode(ARRAY['ias_MessageType', 'ias_Status', 'ias_StatusMessageId'],
                           ARRAY['status', u.code::text, replace(u.id::text, '-', '')]),
           ''::bytea, p_now
      FROM u WHERE u.sender_is_agent
    RETURNING qa_messages.id, qa_messages.recipient
  ), notified AS (
    SELECT pg_notify('qa_send', n.recipient || ' ' || n.id::text || ' ' || p_now::text)
      FROM notes n
  )
  SELECT count(*) INTO applied FROM u CROSS JOIN (SELECT count(*) FROM notified) x;
  RETURN applied;
END $$;
