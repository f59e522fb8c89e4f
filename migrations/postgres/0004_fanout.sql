-- The fan-out of the log to workers (RabbitMQ or in-process) and the workers' own records.

-- Message ids each worker has handled, written with the effect they caused (exactly once in effect).
CREATE TABLE inbox (
    worker     TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (worker, message_id)
);

-- Messages a worker gave up on, with why (in-process runtime; RabbitMQ parks in queues).
CREATE TABLE parked_messages (
    worker     TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    event_type TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    parked_at  BIGINT NOT NULL,
    PRIMARY KEY (worker, message_id)
);

-- Duties that one engine process at a time holds (the outbox relay).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

-- wx.requestSubscribeMessage acceptances not used yet: one send each.
CREATE TABLE subscription_acceptances (
    user_id     TEXT   NOT NULL,
    template_id TEXT   NOT NULL,
    remaining   BIGINT NOT NULL CHECK (remaining >= 0),
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, template_id)
);

-- Subscribe messages, one per event and template: claimed (an acceptance spent) before the call to
-- WeChat, finished after it. A claim left unfinished by a crash is resumed, never claimed twice.
CREATE TABLE subscribe_sends (
    message_id  TEXT   NOT NULL,
    template_id TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    openid      TEXT   NOT NULL,
    order_id    TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    errcode     BIGINT,
    detail      TEXT,
    msgid       TEXT,
    claimed_at  BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (message_id, template_id)
);
CREATE INDEX subscribe_sends_order_idx ON subscribe_sends (order_id);

-- Consume calls made for an order's card, so a 40099 after a lost answer is known to be ours.
CREATE TABLE card_consume_attempts (
    order_id         TEXT PRIMARY KEY,
    card_id          TEXT   NOT NULL,
    code             TEXT   NOT NULL,
    first_attempt_at BIGINT NOT NULL,
    attempts         BIGINT NOT NULL
);

-- The card redeemed with an order (JSON of the aggregate's OrderCard), for lists and the API.
ALTER TABLE orders_view ADD COLUMN card TEXT;
