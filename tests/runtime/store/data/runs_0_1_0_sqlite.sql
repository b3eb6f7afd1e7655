-- The run store as first-sip-runtime 0.1.0 created it on sqlite (SQLModel.metadata.create_all),
-- before migrations: no alembic_version table. Statements are separated by ';'.
CREATE TABLE runs (
	id VARCHAR(32) NOT NULL,
	function VARCHAR(200) NOT NULL,
	arguments JSON NOT NULL,
	status VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	max_attempts INTEGER NOT NULL,
	last_error TEXT,
	enqueued_at DATETIME NOT NULL,
	scheduled_for DATETIME,
	started_at DATETIME,
	finished_at DATETIME,
	result JSON,
	history JSON NOT NULL,
	replay_of VARCHAR(32),
	version BIGINT NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_runs_enqueued_at ON runs (enqueued_at);
CREATE INDEX ix_runs_function ON runs (function);
CREATE INDEX ix_runs_status ON runs (status);
