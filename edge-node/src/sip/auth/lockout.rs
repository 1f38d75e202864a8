//! Brute-force lockout for SIP authentication, sans-IO with the time passed in.
//!
//! Two independent counters: per source address and per account (tenant + extension). Each
//! counts authentication failures in a sliding window of [`LockoutPolicy::window`]; reaching the
//! threshold locks that key for [`LockoutPolicy::lock_for`]. So an attacker rotating extension
//! numbers from one address locks the address, and a botnet guessing one extension from many
//! addresses locks the extension.
//!
//! Decisions:
//! - The source threshold ([`LockoutPolicy::source_max_failures`], default 20) is higher than the
//!   account threshold ([`LockoutPolicy::max_failures`], default 5): an office behind one NAT
//!   address must not be locked out because one of its phones has a stale password — that
//!   phone's extension locks first, and a locked request is refused before it is verified, so it
//!   stops adding failures to the source.
//! - IPv6 sources count per /64 (one host usually owns a whole /64); IPv4-mapped IPv6 addresses
//!   count as their IPv4 address. Events name the counted address (the /64 network for IPv6).
//! - A success clears the account's failures, never the source's, and never lifts a lock.
//! - Failures recorded against an already locked key neither count nor extend the lock; the
//!   caller is expected to [`Lockout::check`] first and refuse without verifying.
//! - Memory: at most [`LockoutPolicy::max_tracked_sources`] and
//!   [`LockoutPolicy::max_tracked_accounts`] entries (100,000 each by default). An entry keeps the
//!   times of its failures still inside the window (at most the threshold, 8 bytes each) plus
//!   about 120 bytes of map and index overhead: worst case ≈ 30 MB for sources and ≈ 20 MB for
//!   accounts at the defaults, typically much less. Entries whose failures all left the window,
//!   and expired locks, are purged on every [`Lockout::record_failure`]. When a table is full, the
//!   entry whose last failure is oldest is evicted (an address with a failure or two is cheap to
//!   forget); locked entries are evicted only when no unlocked entry is left, earliest expiry
//!   first. New sources are never refused because the table is full.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbx_contract::TenantId;

/// Thresholds and durations of a [`Lockout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures against one account within `window` that lock it (default 5).
    pub max_failures: u32,
    /// Failures from one source within `window` that lock it (default 20; see the module docs).
    pub source_max_failures: u32,
    /// The sliding window failures are counted in (default 60 s).
    pub window: Duration,
    /// How long a lock lasts (default 300 s).
    pub lock_for: Duration,
    /// Most sources tracked at once (default 100,000).
    pub max_tracked_sources: usize,
    /// Most accounts tracked at once (default 100,000).
    pub max_tracked_accounts: usize,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            source_max_failures: 20,
            window: Duration::from_secs(60),
            lock_for: Duration::from_secs(300),
            max_tracked_sources: 100_000,
            max_tracked_accounts: 100_000,
        }
    }
}

/// An extension of a tenant (extension numbers overlap across tenants).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    pub tenant: TenantId,
    pub extension: String,
}

impl AccountKey {
    pub fn new(tenant: TenantId, extension: impl Into<String>) -> Self {
        Self {
            tenant,
            extension: extension.into(),
        }
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.extension)
    }
}

/// May this request be authenticated?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    SourceLocked { until: SystemTime },
    AccountLocked { until: SystemTime },
}

/// A lock that just started: write it to the audit log, bump the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    SourceLocked { source: IpAddr, until: SystemTime },
    AccountLocked { account: AccountKey, until: SystemTime },
}

impl fmt::Display for LockEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SourceLocked { source, until } => write!(
                f,
                "source {source} locked until {} (unix ms) after repeated authentication failures",
                to_ms(*until)
            ),
            Self::AccountLocked { account, until } => write!(
                f,
                "account {account} locked until {} (unix ms) after repeated authentication failures",
                to_ms(*until)
            ),
        }
    }
}

/// Sizes for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockoutStats {
    pub tracked_sources: usize,
    pub tracked_accounts: usize,
    pub locked_sources: usize,
    pub locked_accounts: usize,
    /// Entries dropped because a table was full, since start.
    pub evictions: u64,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn dur_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The address failures from `ip` are counted under.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

