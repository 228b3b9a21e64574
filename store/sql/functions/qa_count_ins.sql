-- Statement trigger AFTER INSERT ON qa_messages: counts the new pending messages per
-- recipient and, for an agent's messages, per sender (migration 9); not those of
-- qa_upload_group, which counts its own.
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
  SELECT array_agg(t.sender), array_agg(t.n) INTO r, k
    FROM (SELECT sender, count(*) AS n FROM nt WHERE status = 1 AND sender_is_agent
           GROUP BY sender) t;
  IF r IS NOT NULL THEN PERFORM qa_count_sender_add('in', r, k); END IF;
  RETURN NULL;
END $$;
