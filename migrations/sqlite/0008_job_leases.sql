-- Pollers that share their work across engine processes on one database (payment queries, refund
-- follow-ups, expiry closes): every `payment_checks` row is now a job, claimed with a lease before
-- its work and released with its next due time (the back-off) or deleted once settled. A holder that
-- dies only delays its job until the lease runs out. The rows are kept from the read models, which
-- the log keeps: the log stays the truth, these rows only say who asks WeChat about what, and when.
ALTER TABLE payment_checks ADD COLUMN leased_until BIGINT;
ALTER TABLE payment_checks ADD COLUMN leased_by TEXT;
CREATE INDEX payment_checks_due_idx ON payment_checks (next_check_at);

-- Scheduled runs done once across engine processes (the daily reconciliation, `reconcile:2026-12-01`):
-- claimed with a lease, retaken when the holder dies before finishing, never run again once finished.
CREATE TABLE job_runs (
    run_key      TEXT PRIMARY KEY,
    leased_by    TEXT   NOT NULL,
    leased_until BIGINT NOT NULL,
    -- How many times it was claimed: more than 1 means a holder died (or gave it back) before finishing.
    claims       BIGINT NOT NULL,
    claimed_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