enum State {
    /// Failure times (ms) inside the window, oldest first; never empty.
    Counting(VecDeque<u64>),
    Locked {
        until: u64,
    },
}

/// Failure counting for one kind of key.
struct Tracker<K> {
    threshold: usize,
    cap: usize,
    entries: HashMap<K, State>,
    /// (last failure, key) of every counting entry.
    counting: BTreeSet<(u64, K)>,
    /// (lock end, key) of every locked entry.
    locked: BTreeSet<(u64, K)>,
    evictions: u64,
}

impl<K: Clone + Ord + Hash> Tracker<K> {
    fn new(threshold: u32, cap: usize) -> Self {
        Self {
            threshold: usize::try_from(threshold.max(1)).unwrap_or(usize::MAX),
            cap: cap.max(1),
            entries: HashMap::new(),
            counting: BTreeSet::new(),
            locked: BTreeSet::new(),
            evictions: 0,
        }
    }

    fn locked_until(&self, key: &K, now: u64) -> Option<u64> {
        match self.entries.get(key) {
            Some(State::Locked { until }) if *until > now => Some(*until),
            _ => None,
        }
    }

    fn unindex(&mut self, key: &K) {
        match self.entries.get(key) {
            Some(State::Counting(q)) => {
                if let Some(&last) = q.back() {
                    self.counting.remove(&(last, key.clone()));
                }
            }
            Some(State::Locked { until }) => {
                self.locked.remove(&(*until, key.clone()));
            }
            None => {}
        }
    }

    fn remove(&mut self, key: &K) {
        self.unindex(key);
        self.entries.remove(key);
    }

    fn purge(&mut self, now: u64, window: u64) {
        while let Some((last, key)) = self.counting.first().cloned() {
            if last.saturating_add(window) > now {
                break;
            }
            self.counting.pop_first();
            if matches!(self.entries.get(&key), Some(State::Counting(q)) if q.back() == Some(&last)) {
                self.entries.remove(&key);
            }
        }
        while let Some((until, key)) = self.locked.first().cloned() {
            if until > now {
                break;
            }
            self.locked.pop_first();
            if matches!(self.entries.get(&key), Some(State::Locked { until: u }) if *u == until) {
                self.entries.remove(&key);
            }
        }
    }

    fn evict_one(&mut self) {
        let victim = self
            .counting
            .first()
            .or_else(|| self.locked.first())
            .map(|(_, k)| k.clone());
        if let Some(k) = victim {
            self.remove(&k);
            self.evictions += 1;
        }
    }

    /// Counts a failure; `Some(until)` when it starts a lock.
    fn failure(&mut self, key: &K, now: u64, window: u64, lock_for: u64) -> Option<u64> {
        self.purge(now, window);
        let mut failures = match self.entries.get(key) {
            Some(State::Locked { until }) if *until > now => return None,
            Some(State::Counting(q)) => q.clone(),
            _ => VecDeque::new(),
        };
        if self.entries.contains_key(key) {
            self.remove(key);
        } else {
            while self.entries.len() >= self.cap {
                self.evict_one();
            }
        }
        while failures.front().is_some_and(|&f| f.saturating_add(window) <= now) {
            failures.pop_front();
        }
        failures.push_back(now);
        if failures.len() >= self.threshold {
            let until = now.saturating_add(lock_for);
            self.entries.insert(key.clone(), State::Locked { until });
            self.locked.insert((until, key.clone()));
            Some(until)
        } else {
            self.entries.insert(key.clone(), State::Counting(failures));
            self.counting.insert((now, key.clone()));
            None
        }
    }

    /// Forgets the failures of an unlocked key.
    fn clear(&mut self, key: &K) {
        if matches!(self.entries.get(key), Some(State::Counting(_))) {
            self.remove(key);
        }
    }

    fn locked_count(&self, now: u64) -> usize {
        self.locked
            .iter()
            .rev()
            .take_while(|(until, _)| *until > now)
            .count()
    }
}

