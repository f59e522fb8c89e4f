-- Back-office read models, kept by the orders projection in the append's own transaction and
-- rebuilt from the log by `paystream rebuild-projections`. On a database that already holds
-- orders the engine fills them from the log at its next start (`projection_backfills` below).

-- Orders awaiting a staff decision: status needs_review, or a flag (a refund on a consumed card,
-- a card not consumed, a failed refund). A row leaves when staff resolve the review.
CREATE TABLE review_queue (
    order_id     TEXT PRIMARY KEY,
    out_trade_no TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    -- The open reasons in words, joined.
    reason       TEXT   NOT NULL,
    -- JSON array of the open reasons: {"kind", "text", "at", …details}.
    reasons      TEXT   NOT NULL,
    -- When the oldest open reason arose (ms since the epoch).
    since        BIGINT NOT NULL,
    paid_fen     BIGINT NOT NULL,
    total_fen    BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX review_queue_since_idx ON review_queue (since, order_id);

-- Money per Beijing day (UTC+8) and channel. Payments count on the day of their paid_at (every
-- payment that arrived, matching or not: it is money on the merchant account), refunds on the day
-- WeChat Pay confirmed them. orders_paid counts orders whose first money arrived that day;
-- unmatched_fen is the part of gross_fen that arrived outside the happy path (in review).
CREATE TABLE daily_totals (
    day           TEXT   NOT NULL,
    channel       TEXT   NOT NULL,
    orders_paid   BIGINT NOT NULL,
    gross_fen     BIGINT NOT NULL,
    refunded_fen  BIGINT NOT NULL,
    unmatched_fen BIGINT NOT NULL,
    PRIMARY KEY (day, channel)
);

-- Read models that must be filled from the log once (at the next start) because they were added
-- to a database that may already hold orders. The engine rebuilds them and deletes the row.
CREATE TABLE projection_backfills (
    name TEXT PRIMARY KEY
);
INSERT INTO projection_backfills (name) VALUES ('backoffice');
