-- The dashboard counts a project's flagged runs and lists runs by risk flag. With the
-- project on the score row, both read only that project's index entries instead of
-- joining every run of the project to its score row.
ALTER TABLE run_scores ADD COLUMN project_id bigint REFERENCES projects (id) ON DELETE CASCADE;
UPDATE run_scores s SET project_id = r.project_id FROM runs r WHERE r.id = s.run_id;
ALTER TABLE run_scores ALTER COLUMN project_id SET NOT NULL;

-- Flag counts per project, read from the index alone.
CREATE INDEX run_scores_project_flags_idx ON run_scores (project_id)
    INCLUDE (data_loss, duplicate, timeout, recovery);
-- A project's runs with one flag set, newest first (run ids grow with time).
CREATE INDEX run_scores_data_loss_idx ON run_scores (project_id, run_id DESC) WHERE data_loss > 0;
CREATE INDEX run_scores_duplicate_idx ON run_scores (project_id, run_id DESC) WHERE duplicate > 0;
CREATE INDEX run_scores_timeout_idx ON run_scores (project_id, run_id DESC) WHERE timeout > 0;
CREATE INDEX run_scores_recovery_idx ON run_scores (project_id, run_id DESC) WHERE recovery > 0;
