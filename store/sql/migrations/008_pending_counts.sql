-- 8: pending counts without counting rows (docs/design.md "Quota").
-- Each recipient's pending messages = n_in - n_out: qa_pending_in counts the
-- messages that became pending (inserted with status 1), qa_pending_out those
-- that stopped being pending (a status change away from 1, or a delete). Both
-- only grow, and statement-level triggers on qa_messages keep them in the same
-- transactions that change the rows, whoever writes (an UPLOAD, qa_send, a
-- status note, expiry, cancel, an operator's own SQL). Two tables, not two
-- columns: an upload locks its recipients' qa_pending_in rows to decide the
-- quota, an acknowledgement updates qa_pending_out, and neither waits for the
-- other. Reading n_out without its lock is safe for the quota: a stale n_out
-- is smaller, so the pending count read is larger, never smaller.
-- Half-full pages keep the counters' updates HOT.
CREATE TABLE qa_pending_in (recipient text PRIMARY KEY, n bigint NOT NULL)
  WITH (fillfactor = 50);
CREATE TABLE qa_pending_out (recipient text PRIMARY KEY, n bigint NOT NULL)
  WITH (fillfactor = 50);
-- No writer may slip between the initial count and the triggers.
LOCK TABLE qa_messages IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO qa_pending_in (recipient, n)
  SELECT recipient, count(*) FROM qa_messages WHERE status = 1 GROUP BY recipient;
CREATE TRIGGER qa_messages_count_ins AFTER INSERT ON qa_messages
  REFERENCING NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION qa_count_ins();
CREATE TRIGGER qa_messages_count_upd AFTER UPDATE ON qa_messages
  REFERENCING OLD TABLE AS ot NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION qa_count_upd();
CREATE TRIGGER qa_messages_count_del AFTER DELETE ON qa_messages
  REFERENCING OLD TABLE AS ot FOR EACH STATEMENT EXECUTE FUNCTION qa_count_del();
CREATE TRIGGER qa_messages_count_trunc AFTER TRUNCATE ON qa_messages
  FOR EACH STATEMENT EXECUTE FUNCTION qa_count_trunc();
-- A FETCH finds its agent's due messages without reading the agent's other pending ones.
CREATE INDEX qa_messages_expiring_rcpt ON qa_messages (recipient, expires_ms)
  WHERE status = 1 AND expires_ms <> 0;
