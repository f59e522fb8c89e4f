-- The expiry sweep and the payment poller only ever look at unpaid orders: their indexes hold
-- only those rows (a few hundred in a shop of millions of orders), so an order that is paid,
-- closed or refunded no longer costs an entry in each of them on every change, and a rebuild
-- no longer builds two indexes over every order. The back-office's status search, which used
-- the first column of those two, gets the index it wants: status, then newest first.
DROP INDEX orders_view_status_expiry_idx;
DROP INDEX orders_view_payment_requested_idx;
CREATE INDEX orders_view_status_created_idx ON orders_view (status, created_at);
CREATE INDEX orders_view_expiry_due_idx ON orders_view (expires_at, id)
    WHERE status = 'pending_payment';
CREATE INDEX orders_view_payment_due_idx ON orders_view (payment_requested_at)
    WHERE status = 'pending_payment';
