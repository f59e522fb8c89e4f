//! The event store's guarantees, checked against real PostgreSQL and SQLite.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use paystream_engine::db::Backend;
use paystream_engine::follow::Follower;
use paystream_engine::store::{
    Checkpoint, EventStore, ExpectedVersion, InlineProjection, NewEvent, RecordedEvent,
    SqlEventStore, StoreError,
};
use paystream_engine::testing::TestDb;
use serde_json::json;

async fn store(db: &TestDb) -> Arc<dyn EventStore> {
    Arc::new(SqlEventStore::new(db.db().await))
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("Tested", json!({ "n": n })).with_metadata(json!({ "actor": "test" }))
}

async fn expected_versions_are_enforced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let first = store
        .append("s-1", ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(first.version, 2);
    assert_eq!(
        first.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2]
    );

    let again = store
        .append("s-1", ExpectedVersion::NoStream, vec![event(3)])
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { actual: 2, .. })),
        "{again:?}"
    );
    let stale = store
        .append("s-1", ExpectedVersion::Exact(1), vec![event(3)])
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { actual: 2, .. })),
        "{stale:?}"
    );
    let ahead = store
        .append("s-1", ExpectedVersion::Exact(5), vec![event(3)])
        .await;
    assert!(matches!(ahead, Err(StoreError::Conflict { .. })));

    store
        .append("s-1", ExpectedVersion::Exact(2), vec![event(3)])
        .await
        .unwrap();
    let any = store
        .append("s-1", ExpectedVersion::Any, vec![event(4)])
        .await
        .unwrap();
    assert_eq!(any.version, 4);

    let read = store.read_stream("s-1").await.unwrap();
    assert_eq!(
        read.iter()
            .map(|e| e.data["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(read[0].metadata, json!({ "actor": "test" }));
    assert_eq!(read[0].event_type, "Tested");
    assert!(store.read_stream("missing").await.unwrap().is_empty());
}

async fn retried_appends_are_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let batch = vec![event(1), event(2)];
    let first = store
        .append("s-2", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(!first.replayed);
    // The same append again (its answer was lost): same result, nothing written twice.
    let retry = store
        .append("s-2", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.events, first.events);
    let retry_any = store
        .append("s-2", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert!(retry_any.replayed);
    assert_eq!(store.read_stream("s-2").await.unwrap().len(), 2);

    // The same event id in another stream is not a retry: refused.
    let elsewhere = store
        .append("s-3", ExpectedVersion::Any, vec![batch[0].clone()])
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::DuplicateEventId { .. })),
        "{elsewhere:?}"
    );
    assert!(store.read_stream("s-3").await.unwrap().is_empty());
}

async fn the_log_cannot_be_rewritten(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    store
        .append("s-4", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let pool = &store.db().pool;
    assert!(sqlx::query("UPDATE events SET event_type = 'Forged'")
        .execute(pool)
        .await
        .is_err());
    assert!(sqlx::query("DELETE FROM events")
        .execute(pool)
        .await
        .is_err());
    assert_eq!(
        store.read_stream("s-4").await.unwrap()[0].event_type,
        "Tested"
    );
}

/// 50 writers race for the same version: exactly one wins; the losers get a typed conflict.
async fn one_winner_per_version(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let attempts = (0..50).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("race", ExpectedVersion::NoStream, vec![event(n)])
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::Conflict { .. }))))
        .count();
    assert_eq!((wins, conflicts), (1, 49));
    assert_eq!(store.read_stream("race").await.unwrap().len(), 1);
}

