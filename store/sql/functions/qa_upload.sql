-- One sender's UPLOAD batch: qa_upload_group with one sender (kept for nodes of
-- an older release during a rolling upgrade, and for operators' scripts). Those nodes do
-- not know max_pending_per_sender: their uploads are counted per sender, never refused.
CREATE OR REPLACE FUNCTION qa_upload(p_sender text, p_now bigint, p_max_pending integer,
    p_ids uuid[], p_rcpt text[], p_queue text[], p_prio smallint[], p_expires bigint[],
    p_flag smallint[], p_props bytea[], p_body bytea[])
RETURNS TABLE (ord integer, result smallint) LANGUAGE sql AS $$
  -- an id repeated in the batch: a duplicate (flag 1), as qa_upload_group wants
  SELECT g.ord, g.result
    FROM qa_upload_group(p_now, p_max_pending, NULL,
                         array_fill(p_sender, ARRAY[cardinality(p_ids)]), p_ids, p_rcpt,
                         p_queue, p_prio, p_expires,
                         ARRAY(SELECT CASE WHEN row_number() OVER (PARTITION BY t.id ORDER BY t.o) > 1
                                           THEN 1 ELSE t.f END::smallint
                                 FROM unnest(p_ids, p_flag) WITH ORDINALITY AS t(id, f, o)
                                ORDER BY t.o),
                         p_props, p_body) g;
$$;
