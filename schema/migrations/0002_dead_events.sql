-- Events that PostgreSQL refused although ingest accepted them (a value out of a
-- type's range, say). They are kept here, in the transaction that persisted the rest
-- of their stream entry, instead of failing the entry again and again.
ALTER TABLE run_scores ADD COLUMN dead_lettered_events bigint NOT NULL DEFAULT 0;

CREATE TABLE dead_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    event      text NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_events_run_id_idx ON dead_events (run_id);
