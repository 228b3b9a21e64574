-- 1: tables and indexes of QASync v1 (the operations are store/sql/functions/).
CREATE TABLE qa_workers (
  name text PRIMARY KEY,
  node text NOT NULL,
  advertise text NOT NULL,
  tls boolean NOT NULL,
  capacity integer NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE qa_agents (
  agent_id text PRIMARY KEY,
  first_seen_ms bigint NOT NULL,
  last_hello_ms bigint,
  primary_sent text,
  last_worker text);
CREATE TABLE qa_messages (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE,
  sender text NOT NULL,
  sender_is_agent boolean NOT NULL,
  recipient text NOT NULL,
  queue text NOT NULL,
  priority smallint NOT NULL,
  created_ms bigint NOT NULL,
  expires_ms bigint NOT NULL,
  props bytea NOT NULL,
  body bytea NOT NULL,
  status smallint NOT NULL DEFAULT 1,
  status_ms bigint NOT NULL,
  delivery_count integer NOT NULL DEFAULT 0,
  held_by bigint);
CREATE INDEX qa_messages_pending ON qa_messages (recipient, priority DESC, seq) WHERE status = 1;
CREATE INDEX qa_messages_final ON qa_messages (status_ms) WHERE status <> 1;
