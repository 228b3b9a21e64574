-- Row trigger AFTER INSERT ON qa_messages (migration 10), for each new pending message
-- that no function counted itself (its WHEN: status 1 and qa.counted not on): one more
-- pending for its recipient and, for an agent's message, its sender (migrations 8 and 9).
-- A row trigger with a WHEN, not a statement trigger with a transition table: PostgreSQL
-- captures a transition table for every statement that inserts, even one whose rows the
-- trigger then ignores, and qa_upload_group, which counts its own rows, paid ~3.7 µs a
-- message for that (issue 15's profile). Writers of one row (qa_send) or an operator's own
-- SQL land here; a bulk operator INSERT counts row by row (correct, slower).
CREATE OR REPLACE FUNCTION qa_count_ins_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO qa_pending_in AS c (recipient, n) VALUES (NEW.recipient, 1)
  ON CONFLICT (recipient) DO UPDATE SET n = c.n + 1;
  IF NEW.sender_is_agent THEN -- after the recipient's (the order every writer locks them in)
    INSERT INTO qa_sender_in AS c (sender, n) VALUES (NEW.sender, 1)
    ON CONFLICT (sender) DO UPDATE SET n = c.n + 1;
  END IF;
  RETURN NULL;
END $$;
