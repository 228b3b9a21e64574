-- DELIVER_ACK: only this agent's delivered, still pending messages.
CREATE OR REPLACE FUNCTION qa_ack(p_agent text, p_seqs bigint[], p_now bigint) RETURNS integer
LANGUAGE sql AS $$
  WITH u AS (
    UPDATE qa_messages m SET status = 20, status_ms = p_now, held_by = NULL
     WHERE m.seq = ANY (p_seqs) AND m.recipient = p_agent AND m.status + 0 = 1 -- see qa_ack_group
       AND m.delivery_count > 0
    RETURNING 1)
  SELECT count(*)::integer FROM u;
$$;
