-- Prepay ids handed out by WeChat Pay (valid 2 h), so a repeated pay call reuses a valid one.
CREATE TABLE prepays (
    out_trade_no TEXT   NOT NULL,
    channel      TEXT   NOT NULL,
    prepay_id    TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (out_trade_no, channel)
);

-- Read model of refunds, kept by the orders projection: what the refund poller looks at.
CREATE TABLE refunds_view (
    out_refund_no TEXT PRIMARY KEY,
    order_id      TEXT   NOT NULL,
    amount_fen    BIGINT NOT NULL,
    status        TEXT   NOT NULL,
    requested_at  BIGINT NOT NULL,
    finished_at   BIGINT
);
CREATE INDEX refunds_view_status_idx ON refunds_view (status, requested_at);
CREATE INDEX refunds_view_order_idx ON refunds_view (order_id);

-- When an unpaid order (`pay:<order id>`) or a processing refund (`refund:<out_refund_no>`) is
-- next asked about at WeChat Pay: the pollers back off per subject.
CREATE TABLE payment_checks (
    subject       TEXT PRIMARY KEY,
    attempts      BIGINT NOT NULL,
    next_check_at BIGINT NOT NULL
);

ALTER TABLE orders_view ADD COLUMN payment_requested_at BIGINT;
CREATE INDEX orders_view_payment_requested_idx ON orders_view (status, payment_requested_at);
