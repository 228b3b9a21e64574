-- (p_max_frame added by issue 16: the six-argument function is replaced; calls with up to
-- six arguments resolve to this one)
DROP FUNCTION IF EXISTS qa_send(text, text, text, integer, bigint, jsonb);
-- Server-side send (docs/design.md "Store (store/)"): validates, stores and NOTIFYs qa_send so that
-- the gateways push it like an uploaded message. A message that could never be delivered
-- is refused (SQLSTATE 54000, "qa_send: too_large: ..."): protocol.md's too_large rule of
-- an UPLOAD, against p_max_frame, or when it is NULL the setting qa.max_frame (an operator
-- whose gateways run another max_frame sets it: ALTER DATABASE ... SET qa.max_frame = N),
-- or else the default max_frame, 1 MiB.
CREATE OR REPLACE FUNCTION qa_send(p_to text, p_body text, p_from text DEFAULT 'server',
    p_priority integer DEFAULT 4, p_expires_ms bigint DEFAULT 0,
    p_props jsonb DEFAULT '{}'::jsonb, p_max_frame integer DEFAULT NULL)
RETURNS TABLE (id uuid, seq bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  rcpt text := split_part(p_to, E'\\', 1);
  q text := substr(p_to, length(split_part(p_to, E'\\', 1)) + 2);
  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  new_id uuid := gen_random_uuid();
  new_seq bigint;
  k text[];
  v text[];
  v_props bytea;
  v_body bytea;
  v_max_frame bigint := coalesce(p_max_frame,
                               nullif(current_setting('qa.max_frame', true), '')::bigint,
                               1048576);
  v_wire bigint;
BEGIN
  IF p_to IS NULL OR rcpt !~ '^[A-Za-z0-9._-]{1,120}$' OR q = '' OR octet_length(q) > 128
     OR position(E'\\' IN q) > 0 OR q ~ '[\x01-\x1f\x7f]' OR q = 'system'
     OR octet_length(p_to) > 255 THEN
    RAISE EXCEPTION 'qa_send: bad "to" address %', p_to USING ERRCODE = '22023';
  END IF;
  IF p_body IS NULL THEN
    RAISE EXCEPTION 'qa_send: "body" is required' USING ERRCODE = '22023';
  END IF;
  IF p_priority IS NULL OR p_priority < 0 OR p_priority > 9 THEN
    RAISE EXCEPTION 'qa_send: bad "priority" % (0..9)', p_priority USING ERRCODE = '22023';
  END IF;
  IF p_from IS NULL OR p_from = '' OR octet_length(p_from) > 120 THEN
    RAISE EXCEPTION 'qa_send: bad "from"' USING ERRCODE = '22023';
  END IF;
  IF p_expires_ms IS NULL OR p_expires_ms < 0 THEN
    RAISE EXCEPTION 'qa_send: bad "expires_ms"' USING ERRCODE = '22023';
  END IF;
  IF jsonb_typeof(coalesce(p_props, '{}'::jsonb)) <> 'object' THEN
    RAISE EXCEPTION 'qa_send: "props" must be an object of strings' USING ERRCODE = '22023';
  END IF;
  SELECT coalesce(array_agg(e.key ORDER BY e.key), '{}'), coalesce(array_agg(e.value ORDER BY e.key), '{}')
    INTO k, v FROM jsonb_each_text(coalesce(p_props, '{}'::jsonb)) e;
  IF EXISTS (SELECT 1 FROM unnest(k) x WHERE lower(x) LIKE 'ias\_%' OR x = ''
             OR octet_length(x) > 128) THEN
    RAISE EXCEPTION 'qa_send: bad "props" key (empty, too long or reserved ias_)'
      USING ERRCODE = '22023';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(v) x WHERE octet_length(x) > 65535) THEN
    RAISE EXCEPTION 'qa_send: bad "props" value (over 65535 bytes)' USING ERRCODE = '22023';
  END IF;
  -- delivery adds ias_Originator and ias_DeliveryCount: at most 65533 of the sender's
  IF cardinality(k) > 65533 THEN
    RAISE EXCEPTION 'qa_send: bad "props" (more than 65533 properties)'
      USING ERRCODE = '22023';
  END IF;
  v_props := qa_props_encode(k, v);
  v_body := convert_to(p_body, 'UTF8');
  -- protocol.md's too_large rule: the message as an agent would UPLOAD it (MSG_OUT: id, to,
  -- priority, expires_ms, props, body) must leave max_frame - 1024 for what delivery adds
  v_wire := 16 + 2 + octet_length(p_to) + 1 + 8 + octet_length(v_props) + 4
            + octet_length(v_body);
  IF v_wire > v_max_frame - 1024 THEN
    RAISE EXCEPTION 'qa_send: too_large: the message is % bytes on the wire, over max_frame '
      '(%) less 1024', v_wire, v_max_frame USING ERRCODE = '54000';
  END IF;
  INSERT INTO qa_agents (agent_id, first_seen_ms) VALUES (rcpt, now_ms)
  ON CONFLICT (agent_id) DO NOTHING;
  INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority, created_ms,
                           expires_ms, props, body, status_ms)
  VALUES (new_id, p_from, false, rcpt, q, p_priority, now_ms, p_expires_ms,
          v_props, v_body, now_ms)
  RETURNING qa_messages.seq INTO new_seq;
  PERFORM pg_notify('qa_send', rcpt || ' ' || new_id::text || ' ' || now_ms::text);
  RETURN QUERY SELECT new_id, new_seq;
END $$;
