-- A FETCH found due messages of p_agent (store/agent.c st_next: its `due` column): they
-- expire now, their senders are told (qa_expire_seqs), in a transaction committed
-- asynchronously; the gateway then sends the FETCH again. Returns how many expired.
-- (FETCH was the plpgsql function qa_next, kept for nodes of the previous release.)
CREATE OR REPLACE FUNCTION qa_expire_due(p_agent text, p_now bigint) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN qa_expire_seqs(ARRAY(
    SELECT m.seq FROM qa_messages m
     WHERE m.recipient = p_agent AND m.status = 1 AND m.expires_ms <> 0
       AND m.expires_ms <= p_now), p_now);
END $$;
