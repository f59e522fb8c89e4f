//! Login throttling: how many failed logins one account or one client address may have before
//! further attempts are refused for a while.
//!
//! The state is in memory, per process: with several engine instances behind a load balancer each
//! keeps its own counts, so a client spread across `n` instances gets up to `n` times the attempts.
//! The maps are bounded (least recently used entries are dropped first) so a stream of made-up
//! usernames or addresses cannot grow them without limit.
//!
//! Everything here is pure (the time is passed in) and unit-tested below; the handlers in
//! `admin.rs` and `customer.rs` apply it.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Entries per map: a few MiB at most (a username key is at most 64 characters).
const MAX_ENTRIES: usize = 10_000;

/// Staff login: this many failures for one username lock it.
pub const STAFF_FAILURES_PER_USERNAME: u32 = 5;
/// Staff login: this many failures from one address lock the address (password spraying: one
/// guess for each of many usernames).
pub const STAFF_FAILURES_PER_ADDRESS: u32 = 20;
/// The first staff lockout unless configured (`ADMIN_LOGIN_LOCKOUT_SECONDS`).
pub const DEFAULT_STAFF_LOCKOUT: Duration = Duration::from_secs(60);
/// Each further lockout doubles, up to this many times the first one (16 minutes by default).
const MAX_LOCKOUT_FACTOR: u32 = 16;

/// Customer login (`POST /api/login`): refused codes one address may send in a burst …
pub const CUSTOMER_LOGIN_BURST: u32 = 20;
/// … and how many more it earns per minute.
pub const CUSTOMER_LOGINS_PER_MINUTE: u32 = 10;

/// The address a limit applies to: an IPv4 address as is; an IPv6 address by its /64 prefix
/// (one subscriber's network: a single host may hold the whole /64); an IPv4 address written as
/// IPv6 (`::ffff:a.b.c.d`) as the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1_u128 << 64) - 1)).into()),
        },
    }
}

/// How a username is counted: as looked up (trimmed), at most 64 characters (no staff account
/// has a longer name, so longer ones only need to be told apart from each other well enough).
pub fn username_key(username: &str) -> String {
    username.trim().chars().take(64).collect()
}

/// When failures lock, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures (each no more than `forget_after` after the previous one) that lock.
    pub max_failures: u32,
    /// The first lockout; each further one doubles, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
    /// This long without a failure (counted from the end of the last lockout) and everything is
    /// forgotten: the counts and the doubling.
    pub forget_after: Duration,
}

impl LockoutPolicy {
    /// `max_failures` failures lock for `lockout`, doubling up to 16 × `lockout`; forgotten after
    /// 16 × `lockout` without a failure.
    pub fn new(max_failures: u32, lockout: Duration) -> LockoutPolicy {
        let max_lockout = lockout.saturating_mul(MAX_LOCKOUT_FACTOR);
        LockoutPolicy {
            max_failures: max_failures.max(1),
            lockout,
            max_lockout,
            forget_after: max_lockout,
        }
    }

    /// The length of the `n`th lockout (0-based) in a row.
    fn lockout(&self, n: u32) -> Duration {
        self.lockout
            .saturating_mul(1_u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(self.max_lockout)
    }
}

#[derive(Clone, Copy, Debug)]
struct Strikes {
    /// Failures since the last lockout (or since the start).
    failures: u32,
    last_failure: Instant,
    /// Lockouts served in a row; after the first, a single failure locks again (for twice as long).
    lockouts: u32,
    locked_until: Option<Instant>,
}

/// Failed attempts per key (a username, an address), with lockouts that grow.
///
/// After `max_failures` failures the key is locked for `lockout`. Once that has passed the key is
/// on probation: one more failure locks it again for twice as long (capped), until it goes
/// `forget_after` without a failure. A success forgets the key ([`Lockouts::forgive`]).
pub struct Lockouts<K: Hash + Eq> {
    policy: LockoutPolicy,
    entries: Mutex<LruCache<K, Strikes>>,
}

impl<K: Hash + Eq> Lockouts<K> {
    pub fn new(policy: LockoutPolicy) -> Lockouts<K> {
        Lockouts::with_capacity(policy, MAX_ENTRIES)
    }

