-- Records a batch of router moves (docs/design.md "Redis: routing state": Redis is never the only record).
CREATE OR REPLACE FUNCTION qa_assign(p_agents text[], p_primaries text[]) RETURNS integer
LANGUAGE sql AS $$
  WITH u AS (UPDATE qa_agents a SET assigned = x.p
    FROM unnest(p_agents, p_primaries) AS x(a, p)
    WHERE a.agent_id = x.a RETURNING 1)
  SELECT count(*)::integer FROM u;
$$;
