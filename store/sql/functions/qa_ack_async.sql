-- qa_ack with synchronous_commit off for its transaction (migration 5): a PostgreSQL crash
-- may forget an acknowledgement of the last moments; the message is delivered again, harmless by id.
CREATE OR REPLACE FUNCTION qa_ack_async(p_agent text, p_seqs bigint[], p_now bigint) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN qa_ack(p_agent, p_seqs, p_now);
END $$;