    fn with_capacity(policy: LockoutPolicy, capacity: usize) -> Lockouts<K> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Lockouts {
            policy,
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub fn policy(&self) -> LockoutPolicy {
        self.policy
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<K, Strikes>> {
        // The map holds counters only: one a panicking thread left half-updated is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much longer `key` is locked out, if it is now.
    pub fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        // `get` (not `peek`): a key being tried stays among the most recently used.
        let mut entries = self.entries();
        let until = entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; returns the lockout it started, if it started one.
    pub fn fail(&self, key: K, now: Instant) -> Option<Duration> {
        let policy = self.policy;
        let mut entries = self.entries();
        let strikes = entries.get_or_insert_mut(key, || Strikes {
            failures: 0,
            last_failure: now,
            lockouts: 0,
            locked_until: None,
        });
        if strikes.locked_until.is_some_and(|until| until > now) {
            // An attempt that was let in before the lockout began: it neither extends nor
            // doubles the lockout.
            strikes.last_failure = now;
            return None;
        }
        let quiet_since = strikes.locked_until.map_or(strikes.last_failure, |until| {
            until.max(strikes.last_failure)
        });
        if now.saturating_duration_since(quiet_since) > policy.forget_after {
            *strikes = Strikes {
                failures: 0,
                last_failure: now,
                lockouts: 0,
                locked_until: None,
            };
        }
        strikes.failures += 1;
        strikes.last_failure = now;
        let threshold = if strikes.lockouts == 0 {
            policy.max_failures
        } else {
            1
        };
        if strikes.failures < threshold {
            return None;
        }
        let lockout = policy.lockout(strikes.lockouts);
        strikes.lockouts = strikes.lockouts.saturating_add(1);
        strikes.failures = 0;
        strikes.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// Forgets `key`'s failures and lockouts (it just proved itself).
    pub fn forgive(&self, key: &K) {
        self.entries().pop(key);
    }
}

/// A token bucket per key: `burst` attempts at once, then one every `interval`. Kept as the
/// time at which the bucket would be full again (the "theoretical arrival time" of GCRA, as in
/// the `governor` crate), in whole nanoseconds: no floating point drift.
pub struct TokenBuckets<K: Hash + Eq> {
    interval: Duration,
    /// How far ahead of now the full-again time may be while a token is still left.
    tolerance: Duration,
    entries: Mutex<LruCache<K, Instant>>,
}

impl<K: Hash + Eq> TokenBuckets<K> {
    pub fn new(burst: u32, per_minute: u32) -> TokenBuckets<K> {
        TokenBuckets::with_capacity(burst, per_minute, MAX_ENTRIES)
    }

    fn with_capacity(burst: u32, per_minute: u32, capacity: usize) -> TokenBuckets<K> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let interval = Duration::from_secs(60) / per_minute.max(1);
        TokenBuckets {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<K, Instant>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a token, or says how long until one is there. A dropped entry (least recently used)
    /// comes back full, which is what a key not seen for long would have anyway.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries();
        let full_at = entries.get_or_insert_mut(key, || now);
        let start = (*full_at).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *full_at = start + self.interval;
        Ok(())
    }

    /// Returns a token taken for an attempt that turned out not to count.
    pub fn give_back(&self, key: &K) {
        if let Some(full_at) = self.entries().get_mut(key) {
            *full_at = full_at.checked_sub(self.interval).unwrap_or(*full_at);
        }
    }
}

/// The login throttles of one engine process.
pub struct Throttles {
    /// Failed staff logins per username (known or not: an unknown username is throttled exactly
    /// like a known one, so a lockout tells nothing about which usernames exist).
    pub staff_by_username: Lockouts<String>,
    /// Failed staff logins per client address.
    pub staff_by_address: Lockouts<IpAddr>,
    /// `wx.login` codes WeChat refused, per client address.
    pub customer_login: TokenBuckets<IpAddr>,
}

impl Throttles {
    /// The limits above, with the first staff lockout lasting `staff_lockout`.
    pub fn new(staff_lockout: Duration) -> Throttles {
        let staff_lockout = staff_lockout.max(Duration::from_secs(1));
        Throttles {
            staff_by_username: Lockouts::new(LockoutPolicy::new(
                STAFF_FAILURES_PER_USERNAME,
                staff_lockout,
            )),
            staff_by_address: Lockouts::new(LockoutPolicy::new(
                STAFF_FAILURES_PER_ADDRESS,
                staff_lockout,
            )),
            customer_login: TokenBuckets::new(CUSTOMER_LOGIN_BURST, CUSTOMER_LOGINS_PER_MINUTE),
        }
    }
}

impl Default for Throttles {
    fn default() -> Throttles {
        Throttles::new(DEFAULT_STAFF_LOCKOUT)
    }
}

/// `Retry-After` in whole seconds, rounded up (never 0: "now" would invite an immediate retry).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let seconds = if wait.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> LockoutPolicy {
        LockoutPolicy::new(5, Duration::from_secs(60))
    }

    #[test]
    fn five_failures_lock_for_the_first_lockout() {
        let lockouts = Lockouts::new(policy());
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(lockouts.fail("a", t0 + SECOND * i), None);
            assert_eq!(lockouts.locked(&"a", t0 + SECOND * i), None);
        }
        assert_eq!(lockouts.fail("a", t0 + SECOND * 4), Some(SECOND * 60));
        assert_eq!(lockouts.locked(&"a", t0 + SECOND * 4), Some(SECOND * 60));
        assert_eq!(lockouts.locked(&"a", t0 + SECOND * 34), Some(SECOND * 30));
        assert_eq!(lockouts.locked(&"a", t0 + SECOND * 64), None);
        assert_eq!(lockouts.locked(&"b", t0 + SECOND * 4), None, "per key");
    }

    #[test]
    fn lockouts_double_on_probation_up_to_the_cap() {
        let lockouts = Lockouts::new(policy());
        let mut now = Instant::now();
        for _ in 0..4 {
            assert_eq!(lockouts.fail("a", now), None);
        }
        let mut seen = Vec::new();
        for _ in 0..7 {
            let lockout = lockouts.fail("a", now).expect("locks");
            seen.push(lockout.as_secs());
            // Right after the lockout ends, a single failure locks again.
            now += lockout;
            assert_eq!(lockouts.locked(&"a", now), None);
        }
        assert_eq!(seen, [60, 120, 240, 480, 960, 960, 960]);
    }

    #[test]
    fn failures_during_a_lockout_do_not_extend_it() {
        let lockouts = Lockouts::new(policy());
        let t0 = Instant::now();
        for _ in 0..5 {
            lockouts.fail("a", t0);
        }
        assert_eq!(lockouts.fail("a", t0 + SECOND), None);
        assert_eq!(lockouts.locked(&"a", t0 + SECOND), Some(SECOND * 59));
    }

    #[test]
    fn a_quiet_spell_forgets_everything() {
        let lockouts = Lockouts::new(policy());
        let t0 = Instant::now();
        for _ in 0..4 {
            lockouts.fail("a", t0);
        }
        // 16 minutes later the four failures are forgotten: four more do not lock.
        let later = t0 + SECOND * 961;
        for _ in 0..4 {
            assert_eq!(lockouts.fail("a", later), None);
        }
        assert_eq!(lockouts.fail("a", later), Some(SECOND * 60));
        // The quiet spell counts from the end of the lockout; then even the doubling is gone.
        let after = later + SECOND * 60 + SECOND * 961;
        for _ in 0..4 {
            assert_eq!(lockouts.fail("a", after), None);
        }
        assert_eq!(lockouts.fail("a", after), Some(SECOND * 60));
    }

    #[test]
    fn forgiving_resets_the_key() {
        let lockouts = Lockouts::new(policy());
        let t0 = Instant::now();
        for _ in 0..5 {
            lockouts.fail("a", t0);
        }
        lockouts.forgive(&"a");
        assert_eq!(lockouts.locked(&"a", t0), None);
        for _ in 0..4 {
            assert_eq!(lockouts.fail("a", t0), None);
        }
    }

    #[test]
    fn the_map_is_bounded() {
        let lockouts = Lockouts::with_capacity(policy(), 3);
        let t0 = Instant::now();
        for key in 0..100 {
            lockouts.fail(key, t0);
        }
        assert_eq!(lockouts.entries().len(), 3);
        let buckets = TokenBuckets::with_capacity(2, 60, 3);
        for key in 0..100 {
            buckets.take(key, t0).unwrap();
        }
        assert_eq!(buckets.entries().len(), 3);
    }

    #[test]
    fn a_token_bucket_allows_the_burst_then_the_rate() {
        let buckets = TokenBuckets::new(20, 10);
        let t0 = Instant::now();
        for _ in 0..20 {
            buckets.take("ip", t0).unwrap();
        }
        let wait = buckets.take("ip", t0).unwrap_err();
        assert_eq!(retry_after_seconds(wait), 6, "10 a minute: one every 6 s");
        assert!(buckets.take("other", t0).is_ok(), "per key");
        assert!(buckets.take("ip", t0 + SECOND * 5).is_err());
        assert!(buckets.take("ip", t0 + SECOND * 6).is_ok());
        assert!(buckets.take("ip", t0 + SECOND * 6).is_err());
        // A minute later: ten more, not twenty.
        let later = t0 + SECOND * 66;
        for _ in 0..10 {
            buckets.take("ip", later).unwrap();
        }
        assert!(buckets.take("ip", later).is_err());
        // A token given back (the attempt did not count) can be taken again.
        buckets.give_back(&"ip");
        assert!(buckets.take("ip", later).is_ok());
        // Never more than the burst.
        let much_later = later + SECOND * 3600;
        for _ in 0..20 {
            buckets.give_back(&"ip");
        }
        for _ in 0..20 {
            buckets.take("ip", much_later).unwrap();
        }
        assert!(buckets.take("ip", much_later).is_err());
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(client_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn usernames_are_keyed_as_looked_up() {
        assert_eq!(username_key("  admin "), "admin");
        assert_eq!(username_key(&"名".repeat(100)).chars().count(), 64);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
