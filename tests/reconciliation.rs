//! Reconciliation of a day against WeChat Pay's bill, end to end: the engine's own simulator
//! pays, refunds and serves the bill (told to lose a notify, change an amount, leave a payment
//! and a refund out), the engine's reconciler fetches it through the real v3 client (signed
//! request, SHA1, CSV), compares it with the log and acts.

mod common;

use common::{count, spawn_app, TestApp};
use paystream::reconcile_job::{left_window, DailyJob};
use paystream_engine::beijing;
use paystream_engine::db::Backend;
use paystream_engine::reconciliation::{Action, LineKind, Quiet, Report, ReportStatus};
use paystream_engine::runs::Runs;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PRICE: i64 = 1250;

/// A call to the simulator's WeChat Pay control API that must succeed.
async fn control(app: &TestApp, path: &str, body: Value) -> Value {
    app.sandbox(&format!("/wechatpay{path}"), body).await
}

/// Places an order of 2 × 12.50 for `user` and asks to pay it through v3.
async fn ordered(app: &TestApp, user: &str) -> (String, Value) {
    let (token, _) = app.login(user).await;
    let order = app.place_order(&token, "tea", 2).await;
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(&order)),
            Some(&token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (token, order)
}

/// The customer pays; the notify reaches the engine.
async fn paid(app: &TestApp, user: &str) -> (String, Value) {
    let (token, order) = ordered(app, user).await;
    control(app, "/pay", json!({ "out_trade_no": out_trade_no(&order) })).await;
    let order = app
        .wait_for_order(&token, &order, |o| o["status"] == "paid")
        .await;
    (token, order)
}

/// [`ordered`], then paid at WeChat Pay with the notification lost: only the bill (and a query)
/// know.
async fn paid_unheard(app: &TestApp, user: &str) -> (String, Value) {
    let (token, order) = ordered(app, user).await;
    control(
        app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "notify": false }),
    )
    .await;
    (token, order)
}

/// The day after `today` (Beijing) at `hour_utc`:30 UTC — 10:30 Beijing for `2`.
fn tomorrow_at(today: chrono::NaiveDate, hour_utc: u32) -> chrono::DateTime<chrono::Utc> {
    (today + chrono::Days::new(1))
        .and_hms_opt(hour_utc, 30, 0)
        .unwrap()
        .and_utc()
}

/// The daily job of one engine instance (`holder`), with `RECONCILE_AT` 10:00.
fn daily_job(app: &TestApp, holder: &str) -> DailyJob {
    let running = app.running();
    DailyJob::new(
        running.reconciler.clone(),
        Runs::with_holder(running.db.clone(), holder),
        chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    )
}

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

async fn reconcile_today(app: &TestApp) -> Report {
    let today = beijing::day(chrono::Utc::now());
    app.running()
        .reconciler
        .run(today, chrono::Utc::now(), &Quiet)
        .await
        .expect("reconciled")
}

fn line<'a>(
    report: &'a Report,
    kind: LineKind,
    order: &Value,
) -> &'a paystream_engine::reconciliation::ReportLine {
    report
        .lines
        .iter()
        .find(|l| l.kind == kind && l.out_trade_no == out_trade_no(order))
        .unwrap_or_else(|| panic!("no {kind:?} line for {}: {report:#?}", out_trade_no(order)))
}

