-- The pending counters (migration 8): adds p_ns[i] to p_recipients[i]'s qa_pending_in
-- (p_side 'in') or qa_pending_out row, locking the counter rows in recipient order so that
-- two transactions never lock them in opposite orders.
CREATE OR REPLACE FUNCTION qa_count_add(p_side text, p_recipients text[], p_ns bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  IF p_side = 'in' THEN
    INSERT INTO qa_pending_in AS c (recipient, n)
    SELECT r, k FROM unnest(p_recipients, p_ns) AS x(r, k) ORDER BY r
    ON CONFLICT (recipient) DO UPDATE SET n = c.n + excluded.n;
  ELSE
    INSERT INTO qa_pending_out AS c (recipient, n)
    SELECT r, k FROM unnest(p_recipients, p_ns) AS x(r, k) ORDER BY r
    ON CONFLICT (recipient) DO UPDATE SET n = c.n + excluded.n;
  END IF;
END $$;
