-- 4: router assignments (docs/design.md "Redis: routing state": Redis is never the only record): the
-- primary the router gave each agent that names none (qa_hello returns it, qa_assign records moves).
ALTER TABLE qa_agents ADD COLUMN assigned text;