async fn review_kinds(app: &TestApp, admin: &str, order: &Value) -> Vec<String> {
    let (status, body) = app.get("/admin/review", Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["order_id"] == order["id"])
        .flat_map(|item| item["reasons"].as_array().cloned().unwrap_or_default())
        .map(|reason| reason["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn four_discrepancies_and_a_rerun_that_adds_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_product("tea", PRICE, true).await;
    let admin = app.admin_token().await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;

    // Agrees with the bill.
    let (_, fine) = paid(&app, "fine").await;
    // WeChat's bill shows another amount.
    let (_, different) = paid(&app, "different").await;
    control(
        &app,
        "/bills/amount",
        json!({ "out_trade_no": out_trade_no(&different), "amount_fen": 2400 }),
    )
    .await;
    // Paid at WeChat, the notify lost: only the bill (and a query) know.
    let (unheard_token, unheard) = paid_unheard(&app, "unheard").await;
    // In the log, not in WeChat's bill.
    let (_, missing) = paid(&app, "missing").await;
    control(
        &app,
        "/bills/omit",
        json!({ "out_trade_no": out_trade_no(&missing) }),
    )
    .await;
    // Refunded in the log; the refund missing from the bill.
    let (refunded_token, refunded) = paid(&app, "refunded").await;
    let (status, refund) = app
        .post(
            &format!("/admin/orders/{}/refunds", id(&refunded)),
            Some(&admin),
            json!({ "amount_fen": 500, "reason": "broken cup" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    app.wait_for_order(&refunded_token, &refunded, |o| o["refunded_fen"] == 500)
        .await;
    control(
        &app,
        "/bills/omit",
        json!({ "out_refund_no": refund["out_refund_no"] }),
    )
    .await;

    let report = reconcile_today(&app).await;
    assert_eq!(report.status, ReportStatus::Reconciled);
    assert_eq!(report.lines.len(), 4, "exactly four: {report:#?}");
    let recorded = line(&report, LineKind::PaymentMissingInLog, &unheard);
    assert_eq!(recorded.action, Action::PaymentRecorded);
    let amount = line(&report, LineKind::PaymentAmountDiffers, &different);
    assert_eq!(
        (
            amount.ours_fen.unwrap().get(),
            amount.theirs_fen.unwrap().get()
        ),
        (2500, 2400)
    );
    assert_eq!(amount.action, Action::FlaggedForReview);
    let gone = line(&report, LineKind::PaymentMissingAtProvider, &missing);
    assert_eq!(gone.action, Action::FlaggedForReview);
    let refund_gone = line(&report, LineKind::RefundMissingAtProvider, &refunded);
    assert_eq!(
        refund_gone.out_refund_no.as_ref(),
        refund["out_refund_no"].as_str().map(String::from).as_ref()
    );
    assert_eq!(refund_gone.action, Action::FlaggedForReview);
    // Both sides as counted: the log before this run lacked the unheard payment.
    assert_eq!(
        report.bill.payments, 4,
        "the omitted payment is not in the bill"
    );
    assert_eq!(
        report.log.payments, 4,
        "the unheard payment was not in the log yet"
    );
    assert!(!report
        .lines
        .iter()
        .any(|l| l.out_trade_no == out_trade_no(&fine)));

    // The unheard payment is recorded, once, as a notify would have: the order is paid.
    let unheard_now = app
        .wait_for_order(&unheard_token, &unheard, |o| o["status"] == "paid")
        .await;
    assert_eq!(unheard_now["paid_fen"], 2 * PRICE);
    assert_eq!(
        count(&app.order_events(&unheard).await, "PaymentSucceeded"),
        1
    );
    // The other three are in the review queue, for reconciliation.
    for order in [&different, &missing, &refunded] {
        let kinds = review_kinds(&app, &admin, order).await;
        assert_eq!(kinds, vec!["reconciliation_discrepancy"], "{order}");
        assert_eq!(
            count(&app.order_events(order).await, "ReconciliationDiscrepancy"),
            1
        );
    }
    assert!(review_kinds(&app, &admin, &fine).await.is_empty());

    // The stored report is what the run returned.
    let stored = app
        .running()
        .reconciler
        .reports()
        .get(report.date)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored, report);

    // Again: nothing new in the log; the unheard payment is no longer a finding.
    let events = app.event_count().await;
    let again = reconcile_today(&app).await;
    assert_eq!(app.event_count().await, events, "a re-run records nothing");
    assert_eq!(again.runs, 2);
    assert_eq!(again.lines.len(), 3, "{again:#?}");
    assert!(again
        .lines
        .iter()
        .all(|l| l.action == Action::AlreadyFlagged));

    // Resolved by staff, then reconciled once more: the same finding is not raised again.
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/review", id(&different)),
            Some(&admin),
            json!({ "resolution": "accepted", "note": "WeChat's figure checked by finance" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = app.event_count().await;
    reconcile_today(&app).await;
    assert_eq!(app.event_count().await, events);
    assert!(review_kinds(&app, &admin, &different).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_discrepancies_and_a_rerun_that_adds_nothing_postgres() {
    four_discrepancies_and_a_rerun_that_adds_nothing(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_discrepancies_and_a_rerun_that_adds_nothing_sqlite() {
    four_discrepancies_and_a_rerun_that_adds_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_of_an_order_that_is_not_ours_is_reported_not_recorded() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", PRICE, true).await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    control(
        &app,
        "/bills/unknown-payment",
        json!({ "out_trade_no": "OTHER-SHOP-0001", "amount_fen": 990 }),
    )
    .await;
    let events = app.event_count().await;
    let report = reconcile_today(&app).await;
    assert_eq!(report.lines.len(), 1, "{report:#?}");
    assert_eq!(report.lines[0].kind, LineKind::PaymentMissingInLog);
    assert_eq!(report.lines[0].action, Action::UnknownOrder);
    assert_eq!(report.lines[0].theirs_fen.unwrap().get(), 990);
    assert_eq!(app.event_count().await, events, "nothing to record it on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_without_a_bill_and_a_bill_not_made_yet() {
    let app = spawn_app(Backend::Sqlite).await;
    app.add_product("tea", PRICE, true).await;
    // Not made yet: WeChat makes a day's bill the next morning.
    let report = reconcile_today(&app).await;
    assert_eq!(report.status, ReportStatus::NotReady);
    assert!(report.lines.is_empty());

    // Made, but nothing was paid or refunded that day: no bill, and nothing to find.
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    let report = reconcile_today(&app).await;
    assert_eq!(report.status, ReportStatus::NoBill, "{report:#?}");
    assert!(report.lines.is_empty());
}

/// The daily job: due once `RECONCILE_AT` has passed (Beijing time), run by one of two
/// instances, not again once the day has its report; a bill not ready yet is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_run_happens_once_across_instances() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", PRICE, true).await;
    paid(&app, "yesterday").await;
    let reconciler = &app.running().reconciler;
    let instances = ["instance-a", "instance-b"].map(|holder| daily_job(&app, holder));
    // "Tomorrow" at 10:30 Beijing time: today's bill is due.
    let today = beijing::day(chrono::Utc::now());
    let tomorrow_1030 = tomorrow_at(today, 2);
    let before_at = tomorrow_1030 - chrono::Duration::hours(1);
    assert_eq!(
        instances[0].tick(before_at).await.unwrap(),
        vec![],
        "not before RECONCILE_AT"
    );

    // The simulator, faithful by default, has not made the bill yet (its clock is today's).
    let first = instances[0].tick(tomorrow_1030).await.unwrap();
    assert_eq!(first, vec![(today, Ok(ReportStatus::NotReady))]);
    assert_eq!(
        instances[1]
            .tick(tomorrow_1030 + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        vec![],
        "a bill not ready is not asked for again at once"
    );

    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    let later = tomorrow_1030 + chrono::Duration::minutes(16);
    let [a, b] = &instances;
    let (a, b) = tokio::join!(a.tick(later), b.tick(later));
    let ran: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        ran,
        vec![(today, Ok(ReportStatus::Reconciled))],
        "exactly one instance ran it"
    );
    let report = reconciler.reports().get(today).await.unwrap().unwrap();
    assert_eq!(report.bill.payments, 1);
    assert!(report.lines.is_empty(), "{report:#?}");
    for instance in &instances {
        assert_eq!(
            instance
                .tick(later + chrono::Duration::hours(1))
                .await
                .unwrap(),
            vec![],
            "the day is done"
        );
    }
}

/// An engine that was down at `RECONCILE_AT` for days catches them up at its next tick, oldest
/// first, back to the first day it ever reconciled and no further; a payment whose notify was
/// lost on the last of them is found and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn days_missed_while_down_are_caught_up() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", PRICE, true).await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    let reconciler = &app.running().reconciler;
    let today = beijing::day(chrono::Utc::now());
    let day = |back: u64| today - chrono::Days::new(back);
    // Where this deployment began: a day reconciled three days ago (nothing was paid then).
    let first = reconciler
        .run(day(3), chrono::Utc::now(), &Quiet)
        .await
        .unwrap();
    assert_eq!(first.status, ReportStatus::NoBill);
    // Today a payment whose notification never arrives.
    let (token, order) = paid_unheard(&app, "lost-notify").await;

    let job = daily_job(&app, "back-up");
    // Tomorrow 09:30 Beijing: the two days after the first are overdue; today is not due yet.
    assert_eq!(
        job.tick(tomorrow_at(today, 1)).await.unwrap(),
        vec![
            (day(2), Ok(ReportStatus::NoBill)),
            (day(1), Ok(ReportStatus::NoBill))
        ]
    );
    let ran = job.tick(tomorrow_at(today, 2)).await.unwrap();
    assert_eq!(ran, vec![(today, Ok(ReportStatus::Reconciled))]);
    let report = reconciler.reports().get(today).await.unwrap().unwrap();
    assert_eq!(report.lines.len(), 1, "{report:#?}");
    assert_eq!(report.lines[0].action, Action::PaymentRecorded);
    app.wait_for_order(&token, &order, |o| o["status"] == "paid")
        .await;
    assert_eq!(
        reconciler.reports().get(day(4)).await.unwrap(),
        None,
        "no day before the first is reconciled"
    );
    assert_eq!(
        job.tick(tomorrow_at(today, 3)).await.unwrap(),
        vec![],
        "all done"
    );
}

/// Days that left the catch-up window without a final report are named (the job warns that only
/// `reconcile --date` will do them now): a day with no report or one that is not final, from the
/// deployment's first report on, each named once; a day reconciled is not named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn days_left_behind_by_the_catch_up_window_are_named() {
    let app = spawn_app(Backend::Sqlite).await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    let reconciler = &app.running().reconciler;
    let reports = reconciler.reports();
    let job = daily_job(&app, "only");
    let now = chrono::Utc::now();
    // A week before yesterday.
    let leaving = left_window(now);
    let days = |n: u64| chrono::Days::new(n);
    let nothing: Vec<chrono::NaiveDate> = vec![];
    assert_eq!(
        job.left_behind(now, None).await.unwrap(),
        nothing,
        "nothing reconciled yet"
    );

    // The deployment began after that day: nothing is owed.
    let first = reconciler
        .run(leaving + days(1), now, &Quiet)
        .await
        .unwrap();
    assert!(first.is_final(), "{first:#?}");
    assert_eq!(job.left_behind(now, None).await.unwrap(), nothing);

    // It began four days before: two days have no report, one has a report that is not final.
    let earlier = reconciler
        .run(leaving - days(3), now, &Quiet)
        .await
        .unwrap();
    assert!(earlier.is_final(), "{earlier:#?}");
    let not_ready = Report {
        date: leaving - days(1),
        status: ReportStatus::NotReady,
        ..earlier
    };
    reports.put(&not_ready).await.unwrap();
    assert_eq!(
        job.left_behind(now, None).await.unwrap(),
        vec![leaving - days(2), leaving - days(1), leaving]
    );
    // Looked at up to the day before already: only the day leaving now.
    assert_eq!(
        job.left_behind(now, Some(leaving - days(1))).await.unwrap(),
        vec![leaving]
    );
    assert_eq!(job.left_behind(now, Some(leaving)).await.unwrap(), nothing);

    // The job's looks: each day named once, and a later day as it leaves the window.
    let mut checked = None;
    assert_eq!(
        job.newly_left_behind(now, &mut checked).await.unwrap(),
        vec![leaving - days(2), leaving - days(1), leaving]
    );
    assert_eq!(
        job.newly_left_behind(now + chrono::Duration::minutes(1), &mut checked)
            .await
            .unwrap(),
        nothing,
        "named once"
    );
    assert_eq!(
        job.newly_left_behind(now + chrono::Duration::days(2), &mut checked)
            .await
            .unwrap(),
        vec![leaving + days(2)],
        "two days later: the first report's day is done, the day after it is not"
    );

    // Reconciled by hand: no longer owed.
    for date in [leaving - days(2), leaving - days(1), leaving] {
        let report = reconciler.run(date, now, &Quiet).await.unwrap();
        assert!(report.is_final(), "{report:#?}");
    }
    assert_eq!(job.left_behind(now, None).await.unwrap(), nothing);

    // Days the job ran and finished are not named when they leave in turn.
    let today = beijing::day(now);
    let ran = job.tick(tomorrow_at(today, 2)).await.unwrap();
    assert_eq!(ran.len(), 7, "{ran:?}");
    assert_eq!(
        job.left_behind(now + chrono::Duration::days(9), Some(leaving))
            .await
            .unwrap(),
        vec![today + days(1)],
        "only the day after today, which nobody ran"
    );
}

/// A run that could not read the bill stores no report: the instance tries that day again after
/// a pause, not at every tick while WeChat Pay is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_whose_bill_could_not_be_read_is_tried_again_after_a_pause() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", PRICE, true).await;
    paid(&app, "down-day").await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    control(
        &app,
        "/faults",
        json!({ "fail_next": 1000, "path_contains": "bill" }),
    )
    .await;
    let job = daily_job(&app, "only");
    let today = beijing::day(chrono::Utc::now());
    let tomorrow_1030 = tomorrow_at(today, 2);
    let failed = job.tick(tomorrow_1030).await.unwrap();
    assert!(
        matches!(failed.as_slice(), [(day, Err(_))] if *day == today),
        "{failed:?}"
    );
    assert_eq!(
        app.running().reconciler.reports().get(today).await.unwrap(),
        None
    );
    control(&app, "/faults", json!({ "fail_next": 0 })).await;
    let minute = chrono::Duration::minutes(1);
    assert_eq!(
        job.tick(tomorrow_1030 + minute).await.unwrap(),
        vec![],
        "not again at the next tick"
    );
    let other = daily_job(&app, "other");
    assert_eq!(
        other.tick(tomorrow_1030 + minute * 2).await.unwrap(),
        vec![],
        "nor by another instance"
    );
    assert_eq!(
        job.tick(tomorrow_1030 + minute * 6).await.unwrap(),
        vec![(today, Ok(ReportStatus::Reconciled))]
    );
}

/// APIv2: the merchant's bill through `/pay/downloadbill` is the same as through v3 (one
/// merchant, one bill), and a v2 payment whose notify was lost is found and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_v2_payment_is_found_and_both_apis_give_one_bill() {
    use paystream_engine::order::PayChannel;
    use paystream_engine::payments::bills::BillOutcome;

    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", PRICE, true).await;
    control(&app, "/bills/settings", json!({ "immediate": true })).await;
    let (token, _) = app.login("v2-payer").await;
    let order = app.place_order(&token, "tea", 2).await;
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(&order)),
            Some(&token),
            json!({ "channel": "wechatpay_v2" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "channel": "wechatpay_v2", "notify": false }),
    )
    .await;

    let today = beijing::day(chrono::Utc::now());
    let mut bills = Vec::new();
    for channel in [PayChannel::WechatpayV3, PayChannel::WechatpayV2] {
        let gateway = app.running().payments.gateway(channel).unwrap().clone();
        let BillOutcome::Bill(bill) = gateway.trade_bill(today).await.unwrap() else {
            panic!("{channel:?}: no bill");
        };
        assert_eq!(bill.payments.len(), 1, "{channel:?}: {bill:?}");
        assert_eq!(bill.payments[0].out_trade_no, out_trade_no(&order));
        assert_eq!(bill.payments[0].amount_fen.get(), 2 * PRICE);
        bills.push(bill);
    }
    assert_eq!(bills[0], bills[1], "one merchant, one bill");

    let report = reconcile_today(&app).await;
    assert_eq!(report.lines.len(), 1, "{report:#?}");
    assert_eq!(report.lines[0].action, Action::PaymentRecorded);
    let paid = app
        .wait_for_order(&token, &order, |o| o["status"] == "paid")
        .await;
    assert_eq!(paid["channel"], "wechatpay_v2");
}
