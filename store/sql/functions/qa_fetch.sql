-- One FETCH: expire what is due, then hold the most urgent, oldest pending messages this
-- session does not hold yet, as many as fit in p_max_count and p_max_bytes (at least one),
-- counting each MSG_IN's exact encoded size including the two server-set properties.
CREATE OR REPLACE FUNCTION qa_fetch(p_agent text, p_session bigint, p_max_count integer,
    p_max_bytes bigint, p_now bigint)
RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,
    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,
    more boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  picked bigint[];
  n_cand integer;
BEGIN
  PERFORM qa_expire_seqs(ARRAY(
    SELECT m.seq FROM qa_messages m
     WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0
       AND m.expires_ms <= p_now), p_now);
  WITH cand AS (
    SELECT m.seq, m.priority,
           8 + 16 + 2 + octet_length(m.sender) + 2 + octet_length(m.queue) + 1 + 8 + 8
           + octet_length(m.props) + (2 + 14 + 2 + octet_length(m.sender))
           + (2 + 17 + 2 + length((m.delivery_count + 1)::text)) + 4 + octet_length(m.body) AS sz
      FROM qa_messages m
     WHERE m.recipient = p_agent AND m.status = 1 AND m.held_by IS DISTINCT FROM p_session
     ORDER BY m.priority DESC, m.seq
     LIMIT p_max_count + 1
     FOR UPDATE SKIP LOCKED
  ), run AS (
    SELECT c.seq, row_number() OVER w AS rn, sum(c.sz) OVER w AS cum
      FROM cand c WINDOW w AS (ORDER BY c.priority DESC, c.seq)
  )
  SELECT array_agg(r.seq), (SELECT count(*) FROM cand) INTO picked, n_cand
    FROM run r WHERE r.rn <= p_max_count AND (r.rn = 1 OR r.cum <= p_max_bytes);
  RETURN QUERY
  WITH upd AS (
    UPDATE qa_messages m SET held_by = p_session, delivery_count = m.delivery_count + 1
     WHERE m.seq = ANY (picked)
    RETURNING m.seq, m.id, m.sender, m.queue, m.priority, m.created_ms, m.expires_ms,
              m.props, m.body, m.delivery_count
  )
  SELECT u.seq, u.id, u.sender, u.queue, u.priority, u.created_ms, u.expires_ms, u.props,
         u.body, u.delivery_count, n_cand > coalesce(array_length(picked, 1), 0)
    FROM upd u ORDER BY u.priority DESC, u.seq;
END $$;
