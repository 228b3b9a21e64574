-- A recipient's pending messages (expired ones not yet marked included),
-- read without counting rows.
CREATE OR REPLACE FUNCTION qa_pending(p_recipient text) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT n FROM qa_pending_in WHERE recipient = p_recipient), 0)
       - coalesce((SELECT n FROM qa_pending_out WHERE recipient = p_recipient), 0);
$$;
