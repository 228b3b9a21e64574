-- HELLO: records the agent; returns the known workers (for primary
-- resolution), its pending count and the router's recorded assignment.
-- synchronous_commit off for its transaction (issue 18): nothing acknowledged
-- depends on this row (first/last HELLO, the primary sent, the last worker);
-- a PostgreSQL crash may forget the last few, and the agent's next HELLO
-- writes them again. With it on, a worker's HELLOs (one store connection)
-- waited for a WAL flush each: a node loss's reconnect storm went at the
-- disk's flush rate.
CREATE OR REPLACE FUNCTION qa_hello(p_agent text, p_primary text, p_worker text, p_now bigint)
RETURNS TABLE (name text, advertise text, tls boolean, pending bigint, assigned text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  n bigint;
  asg text;
BEGIN
  PERFORM set_config('plan_cache_mode', 'force_generic_plan', true); -- see qa_upload_group
  PERFORM set_config('synchronous_commit', 'off', true);
  INSERT INTO qa_agents AS a (agent_id, first_seen_ms, last_hello_ms, primary_sent, last_worker)
  VALUES (p_agent, p_now, p_now, p_primary, p_worker)
  ON CONFLICT (agent_id) DO UPDATE
    SET last_hello_ms = p_now, primary_sent = p_primary, last_worker = p_worker
  RETURNING a.assigned INTO asg;
  -- The pending count from the counters (migration 8), not by counting rows;
  -- 0 when none of them is still live, so that no PUSH announces only
  -- expired messages.
  -- (a scalar subquery with ORDER BY ... LIMIT 1 in the pending index's order, not EXISTS,
  -- which drops both: plpgsql's generic plan would then scan the table for an agent with
  -- nothing pending whenever a few recipients hold most of the pending messages)
  n := CASE WHEN (SELECT 1 FROM qa_messages m
                   WHERE m.recipient = p_agent AND m.status = 1
                     AND (m.expires_ms = 0 OR m.expires_ms > p_now)
                   ORDER BY m.priority DESC, m.seq LIMIT 1) IS NOT NULL
            THEN greatest(qa_pending(p_agent), 1) ELSE 0 END;
  RETURN QUERY SELECT w.name, w.advertise, w.tls, n, coalesce(asg, '')
    FROM qa_workers w ORDER BY w.name;
END $$;
