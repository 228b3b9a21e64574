-- Server-side send (gateway.md "Store"): validates, stores and NOTIFYs qa_send so that
-- the gateways push it like an uploaded message.
CREATE OR REPLACE FUNCTION qa_send(p_to text, p_body text, p_from text DEFAULT 'server',
    p_priority integer DEFAULT 4, p_expires_ms bigint DEFAULT 0,
    p_props jsonb DEFAULT '{}'::jsonb)
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
  INSERT INTO qa_agents (agent_id, first_seen_ms) VALUES (rcpt, now_ms)
  ON CONFLICT (agent_id) DO NOTHING;
  INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority, created_ms,
                           expires_ms, props, body, status_ms)
  VALUES (new_id, p_from, false, rcpt, q, p_priority, now_ms, p_expires_ms,
          qa_props_encode(k, v), convert_to(p_body, 'UTF8'), now_ms)
  RETURNING qa_messages.seq INTO new_seq;
  PERFORM pg_notify('qa_send', rcpt || ' ' || new_id::text || ' ' || now_ms::text);
  RETURN QUERY SELECT new_id, new_seq;
END $$;
