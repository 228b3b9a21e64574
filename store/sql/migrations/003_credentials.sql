-- 3: agent credentials (docs/operations.md "Agent credentials"): only the SHA-256 of each token is kept.
CREATE TABLE qa_credentials (
  agent_id text PRIMARY KEY,
  token_sha256 bytea NOT NULL CHECK (octet_length(token_sha256) = 32),
  created_ms bigint NOT NULL);
