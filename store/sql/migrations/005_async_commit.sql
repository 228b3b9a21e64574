-- 5: FETCH and DELIVER_ACK commit asynchronously (qa_fetch_async, qa_ack_async: functions only).
SELECT 1;
