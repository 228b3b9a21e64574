-- 6: message lifecycle: due messages are found through qa_messages_expiring (qa_expire).
CREATE INDEX qa_messages_expiring ON qa_messages (expires_ms)
  WHERE status = 1 AND expires_ms <> 0;
