-- The per-sender pending counters (migration 9): adds p_ns[i] to p_senders[i]'s
-- qa_sender_in (p_side 'in') or qa_sender_out row, in sender order (no deadlock between two
-- transactions). Callers lock the recipients' counters first, then the senders'.
CREATE OR REPLACE FUNCTION qa_count_sender_add(p_side text, p_senders text[], p_ns bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  IF p_side = 'in' THEN
    INSERT INTO qa_sender_in AS c (sender, n)
    SELECT s, k FROM unnest(p_senders, p_ns) AS x(s, k) ORDER BY s
    ON CONFLICT (sender) DO UPDATE SET n = c.n + excluded.n;
  ELSE
    INSERT INTO qa_sender_out AS c (sender, n)
    SELECT s, k FROM unnest(p_senders, p_ns) AS x(s, k) ORDER BY s
    ON CONFLICT (sender) DO UPDATE SET n = c.n + excluded.n;
  END IF;
END $$;
