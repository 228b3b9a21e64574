-- 7: qa_purge picks its batch through qa_messages_final (functions only).
SELECT 1;
