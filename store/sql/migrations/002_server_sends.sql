-- 2: server-side sends and cancel (qa_send, qa_cancel: functions only).
SELECT 1;
