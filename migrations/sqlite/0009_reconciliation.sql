-- Reconciliation against WeChat Pay's bills (issue 12): the latest report of each Beijing day
-- (`YYYY-MM-DD`), as JSON, replaced by each run of that day. The findings on our orders are
-- events in the log (`ReconciliationDiscrepancy`); this table is only the day's summary.
CREATE TABLE reconciliation_reports (
    bill_date TEXT   PRIMARY KEY,
    status    TEXT   NOT NULL,
    runs      BIGINT NOT NULL,
    ran_at    BIGINT NOT NULL,
    report    TEXT   NOT NULL
);
