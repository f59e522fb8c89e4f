-- Payments and refunds as staff search them (issue 11): kept by the orders projection in the
-- append's own transaction, rebuilt by `paystream rebuild-projections`, and filled from the log at
-- the next start on a database that already holds orders (`projection_backfills` below).

-- One row per payment attempt: a channel a payment was asked through (an order at that provider,
-- which the customer may pay), or money that arrived with no attempt left to fill (paid twice).
-- Rows only ever accumulate, in the order the events made them: attempt numbers them per order.
CREATE TABLE payments_view (
    order_id       TEXT   NOT NULL,
    attempt        BIGINT NOT NULL,
    out_trade_no   TEXT   NOT NULL,
    openid         TEXT   NOT NULL,
    channel        TEXT   NOT NULL,
    -- requested, closed (the order closed with nothing paid here), succeeded, or why the money
    -- that arrived went to review: amount_mismatch, paid_after_close, paid_twice.
    status         TEXT   NOT NULL,
    -- WeChat Pay's transaction, once money arrived.
    transaction_id TEXT,
    -- The money that arrived; until then the amount asked for (the order total).
    amount_fen     BIGINT NOT NULL,
    requested_at   BIGINT,
    paid_at        BIGINT,
    closed_at      BIGINT,
    -- paid_at, else requested_at: searches sort and filter on it, so a payment counts on the day
    -- its money arrived, as in the daily report.
    happened_at    BIGINT NOT NULL,
    PRIMARY KEY (order_id, attempt)
);
CREATE INDEX payments_view_happened_idx ON payments_view (happened_at, order_id, attempt);
CREATE INDEX payments_view_status_idx ON payments_view (status, happened_at);
CREATE INDEX payments_view_transaction_idx ON payments_view (transaction_id);
CREATE INDEX payments_view_out_trade_no_idx ON payments_view (out_trade_no);
CREATE INDEX payments_view_openid_idx ON payments_view (openid, happened_at);

-- Refunds already have a read model (0003, what the refund poller reads); staff searching them
-- need more of each refund. The defaults only hold until the backfill at the next start, which
-- rewrites every row from the log before the engine serves.
ALTER TABLE refunds_view ADD COLUMN out_trade_no TEXT NOT NULL DEFAULT '';
ALTER TABLE refunds_view ADD COLUMN reason TEXT;
-- WeChat Pay's refund id, once it reported success.
ALTER TABLE refunds_view ADD COLUMN refund_id TEXT;
ALTER TABLE refunds_view ADD COLUMN failure_reason TEXT;
-- The staff member who asked for it (their id), when a staff member did.
ALTER TABLE refunds_view ADD COLUMN requested_by TEXT;
CREATE INDEX refunds_view_requested_idx ON refunds_view (requested_at, out_refund_no);
CREATE INDEX refunds_view_out_trade_no_idx ON refunds_view (out_trade_no);

INSERT INTO projection_backfills (name) VALUES ('money_search');
