-- FETCHes of many sessions in one statement (a read; store/agent.c st_fetch, grouped like
-- DELIVER_ACKs: one executor start-up and one round trip a group, however many FETCHes it
-- carries). Row i of the arrays is one FETCH: agent p_agent[i], not the seqs it holds
-- (p_held[i], an int8 array's text), at most p_count[i] messages and p_bytes[i] bytes.
-- For each, in order (ord = i), the rows one FETCH reads:
-- due: some of the agent's pending messages are due (a scalar subquery in
-- qa_messages_expiring_rcpt's order, not EXISTS, which would drop ORDER BY and LIMIT); then
-- nothing else is read (the gateway expires them and asks again) and the FETCH's one row
-- has NULL columns but due. Otherwise the most urgent, oldest pending messages except the
-- held ones, up to p_count[i] + 1, each with its exact MSG_IN size (the two server-set
-- properties included; ias_DeliveryCount is delivery_count + 1) and the running total cum;
-- a row whose total passes p_bytes[i] is left out, except the first such one (without its
-- body unless it is the first row); with no message, one row of NULLs. Every FETCH has at
-- least one row, its rows together, in delivery order (rn).
-- plpgsql, not a plain statement: a prepared statement over unnest() of its parameters is
-- planned afresh at every call (the generic plan's row estimate for unnest, 100, makes it
-- look dearer than every custom plan), which cost as much as the grouping saved.
CREATE OR REPLACE FUNCTION qa_fetch_group(p_now bigint, p_agent text[], p_held text[],
    p_count integer[], p_bytes bigint[])
RETURNS TABLE (seq bigint, id uuid, sender text, queue text, priority smallint,
    created_ms bigint, expires_ms bigint, props bytea, body bytea, delivery_count integer,
    rn bigint, cum bigint, due boolean, ord integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  RETURN QUERY
  SELECT w.seq, w.id, w.sender, w.queue, w.priority, w.created_ms, w.expires_ms, w.props,
         CASE WHEN w.rn = 1 OR w.cum <= t.max_bytes THEN w.body END, w.delivery_count,
         w.rn, w.cum, d.due, t.ord::integer
    FROM unnest(p_agent, p_held, p_count, p_bytes) WITH ORDINALITY
         AS t(agent, held, max_count, max_bytes, ord)
   CROSS JOIN LATERAL (
     SELECT (SELECT 1 FROM qa_messages m
              WHERE m.recipient = t.agent AND m.status = 1 AND m.expires_ms <> 0
                AND m.expires_ms <= p_now
              ORDER BY m.recipient, m.expires_ms LIMIT 1) IS NOT NULL AS due) d
    LEFT JOIN LATERAL (
     SELECT c.*, row_number() OVER o AS rn, sum(c.sz) OVER o AS cum
       FROM (SELECT m.seq, m.id, m.sender, m.queue, m.priority, m.created_ms,
                    m.expires_ms, m.props, m.body, m.delivery_count,
                    8 + 16 + 2 + octet_length(m.sender) + 2 + octet_length(m.queue) + 1
                    + 8 + 8 + octet_length(m.props) + (2 + 14 + 2 + octet_length(m.sender))
                    + (2 + 17 + 2 + length((m.delivery_count + 1)::text)) + 4
                    + octet_length(m.body) AS sz
               FROM qa_messages m
              WHERE m.recipient = t.agent AND m.status = 1
                AND m.seq <> ALL (t.held::bigint[])
                AND (m.expires_ms = 0 OR m.expires_ms > p_now)
              ORDER BY m.priority DESC, m.seq
              LIMIT t.max_count + 1) c
     WINDOW o AS (ORDER BY c.priority DESC, c.seq)) w
      ON NOT d.due AND (w.rn <= 2 OR w.cum - w.sz <= t.max_bytes)
   ORDER BY t.ord, w.rn;
END $$;
