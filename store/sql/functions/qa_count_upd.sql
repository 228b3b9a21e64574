-- Statement trigger AFTER UPDATE ON qa_messages: a status change away from pending counts
-- out, back to pending counts in, per recipient and, for an agent's messages, per sender
-- (migration 9); not those of qa_ack_group, which counts its own.
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
  SELECT array_agg(t.sender), array_agg(t.n) INTO r, k
    FROM (SELECT o.sender, count(*) AS n FROM ot o JOIN nt n ON n.seq = o.seq
           WHERE o.status = 1 AND n.status <> 1 AND o.sender_is_agent GROUP BY o.sender) t;
  IF r IS NOT NULL THEN PERFORM qa_count_sender_add('out', r, k); END IF;
  SELECT array_agg(t.sender), array_agg(t.n) INTO r, k
    FROM (SELECT n.sender, count(*) AS n FROM ot o JOIN nt n ON n.seq = o.seq
           WHERE o.status <> 1 AND n.status = 1 AND n.sender_is_agent GROUP BY n.sender) t;
  IF r IS NOT NULL THEN PERFORM qa_count_sender_add('in', r, k); END IF;
  RETURN NULL;
END $$;
