-- qa_fetch with synchronous_commit off for its transaction (migration 5): a crash may
-- forget a hold of the last moments, which only means the message is delivered again.
CREATE OR REPLACE FUNCTION qa_fetch_async(p_agent text, p_session bigint, p_max_count integer,
    p_max_bytes bigint, p_now bigint)
RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,
    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,
    more boolean)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY SELECT * FROM qa_fetch(p_agent, p_session, p_max_count, p_max_bytes, p_now);
END $$;
