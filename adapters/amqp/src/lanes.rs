//! Per-order ordering for the consumer: deliveries are spread over a fixed number of lanes by a
//! hash of their `stream_id`; each lane handles its deliveries one at a time, in delivery order.
//! Different orders run concurrently (up to one per lane), one order never runs twice at once.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use paystream_engine::consumers::EventMessage;

/// The lane of a stream. `DefaultHasher::new()` has fixed keys: the same stream always lands in
/// the same lane, across sessions too.
pub(crate) fn lane_of(stream_id: &str, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    stream_id.hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

/// The lane of a delivery body; an undecodable one goes to lane 0, where it is parked.
pub(crate) fn lane_of_body(body: &[u8], lanes: usize) -> usize {
    #[derive(serde::Deserialize)]
    struct StreamOnly {
        stream_id: String,
    }
    serde_json::from_slice::<StreamOnly>(body)
        .map(|m| lane_of(&m.stream_id, lanes))
        .unwrap_or(0)
}

/// Streams whose message was requeued after failing. The broker redelivers a requeued message
/// before newer ones, but this lane may already hold later events of the same order that were
/// delivered before the requeue: those are requeued too (behind it) rather than handled first.
/// Best effort: a delivery the broker sent while the nack was on its way still overtakes.
#[derive(Default)]
pub(crate) struct Holds {
    /// stream id -> highest delivery tag the channel had seen when its message was requeued.
    until: HashMap<String, u64>,
}

impl Holds {
    pub(crate) fn hold(&mut self, stream_id: &str, up_to_tag: u64) {
        self.until.insert(stream_id.to_string(), up_to_tag);
    }

    /// Whether this delivery must go back behind its stream's requeued message. Holds older than
    /// the delivery are forgotten: everything delivered after them came after the requeue.
    pub(crate) fn must_requeue(&mut self, message: &EventMessage, delivery_tag: u64) -> bool {
        self.until.retain(|_, until| *until >= delivery_tag);
        self.until.contains_key(&message.stream_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(stream_id: &str) -> EventMessage {
        EventMessage {
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream_id.into(),
            version: 1,
            event_type: "OrderPlaced".into(),
            recorded_at: Default::default(),
            data: serde_json::json!({}),
            metadata: serde_json::json!({}),
        }
    }

    #[test]
    fn a_stream_always_lands_in_the_same_lane_and_streams_spread() {
        let lanes: Vec<usize> = (0..200)
            .map(|i| lane_of(&format!("order-{i}"), 8))
            .collect();
        assert_eq!(lanes[17], lane_of("order-17", 8));
        for lane in 0..8 {
            assert!(lanes.contains(&lane), "lane {lane} never used");
        }
        let body = message("order-17").to_body();
        assert_eq!(lane_of_body(&body, 8), lanes[17]);
        assert_eq!(lane_of_body(b"not json", 8), 0);
    }

    #[test]
    fn later_events_of_a_requeued_stream_follow_it_back() {
        let mut holds = Holds::default();
        holds.hold("a", 10);
        assert!(
            holds.must_requeue(&message("a"), 7),
            "delivered before the requeue"
        );
        assert!(
            !holds.must_requeue(&message("b"), 8),
            "another order is not held"
        );
        assert!(
            !holds.must_requeue(&message("a"), 11),
            "delivered after the requeue"
        );
        assert!(
            !holds.must_requeue(&message("a"), 9),
            "the hold was forgotten"
        );
    }
}
