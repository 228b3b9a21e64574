-- TRUNCATE of qa_messages: the counters start again from nothing.
CREATE OR REPLACE FUNCTION qa_count_trunc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  DELETE FROM qa_pending_in;
  DELETE FROM qa_pending_out;
  DELETE FROM qa_sender_in;
  DELETE FROM qa_sender_out;
  RETURN NULL;
END $$;