/// 50 concurrent appenders on one stream, each retrying on conflict: every event lands exactly
/// once, versions are 1..=50 without gaps, and a follower running alongside sees each event
/// once, in order.
async fn concurrent_appends_and_a_follower(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let writers = (0..50_i64).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = if n % 2 == 0 { "shared" } else { "other" };
            loop {
                let version = store.read_stream(stream).await.unwrap().len() as i64;
                match store
                    .append(stream, ExpectedVersion::Exact(version), vec![event(n)])
                    .await
                {
                    Ok(_) => return,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        })
    });
    let follower_store = store.clone();
    let follower = tokio::spawn(async move {
        let follower = Follower::new("test-follower", follower_store, 7);
        let mut seen = Vec::new();
        while seen.len() < 50 {
            follower
                .poll(|batch| {
                    seen.extend(batch);
                    async { Ok::<_, StoreError>(()) }
                })
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        seen
    });
    futures::future::join_all(writers).await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), follower)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(seen.len(), 50);
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 50, "an event was delivered twice");
    let writers_seen: HashSet<_> = seen.iter().map(|e| e.data["n"].as_i64().unwrap()).collect();
    assert_eq!(writers_seen, (0..50).collect::<HashSet<_>>());
    assert!(
        seen.windows(2).all(|w| w[0].checkpoint < w[1].checkpoint),
        "log order broken"
    );
    let mut last_version: HashMap<&str, i64> = HashMap::new();
    for e in &seen {
        let last = last_version.entry(e.stream_id.as_str()).or_default();
        assert_eq!(e.version, *last + 1, "stream {} out of order", e.stream_id);
        *last = e.version;
    }
    assert_eq!(last_version["shared"], 25);
    assert_eq!(last_version["other"], 25);
    // Nothing more to read: the checkpoint is at the end.
    let rest = store
        .read_all(seen.last().unwrap().checkpoint, 100)
        .await
        .unwrap();
    assert!(rest.is_empty());
}

/// Records every event an inline projection is given, in the transaction it is given in: what
/// it holds at the end is exactly what the projection saw committed.
struct Recording;

#[async_trait::async_trait]
impl InlineProjection for Recording {
    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        _backend: Backend,
        appended: &[RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        for event in appended {
            sqlx::query("INSERT INTO projected (event_id) VALUES ($1)")
                .bind(event.event_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Many appends at once, on distinct streams (grouped into shared transactions on PostgreSQL)
/// and racing on the same ones (which breaks groups up): every append is whole or absent, each
/// race has one winner, the inline projection sees exactly the committed events, and a retry of
/// a grouped append is recognised.
async fn concurrent_appends_stay_whole(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pool = db.db().await;
    sqlx::query("CREATE TABLE projected (event_id TEXT PRIMARY KEY)")
        .execute(&pool.pool)
        .await
        .unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(SqlEventStore::new(pool).with_projection(Arc::new(Recording)));

    let placed = futures::future::join_all((0..40_i64).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            // One event without data: JSON null must survive the grouped INSERT.
            let first = if n == 0 {
                NewEvent::new("Nothing", serde_json::Value::Null)
            } else {
                event(n)
            };
            let events = vec![first, event(n + 1000)];
            let sent: Vec<_> = events.iter().map(|e| e.event_id).collect();
            let appended = store
                .append(&format!("g-{n}"), ExpectedVersion::NoStream, events)
                .await
                .unwrap();
            (n, sent, appended)
        })
    }))
    .await;
    for placed in placed {
        let (n, sent, appended) = placed.unwrap();
        assert_eq!(appended.version, 2);
        assert!(!appended.replayed);
        assert_eq!(
            appended
                .events
                .iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>(),
            sent
        );
        assert!(appended
            .events
            .iter()
            .all(|e| e.stream_id == format!("g-{n}")));
        assert_eq!(
            appended
                .events
                .iter()
                .map(|e| e.version)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    assert_eq!(
        store.read_stream("g-0").await.unwrap()[0].data,
        serde_json::Value::Null
    );
    if backend == Backend::Postgres {
        // The appends really were grouped: fewer transactions than appends.
        let transactions: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT transaction_id) FROM events")
                .fetch_one(&store.db().pool)
                .await
                .unwrap();
        assert!(
            transactions < 40,
            "{transactions} transactions for 40 appends"
        );
    }

    // Two appenders per stream at version 2, all at once.
    let raced = futures::future::join_all((0..80_i64).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let events = vec![event(n)];
            let result = store
                .append(
                    &format!("g-{}", n / 2),
                    ExpectedVersion::Exact(2),
                    events.clone(),
                )
                .await;
            (n / 2, events, result)
        })
    }))
    .await;
    let mut winners: HashMap<i64, Vec<NewEvent>> = HashMap::new();
    for raced in raced {
        let (stream, events, result) = raced.unwrap();
        match result {
            Ok(appended) => {
                assert_eq!(appended.version, 3);
                assert!(
                    winners.insert(stream, events).is_none(),
                    "two winners on g-{stream}"
                );
            }
            Err(StoreError::Conflict { actual: 3, .. }) => {}
            Err(e) => panic!("g-{stream}: {e}"),
        }
    }
    assert_eq!(winners.len(), 40, "a race without a winner");
    for (stream, events) in &winners {
        let stored = store.read_stream(&format!("g-{stream}")).await.unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[2].event_id, events[0].event_id);
    }

    // The retry of a winning append (its answer lost, say) is answered with what was stored.
    let (stream, events) = winners.iter().next().unwrap();
    let retried = store
        .append(
            &format!("g-{stream}"),
            ExpectedVersion::Exact(2),
            events.clone(),
        )
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.events[0].event_id, events[0].event_id);

    // Event ids as text, in one form on both backends (PostgreSQL's uuid has hyphens).
    let event_ids = |sql: &'static str| {
        let pool = store.db().pool.clone();
        async move {
            sqlx::query_scalar(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|id: String| id.replace('-', ""))
                .collect::<HashSet<String>>()
        }
    };
    let stored = event_ids("SELECT CAST(event_id AS TEXT) FROM events").await;
    let projected = event_ids("SELECT event_id FROM projected").await;
    assert_eq!(stored.len(), 120);
    assert_eq!(
        projected, stored,
        "the projection saw other events than were committed"
    );
}