/// Per-source and per-account brute-force lockout.
pub struct Lockout {
    policy: LockoutPolicy,
    sources: Tracker<IpAddr>,
    accounts: Tracker<AccountKey>,
}

impl fmt::Debug for Lockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lockout")
            .field("policy", &self.policy)
            .field("tracked_sources", &self.sources.entries.len())
            .field("tracked_accounts", &self.accounts.entries.len())
            .finish()
    }
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            sources: Tracker::new(policy.source_max_failures, policy.max_tracked_sources),
            accounts: Tracker::new(policy.max_failures, policy.max_tracked_accounts),
            policy,
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Call before verifying credentials; a locked source wins over a locked account.
    pub fn check(&self, source: IpAddr, account: &AccountKey, now: SystemTime) -> Access {
        let now = to_ms(now);
        if let Some(until) = self.sources.locked_until(&source_key(source), now) {
            return Access::SourceLocked {
                until: from_ms(until),
            };
        }
        if let Some(until) = self.accounts.locked_until(account, now) {
            return Access::AccountLocked {
                until: from_ms(until),
            };
        }
        Access::Allowed
    }

    /// Counts one failed authentication against both the source and the account; returns the
    /// locks it started (none, one or both).
    pub fn record_failure(
        &mut self,
        source: IpAddr,
        account: &AccountKey,
        now: SystemTime,
    ) -> Vec<LockEvent> {
        let now = to_ms(now);
        let window = dur_ms(self.policy.window);
        let lock_for = dur_ms(self.policy.lock_for);
        let source = source_key(source);
        let mut events = Vec::new();
        if let Some(until) = self.sources.failure(&source, now, window, lock_for) {
            events.push(LockEvent::SourceLocked {
                source,
                until: from_ms(until),
            });
        }
        if let Some(until) = self.accounts.failure(account, now, window, lock_for) {
            events.push(LockEvent::AccountLocked {
                account: account.clone(),
                until: from_ms(until),
            });
        }
        events
    }

    /// A successful authentication clears the account's failure count (not the source's: one
    /// good password from an address does not excuse its guesses at other extensions).
    pub fn record_success(&mut self, _source: IpAddr, account: &AccountKey, _now: SystemTime) {
        self.accounts.clear(account);
    }

    pub fn stats(&self, now: SystemTime) -> LockoutStats {
        let now = to_ms(now);
        LockoutStats {
            tracked_sources: self.sources.entries.len(),
            tracked_accounts: self.accounts.entries.len(),
            locked_sources: self.sources.locked_count(now),
            locked_accounts: self.accounts.locked_count(now),
            evictions: self.sources.evictions + self.accounts.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::from_u128(1))
    }

    fn acct(ext: &str) -> AccountKey {
        AccountKey::new(tenant(), ext)
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            source_max_failures: 10,
            window: Duration::from_secs(60),
            lock_for: Duration::from_secs(300),
            ..LockoutPolicy::default()
        }
    }

    #[test]
    fn defaults() {
        let p = LockoutPolicy::default();
        assert_eq!(p.max_failures, 5);
        assert_eq!(p.window, Duration::from_secs(60));
        assert_eq!(p.lock_for, Duration::from_secs(300));
        assert!(p.source_max_failures > p.max_failures);
    }

    #[test]
    fn five_failures_in_the_window_lock_the_account() {
        let mut l = Lockout::new(policy());
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        for i in 0..4 {
            assert!(l.record_failure(src, &a, t(i * 10)).is_empty());
            assert_eq!(l.check(src, &a, t(i * 10)), Access::Allowed);
        }
        let ev = l.record_failure(src, &a, t(40));
        assert_eq!(
            ev,
            vec![LockEvent::AccountLocked {
                account: a.clone(),
                until: t(340)
            }]
        );
        assert!(ev[0].to_string().contains("/100 locked until"));
        assert_eq!(l.check(src, &a, t(41)), Access::AccountLocked { until: t(340) });
        // another phone of the same office (same address) still gets in
        assert_eq!(l.check(src, &acct("101"), t(41)), Access::Allowed);
        // the same extension number in another tenant is another account
        let other = AccountKey::new(TenantId(uuid::Uuid::from_u128(2)), "100");
        assert_eq!(l.check(src, &other, t(41)), Access::Allowed);
        // failures while locked neither count nor extend the lock
        assert!(l.record_failure(src, &a, t(100)).is_empty());
        assert_eq!(l.check(src, &a, t(339)), Access::AccountLocked { until: t(340) });
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_lock() {
        let mut l = Lockout::new(policy());
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        // one every 15 s: never 5 inside 60 s
        for i in 0..40 {
            assert!(l.record_failure(src, &a, t(i * 15)).is_empty(), "failure {i}");
            assert_eq!(l.check(src, &a, t(i * 15)), Access::Allowed);
        }
    }

    #[test]
    fn a_lock_expires() {
        let mut l = Lockout::new(policy());
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        for _ in 0..5 {
            l.record_failure(src, &a, t(0));
        }
        assert_eq!(l.check(src, &a, t(299)), Access::AccountLocked { until: t(300) });
        assert_eq!(l.check(src, &a, t(300)), Access::Allowed);
        // and counting starts again from zero
        assert!(l.record_failure(src, &a, t(301)).is_empty());
        assert_eq!(l.check(src, &a, t(301)), Access::Allowed);
        assert_eq!(l.stats(t(301)).locked_accounts, 0);
    }

    #[test]
    fn rotating_extensions_from_one_address_locks_the_address() {
        let mut l = Lockout::new(policy());
        let src = ip("203.0.113.66");
        let mut events = Vec::new();
        for i in 0..10u64 {
            events.extend(l.record_failure(src, &acct(&format!("{}", 200 + i)), t(i)));
        }
        assert_eq!(
            events,
            vec![LockEvent::SourceLocked {
                source: src,
                until: t(309)
            }]
        );
        assert_eq!(
            l.check(src, &acct("999"), t(10)),
            Access::SourceLocked { until: t(309) }
        );
        assert_eq!(l.check(ip("203.0.113.67"), &acct("999"), t(10)), Access::Allowed);
        let s = l.stats(t(10));
        assert_eq!((s.locked_sources, s.locked_accounts), (1, 0));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut l = Lockout::new(policy());
        for i in 0..10u64 {
            l.record_failure(
                ip(&format!("2001:db8:1:2::{:x}", i + 1)),
                &acct(&i.to_string()),
                t(0),
            );
        }
        assert_eq!(
            l.check(ip("2001:db8:1:2:ffff::1"), &acct("x"), t(1)),
            Access::SourceLocked { until: t(300) }
        );
        assert_eq!(l.check(ip("2001:db8:1:3::1"), &acct("x"), t(1)), Access::Allowed);
        for i in 0..10u64 {
            l.record_failure(ip("::ffff:192.0.2.1"), &acct(&format!("m{i}")), t(0));
        }
        assert_eq!(
            l.check(ip("192.0.2.1"), &acct("x"), t(1)),
            Access::SourceLocked { until: t(300) }
        );
    }

    #[test]
    fn many_addresses_against_one_extension_lock_the_extension() {
        let mut l = Lockout::new(policy());
        let a = acct("100");
        let mut events = Vec::new();
        for i in 0..5u64 {
            events.extend(l.record_failure(ip(&format!("192.0.2.{}", i + 1)), &a, t(i)));
        }
        assert_eq!(
            events,
            vec![LockEvent::AccountLocked {
                account: a.clone(),
                until: t(304)
            }]
        );
        // even from a fresh address
        assert_eq!(
            l.check(ip("192.0.2.200"), &a, t(5)),
            Access::AccountLocked { until: t(304) }
        );
    }

    #[test]
    fn success_resets_the_account_count_not_the_source_count() {
        let mut l = Lockout::new(policy());
        let src = ip("198.51.100.7");
        let a = acct("100");
        for i in 0..4 {
            l.record_failure(src, &a, t(i));
        }
        l.record_success(src, &a, t(5));
        for i in 0..4 {
            assert!(l.record_failure(src, &a, t(6 + i)).is_empty());
        }
        assert_eq!(l.check(src, &a, t(10)), Access::Allowed);
        // the source has 8 failures now; 2 more from it lock it despite the success
        l.record_success(src, &a, t(11));
        l.record_failure(src, &acct("101"), t(12));
        let ev = l.record_failure(src, &acct("102"), t(13));
        assert_eq!(
            ev,
            vec![LockEvent::SourceLocked {
                source: src,
                until: t(313)
            }]
        );
    }

    #[test]
    fn success_does_not_lift_a_lock() {
        let mut l = Lockout::new(policy());
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        for _ in 0..5 {
            l.record_failure(src, &a, t(0));
        }
        l.record_success(src, &a, t(1));
        assert_eq!(l.check(src, &a, t(2)), Access::AccountLocked { until: t(300) });
    }

    #[test]
    fn both_locks_in_one_failure() {
        let p = LockoutPolicy {
            max_failures: 3,
            source_max_failures: 3,
            ..policy()
        };
        let mut l = Lockout::new(p);
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        l.record_failure(src, &a, t(0));
        l.record_failure(src, &a, t(1));
        let ev = l.record_failure(src, &a, t(2));
        assert_eq!(ev.len(), 2);
        assert!(matches!(ev[0], LockEvent::SourceLocked { .. }));
        assert!(matches!(ev[1], LockEvent::AccountLocked { .. }));
        assert!(ev[0].to_string().starts_with("source 198.51.100.7 locked until"));
        assert_eq!(l.check(src, &a, t(3)), Access::SourceLocked { until: t(302) });
    }

    #[test]
    fn stale_entries_are_purged() {
        let mut l = Lockout::new(policy());
        for i in 0..100u64 {
            l.record_failure(
                ip(&format!("10.0.{}.{}", i / 256, i % 256)),
                &acct(&i.to_string()),
                t(0),
            );
        }
        assert_eq!(l.stats(t(0)).tracked_sources, 100);
        assert_eq!(l.stats(t(0)).tracked_accounts, 100);
        l.record_failure(ip("10.9.9.9"), &acct("x"), t(61));
        let s = l.stats(t(61));
        assert_eq!((s.tracked_sources, s.tracked_accounts, s.evictions), (1, 1, 0));
    }

    #[test]
    fn full_tables_evict_the_oldest_and_keep_locks() {
        let p = LockoutPolicy {
            max_tracked_sources: 3,
            max_tracked_accounts: 1000,
            ..policy()
        };
        let mut l = Lockout::new(p);
        // lock one source first
        let bad = ip("203.0.113.1");
        for i in 0..10 {
            l.record_failure(bad, &acct(&format!("b{i}")), t(0));
        }
        assert!(matches!(
            l.check(bad, &acct("z"), t(1)),
            Access::SourceLocked { .. }
        ));
        // a flood of fresh addresses: new ones are always admitted, the oldest unlocked evicted
        for i in 0..50u64 {
            let src = ip(&format!("192.0.2.{}", i + 1));
            l.record_failure(src, &acct(&format!("f{i}")), t(1 + i / 10));
            assert_eq!(l.check(src, &acct("z"), t(1 + i / 10)), Access::Allowed);
        }
        let s = l.stats(t(6));
        assert_eq!(s.tracked_sources, 3);
        assert!(s.evictions >= 48);
        // the locked source survived the flood
        assert!(matches!(
            l.check(bad, &acct("z"), t(6)),
            Access::SourceLocked { .. }
        ));
        // the most recent addresses are still counted
        assert!(l.sources.entries.contains_key(&ip("192.0.2.50")));
        assert!(!l.sources.entries.contains_key(&ip("192.0.2.1")));
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let mut l = Lockout::new(policy());
        let (src, a) = (ip("198.51.100.7"), acct("100"));
        for i in [100u64, 50, 0, 200, 10, 10, 1000, 5] {
            l.record_failure(src, &a, t(i));
            let _ = l.check(src, &a, t(i));
        }
        l.record_failure(src, &a, UNIX_EPOCH - Duration::from_secs(10));
        let _ = l.stats(t(0));
    }
}
