-- Statement trigger AFTER DELETE ON qa_messages: a deleted pending message counts out, for
-- its recipient and (an agent's message) its sender (migration 9).
CREATE OR REPLACE FUNCTION qa_count_del() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r text[];
  k bigint[];
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  SELECT array_agg(t.recipient), array_agg(t.n) INTO r, k
    FROM (SELECT recipient, count(*) AS n FROM ot WHERE status = 1 GROUP BY recipient) t;
  IF r IS NOT NULL THEN PERFORM qa_count_add('out', r, k); END IF;
  SELECT array_agg(t.sender), array_agg(t.n) INTO r, k
    FROM (SELECT sender, count(*) AS n FROM ot WHERE status = 1 AND sender_is_agent
           GROUP BY sender) t;
  IF r IS NOT NULL THEN PERFORM qa_count_sender_add('out', r, k); END IF;
  RETURN NULL;
END $$;
