-- The lifecycle job's step: at most p_limit due messages, skipping rows a session holds
-- locked at this moment (the next run takes them).
CREATE OR REPLACE FUNCTION qa_expire(p_now bigint, p_limit integer) RETURNS integer
LANGUAGE sql AS $$
  SELECT qa_expire_seqs(ARRAY(
    SELECT m.seq FROM qa_messages m
     WHERE m.status = 1 AND m.expires_ms <> 0 AND m.expires_ms <= p_now
     ORDER BY m.expires_ms LIMIT p_limit FOR UPDATE SKIP LOCKED), p_now);
$$;
