-- Staff management (issue 11): accounts can be disabled, and their sessions ended.
-- disabled: 0/1 (booleans are integers, see 0002). A disabled account cannot log in and its
-- tokens are refused.
-- session_version: staff tokens carry the value they were issued under; a password reset or a
-- disable bumps it, which ends every session issued before.
ALTER TABLE staff ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
ALTER TABLE staff ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0;
