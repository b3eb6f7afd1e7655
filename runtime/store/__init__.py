"""Run records: the run store (SQLModel on SQLite or Postgres), its fast inserts, the record writer, and
the schema migrations. Knows nothing of Redis or of the processes above it."""
