-- 10: new pending messages counted by a row trigger with a WHEN (store/sql/functions/
-- qa_count_ins_row.sql) instead of migration 8's statement trigger, whose transition table
-- PostgreSQL filled on every upload even though qa_upload_group counts its own rows.
-- DROP TRIGGER locks qa_messages against writers until this commits: no insert goes
-- uncounted in between. The counters themselves are unchanged.
DROP TRIGGER qa_messages_count_ins ON qa_messages;
CREATE TRIGGER qa_messages_count_ins_row AFTER INSERT ON qa_messages
  FOR EACH ROW
  WHEN (NEW.status = 1 AND current_setting('qa.counted', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION qa_count_ins_row();