on_both_backends!(
    concurrent_appends_stay_whole,
    expected_versions_are_enforced,
    retried_appends_are_idempotent,
    the_log_cannot_be_rewritten,
    one_winner_per_version,
    concurrent_appends_and_a_follower,
);

/// Reads from `after` until `n` events are visible (bounded: fails the test after 20 s).
async fn read_until(
    store: &Arc<dyn EventStore>,
    after: Checkpoint,
    n: usize,
) -> Vec<paystream_engine::store::RecordedEvent> {
    for _ in 0..400 {
        let events = store.read_all(after, 100).await.unwrap();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} events became visible");
}

/// The case that loses events with "position > last seen": a transaction takes a position, a
/// later one commits first. The follower must hold the later row back until the earlier commits.
#[tokio::test]
async fn postgres_follower_waits_for_slow_transactions() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = store(&db).await;
    store
        .append("before", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    // xmin is cluster-wide: a transaction open in another test's database may hold the
    // follower back for a moment (never skipping, only waiting), so wait for visibility.
    let start = read_until(&store, Checkpoint::START, 1).await;
    assert_eq!(start.len(), 1);
    let checkpoint = start[0].checkpoint;

    let mut slow = store.db().pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (stream_id, version, event_id, event_type, data, metadata) \
         VALUES ('slow', 1, gen_random_uuid(), 'Tested', '{\"n\":1}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    store
        .append("fast", ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();

    let while_slow_is_open = store.read_all(checkpoint, 100).await.unwrap();
    assert!(
        while_slow_is_open.is_empty(),
        "the fast event was handed out before the slow one could commit: {while_slow_is_open:?}"
    );
    slow.commit().await.unwrap();

    let after = read_until(&store, checkpoint, 2).await;
    let streams: Vec<_> = after.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, vec!["slow", "fast"]);
}
