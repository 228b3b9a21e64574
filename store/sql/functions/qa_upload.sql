-- One sender's UPLOAD batch: qa_upload_group with one sender (kept for nodes of
-- an older release during a rolling upgrade, and for operators' scripts).
CREATE OR REPLACE FUNCTION qa_upload(p_sender text, p_now bigint, p_max_pending integer,
    p_ids uuid[], p_rcpt text[], p_queue text[], p_prio smallint[], p_expires bigint[],
    p_flag smallint[], p_props bytea[], p_body bytea[])
RETURNS TABLE (ord integer, result smallint) LANGUAGE sql AS $$
  SELECT g.ord, g.result
    FROM qa_upload_group(p_now, p_max_pending,
                         array_fill(p_sender, ARRAY[cardinality(p_ids)]), p_ids, p_rcpt,
                         p_queue, p_prio, p_expires, p_flag, p_props, p_body) g;
$$;
