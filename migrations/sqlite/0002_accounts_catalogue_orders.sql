-- Booleans are 0/1 integers: sqlx's Any driver cannot decode SQLite booleans.
-- Accounts and the catalogue: plain tables, not event-sourced (they are not money movements).
-- Instants are BIGINT milliseconds since the epoch so one set of queries serves both backends.
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    unionid      TEXT UNIQUE,
    phone        TEXT,
    country_code TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- One row per (mini-program, openid); several may point at one user merged by unionid.
-- session_key never leaves the server.
CREATE TABLE wechat_identities (
    appid       TEXT   NOT NULL,
    openid      TEXT   NOT NULL,
    user_id     TEXT   NOT NULL REFERENCES users (id),
    session_key TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (appid, openid)
);
CREATE INDEX wechat_identities_user_idx ON wechat_identities (user_id);

CREATE TABLE staff (
    id            TEXT PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    role          TEXT   NOT NULL CHECK (role IN ('admin', 'support')),
    created_at    BIGINT NOT NULL
);

CREATE TABLE products (
    sku        TEXT PRIMARY KEY,
    name       TEXT    NOT NULL,
    price_fen  BIGINT  NOT NULL CHECK (price_fen > 0),
    active     BIGINT  NOT NULL CHECK (active IN (0, 1)),
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- Read model of orders, kept by the orders projection in the append's own transaction.
CREATE TABLE orders_view (
    id             TEXT PRIMARY KEY,
    out_trade_no   TEXT   NOT NULL UNIQUE,
    user_id        TEXT   NOT NULL,
    openid         TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    total_fen      BIGINT NOT NULL,
    paid_fen       BIGINT NOT NULL,
    refunded_fen   BIGINT NOT NULL,
    channel        TEXT,
    transaction_id TEXT,
    items          TEXT   NOT NULL,
    note           TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    paid_at        BIGINT,
    updated_at     BIGINT NOT NULL,
    version        BIGINT NOT NULL
);
CREATE INDEX orders_view_user_idx ON orders_view (user_id, created_at);
CREATE INDEX orders_view_status_expiry_idx ON orders_view (status, expires_at);
CREATE INDEX orders_view_transaction_idx ON orders_view (transaction_id);
CREATE INDEX orders_view_created_idx ON orders_view (created_at);
