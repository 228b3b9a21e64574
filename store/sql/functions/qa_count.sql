-- The triggers behind qa_pending_in / qa_pending_out (migration 8): one
-- statement of qa_messages adds its rows' changes per recipient, locking the
-- counter rows in recipient order so that two transactions never lock them in
-- opposite orders.
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

CREATE OR REPLACE FUNCTION qa_count_ins() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r text[];
  k bigint[];
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  -- qa_upload_group counts its own rows as it decides the quota
  IF current_setting('qa.counted', true) = 'on' THEN RETURN NULL; END IF;
  SELECT array_agg(t.recipient), array_agg(t.n) INTO r, k
    FROM (SELECT recipient, count(*) AS n FROM nt WHERE status = 1 GROUP BY recipient) t;
  IF r IS NOT NULL THEN PERFORM qa_count_add('in', r, k); END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION qa_count_upd() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r text[];
  k bigint[];
BEGIN
  -- qa_ack_group counts its own rows
  IF current_setting('qa.counted', true) = 'on' THEN RETURN NULL; END IF;
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  SELECT array_agg(t.recipient), array_agg(t.n) INTO r, k
    FROM (SELECT o.recipient, count(*) AS n FROM ot o JOIN nt n ON n.seq = o.seq
           WHERE o.status = 1 AND n.status <> 1 GROUP BY o.recipient) t;
  IF r IS NOT NULL THEN PERFORM qa_count_add('out', r, k); END IF;
  SELECT array_agg(t.recipient), array_agg(t.n) INTO r, k
    FROM (SELECT n.recipient, count(*) AS n FROM ot o JOIN nt n ON n.seq = o.seq
           WHERE o.status <> 1 AND n.status = 1 GROUP BY n.recipient) t;
  IF r IS NOT NULL THEN PERFORM qa_count_add('in', r, k); END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION qa_count_del() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r text[];
  k bigint[];
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  SELECT array_agg(t.recipient), array_agg(t.n) INTO r, k
    FROM (SELECT recipient, count(*) AS n FROM ot WHERE status = 1 GROUP BY recipient) t;
  IF r IS NOT NULL THEN PERFORM qa_count_add('out', r, k); END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION qa_count_trunc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  DELETE FROM qa_pending_in;
  DELETE FROM qa_pending_out;
  RETURN NULL;
END $$;

-- A recipient's pending messages (expired ones not yet marked included),
-- read without counting rows.
CREATE OR REPLACE FUNCTION qa_pending(p_recipient text) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT n FROM qa_pending_in WHERE recipient = p_recipient), 0)
       - coalesce((SELECT n FROM qa_pending_out WHERE recipient = p_recipient), 0);
$$;
