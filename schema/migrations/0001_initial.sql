-- Users, projects, agents, runs, events, reports and per-run score counters.
-- Internal keys are bigint identities; the `public_id` columns are what the API shows.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id     text NOT NULL UNIQUE,
    email         text NOT NULL,
    name          text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE projects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id   text NOT NULL UNIQUE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    slug        text NOT NULL,
    description text NOT NULL DEFAULT '',
    base_url    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Slugs are unique per owner, so two users may both have `pulsegrid-api`.
CREATE UNIQUE INDEX projects_user_slug_key ON projects (user_id, slug);
CREATE INDEX projects_user_id_idx ON projects (user_id, id DESC);

CREATE TABLE agents (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id    text NOT NULL UNIQUE,
    project_id   bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     text NOT NULL UNIQUE,
    last_seen_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_project_id_idx ON agents (project_id, id DESC);

CREATE TABLE runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id   text NOT NULL UNIQUE,
    project_id  bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    agent_id    bigint REFERENCES agents (id) ON DELETE SET NULL,
    status      text NOT NULL DEFAULT 'created'
                CHECK (status IN ('created', 'running', 'finished', 'failed', 'cancelled')),
    target_url  text NOT NULL,
    method      text NOT NULL,
    scenario    text NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_project_id_idx ON runs (project_id, id DESC);
CREATE INDEX runs_agent_id_idx ON runs (agent_id, id DESC);
CREATE INDEX runs_status_idx ON runs (project_id, status, id DESC);

-- One row per run, created with the run. Workers add to the counters in the
-- transaction that inserts the events; `processed_events` counts every event of a
-- newly processed stream entry, inserted or already present, so ingest's accepted
-- count minus this is what is still in flight.
CREATE TABLE run_scores (
    run_id           bigint PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    processed_events bigint NOT NULL DEFAULT 0,
    info             bigint NOT NULL DEFAULT 0,
    warning          bigint NOT NULL DEFAULT 0,
    error            bigint NOT NULL DEFAULT 0,
    critical         bigint NOT NULL DEFAULT 0,
    data_loss        bigint NOT NULL DEFAULT 0,
    duplicate        bigint NOT NULL DEFAULT 0,
    timeout          bigint NOT NULL DEFAULT 0,
    recovery         bigint NOT NULL DEFAULT 0,
    score            smallint NOT NULL DEFAULT 100,
    grade            text NOT NULL DEFAULT 'A',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id   text NOT NULL UNIQUE,
    run_id      bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message     text NOT NULL DEFAULT '',
    payload     jsonb,
    occurred_at timestamptz,
    received_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The idempotency key: an agent that re-sends an event with the same id cannot
-- insert it twice. It also serves the per-run listing in insertion order.
CREATE UNIQUE INDEX events_run_event_id_key ON events (run_id, event_id);
CREATE INDEX events_run_id_idx ON events (run_id, id);

CREATE TABLE reports (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id  text NOT NULL UNIQUE,
    run_id     bigint NOT NULL UNIQUE REFERENCES runs (id) ON DELETE CASCADE,
    summary    text NOT NULL,
    raw_json   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Stream entries whose events were committed. A redelivered entry finds its id here
-- and is acknowledged without being counted again.
CREATE TABLE stream_entries_done (
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
CREATE INDEX stream_entries_done_created_at_idx ON stream_entries_done (created_at);
