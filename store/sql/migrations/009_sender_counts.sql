-- 9: per-sender pending counts (issue 16: [store] max_pending_per_sender, result quota;
-- docs/design.md "Quota without counting rows"). Kept like the per-recipient ones of
-- migration 8: a sender's pending messages = qa_sender_in.n - qa_sender_out.n, counting
-- only messages an agent uploaded (sender_is_agent; server-side sends and status notes are
-- neither counted nor refused). The same statement triggers keep them (qa_count_ins,
-- qa_count_upd, qa_count_del, qa_count_trunc); qa_upload_group and qa_ack_group count their
-- own rows. Two tables for the same reason as migration 8: an upload locks its senders'
-- qa_sender_in rows, an acknowledgement updates qa_sender_out, neither waits for the other.
CREATE TABLE qa_sender_in (sender text PRIMARY KEY, n bigint NOT NULL)
  WITH (fillfactor = 50);
CREATE TABLE qa_sender_out (sender text PRIMARY KEY, n bigint NOT NULL)
  WITH (fillfactor = 50);
-- No writer may slip between the initial count and the triggers (already counting senders:
-- the functions were replaced earlier in this transaction).
LOCK TABLE qa_messages IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO qa_sender_in (sender, n)
  SELECT sender, count(*) FROM qa_messages WHERE status = 1 AND sender_is_agent
   GROUP BY sender;
