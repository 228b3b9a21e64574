-- Retention: final messages older than keep_days go, in small batches picked through
-- qa_messages_final in status order, so that a batch costs two index scans whatever the
-- table's size and never holds locks for long.
CREATE OR REPLACE FUNCTION qa_purge(p_before bigint, p_limit integer) RETURNS integer
LANGUAGE sql AS $$
  WITH d AS (
    DELETE FROM qa_messages WHERE seq = ANY (ARRAY(
      SELECT m.seq FROM qa_messages m WHERE m.status <> 1 AND m.status_ms < p_before
       ORDER BY m.status_ms LIMIT p_limit FOR UPDATE SKIP LOCKED))
    RETURNING 1)
  SELECT count(*)::integer FROM d;
$$;
