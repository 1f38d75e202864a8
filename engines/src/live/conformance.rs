//! The behaviour every [`LiveState`] must show, written once and run by each implementation's
//! tests through [`live_conformance_tests!`].
//!
//! Expiry is checked with short TTLs and real sleeps (Redis keeps its own clock, so time cannot
//! be faked there). Assertions that something is still alive leave a wide margin before its
//! expiry, so a slow machine does not make them flaky; assertions that something is gone wait
//! well past it.

use super::{LiveEntry, LiveState};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

const LONG: Duration = Duration::from_secs(30);

/// What a conformance test gets: the store under test (private to the test, e.g. a Redis store
/// with a unique key prefix) and, for races, a second handle onto the same state as a second
/// edge node would have it (its own connection, for Redis).
pub(crate) trait LiveFixture: Send + Sync + 'static {
    fn store(&self) -> Arc<dyn LiveState>;
    fn peer(&self) -> impl Future<Output = Arc<dyn LiveState>> + Send;
}

/// An in-process store is its own peer.
impl<T: LiveState> LiveFixture for Arc<T> {
    fn store(&self) -> Arc<dyn LiveState> {
        self.clone()
    }
    fn peer(&self) -> impl Future<Output = Arc<dyn LiveState>> + Send {
        let store: Arc<dyn LiveState> = self.clone();
        async move { store }
    }
}

/// Generates one `#[tokio::test]` per conformance check. `$make` is an expression evaluating
/// to a future of a [`LiveFixture`]; the fixture is dropped (and may clean up) when the test
/// ends.
macro_rules! live_conformance_tests {
    ($make:expr) => {
        $crate::live::conformance::live_conformance_tests!(@each $make;
            entries_round_trip_sorted_by_field,
            entries_expire_independently,
            remaining_ttl_is_reported,
            overwrite_replaces_value_and_ttl,
            remove_entry_reports_live_removals,
            remove_key_drops_every_entry,
            keys_with_prefix_lists_only_live_keys,
            keys_with_prefix_takes_the_prefix_literally,
            keys_with_prefix_pages_through_many_keys,
            leases_are_a_separate_namespace,
            lease_acquire_refuse_renew_release,
            lease_expiry_frees_it_for_another_holder,
            same_holder_acquire_and_renew_extend_the_lease,
            concurrent_acquires_have_exactly_one_winner,
            ping_succeeds,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = $make.await;
                    $crate::live::conformance::$check(&fixture).await;
                }
            )*
        }
    };
}
pub(crate) use live_conformance_tests;

fn fields(entries: &[LiveEntry]) -> Vec<&str> {
    entries.iter().map(|(f, _, _)| f.as_str()).collect()
}

async fn fields_of(live: &dyn LiveState, key: &str) -> Vec<String> {
    live.entries(key)
        .await
        .expect("entries")
        .into_iter()
        .map(|(f, _, _)| f)
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) async fn entries_round_trip_sorted_by_field(f: &impl LiveFixture) {
    let live = f.store();
    let key = "reg:t1:100";
    assert!(live.entries(key).await.expect("entries").is_empty(), "absent key");
    let binary: Vec<u8> = (0..=255).collect();
    live.put_entry(key, "sip:b@10.0.0.2:5060", &binary, LONG)
        .await
        .expect("put");
    live.put_entry(key, "sip:a@10.0.0.1:5060;transport=tcp", b"", LONG)
        .await
        .expect("put");
    live.put_entry(key, "sip:c@[2001:db8::1]", b"third", LONG)
        .await
        .expect("put");
    let entries = live.entries(key).await.expect("entries");
    assert_eq!(
        fields(&entries),
        vec![
            "sip:a@10.0.0.1:5060;transport=tcp",
            "sip:b@10.0.0.2:5060",
            "sip:c@[2001:db8::1]"
        ],
        "ordered by field"
    );
    assert_eq!(entries[0].1, b"", "empty value");
    assert_eq!(entries[1].1, binary, "binary value");
    assert_eq!(entries[2].1, b"third");
    assert!(
        live.entries("reg:t1:101").await.expect("entries").is_empty(),
        "other key"
    );
}

pub(crate) async fn entries_expire_independently(f: &impl LiveFixture) {
    let live = f.store();
    let key = "reg:t1:200";
    live.put_entry(key, "short", b"1", Duration::from_millis(250))
        .await
        .expect("put");
    live.put_entry(key, "medium", b"2", Duration::from_millis(900))
        .await
        .expect("put");
    live.put_entry(key, "long", b"3", LONG).await.expect("put");
    live.put_entry(key, "zero", b"4", Duration::ZERO)
        .await
        .expect("put");
    assert_eq!(
        fields_of(&*live, key).await,
        strings(&["long", "medium", "short"]),
        "all but the zero-TTL entry live at first"
    );
    sleep(Duration::from_millis(450)).await;
    assert_eq!(
        fields_of(&*live, key).await,
        strings(&["long", "medium"]),
        "the short entry expired alone"
    );
    sleep(Duration::from_millis(700)).await;
    assert_eq!(
        fields_of(&*live, key).await,
        strings(&["long"]),
        "then the medium one"
    );
    let entries = live.entries(key).await.expect("entries");
    assert_eq!(entries[0].1, b"3", "the survivor keeps its value");
}

pub(crate) async fn remaining_ttl_is_reported(f: &impl LiveFixture) {
    let live = f.store();
    let key = "reg:t1:300";
    live.put_entry(key, "a", b"x", Duration::from_secs(10))
        .await
        .expect("put");
    live.put_entry(key, "b", b"x", Duration::from_secs(60))
        .await
        .expect("put");
    let entries = live.entries(key).await.expect("entries");
    let (a, b) = (entries[0].2, entries[1].2);
    assert!(
        a <= Duration::from_secs(10) && a > Duration::from_secs(8),
        "remaining of a 10 s entry: {a:?}"
    );
    assert!(
        b <= Duration::from_secs(60) && b > Duration::from_secs(58),
        "remaining of a 60 s entry: {b:?}"
    );
    sleep(Duration::from_millis(300)).await;
    let later = live.entries(key).await.expect("entries")[0].2;
    assert!(later < a, "remaining time goes down ({a:?} then {later:?})");
}

pub(crate) async fn overwrite_replaces_value_and_ttl(f: &impl LiveFixture) {
    let live = f.store();
    let key = "reg:t1:400";
    live.put_entry(key, "c", b"v1", Duration::from_millis(1000))
        .await
        .expect("put");
    sleep(Duration::from_millis(700)).await;
    live.put_entry(key, "c", b"v2", Duration::from_millis(1000))
        .await
        .expect("re-put");
    sleep(Duration::from_millis(500)).await;
    let entries = live.entries(key).await.expect("entries");
    assert_eq!(
        entries.len(),
        1,
        "the refreshed entry outlives its first TTL: {entries:?}"
    );
    assert_eq!(entries[0].1, b"v2", "and holds the new value");

    // An overwrite may also shorten the TTL.
    live.put_entry(key, "c", b"v3", Duration::from_millis(200))
        .await
        .expect("shorten");
    sleep(Duration::from_millis(450)).await;
    assert!(
        live.entries(key).await.expect("entries").is_empty(),
        "the shortened entry expired"
    );
    assert!(
        live.keys_with_prefix("reg:t1:400")
            .await
            .expect("keys")
            .is_empty(),
        "and its key with it"
    );
}

pub(crate) async fn remove_entry_reports_live_removals(f: &impl LiveFixture) {
    let live = f.store();
    let key = "reg:t1:500";
    live.put_entry(key, "a", b"x", LONG).await.expect("put");
    live.put_entry(key, "b", b"x", LONG).await.expect("put");
    live.put_entry(key, "brief", b"x", Duration::from_millis(100))
        .await
        .expect("put");
    assert!(
        live.remove_entry(key, "a").await.expect("remove"),
        "live entry removed"
    );
    assert!(
        !live.remove_entry(key, "a").await.expect("remove"),
        "already gone"
    );
    assert!(
        !live.remove_entry(key, "nope").await.expect("remove"),
        "absent field"
    );
    assert!(
        !live.remove_entry("reg:t1:absent", "a").await.expect("remove"),
        "absent key"
    );
    sleep(Duration::from_millis(300)).await;
    assert!(
        !live.remove_entry(key, "brief").await.expect("remove"),
        "an expired entry is not a removal"
    );
    assert_eq!(fields_of(&*live, key).await, strings(&["b"]));
    assert!(live.remove_entry(key, "b").await.expect("remove"));
    assert!(live.entries(key).await.expect("entries").is_empty());
    assert!(
        live.keys_with_prefix(key).await.expect("keys").is_empty(),
        "a key goes with its last entry"
    );
}

pub(crate) async fn remove_key_drops_every_entry(f: &impl LiveFixture) {
    let live = f.store();
    live.put_entry("reg:t1:600", "a", b"x", LONG).await.expect("put");
    live.put_entry("reg:t1:600", "b", b"x", LONG).await.expect("put");
    live.put_entry("reg:t1:601", "a", b"x", LONG).await.expect("put");
    live.remove_key("reg:t1:600").await.expect("remove_key");
    assert!(live.entries("reg:t1:600").await.expect("entries").is_empty());
    assert_eq!(
        fields_of(&*live, "reg:t1:601").await,
        strings(&["a"]),
        "other keys stay"
    );
    live.remove_key("reg:t1:absent")
        .await
        .expect("removing an absent key is fine");
    // The key can be used again afterwards.
    live.put_entry("reg:t1:600", "c", b"y", LONG).await.expect("put");
    assert_eq!(fields_of(&*live, "reg:t1:600").await, strings(&["c"]));
}

pub(crate) async fn keys_with_prefix_lists_only_live_keys(f: &impl LiveFixture) {
    let live = f.store();
    assert!(
        live.keys_with_prefix("").await.expect("keys").is_empty(),
        "fresh store"
    );
    live.put_entry("reg:t1:100", "a", b"x", LONG).await.expect("put");
    live.put_entry("reg:t1:101", "a", b"x", LONG).await.expect("put");
    live.put_entry("reg:t10:100", "a", b"x", LONG).await.expect("put");
    live.put_entry("reg:t2:100", "a", b"x", LONG).await.expect("put");
    live.put_entry("agent:t1:7", "state", b"x", LONG)
        .await
        .expect("put");
    live.put_entry("reg:t1:102", "a", b"x", Duration::from_millis(200))
        .await
        .expect("put");
    // A key whose long entry was removed and whose short one expires.
    live.put_entry("reg:t1:103", "long", b"x", LONG)
        .await
        .expect("put");
    live.put_entry("reg:t1:103", "short", b"x", Duration::from_millis(200))
        .await
        .expect("put");
    live.remove_entry("reg:t1:103", "long").await.expect("remove");
    assert_eq!(
        live.keys_with_prefix("reg:t1:").await.expect("keys"),
        strings(&["reg:t1:100", "reg:t1:101", "reg:t1:102", "reg:t1:103"])
    );
    sleep(Duration::from_millis(400)).await;
    assert_eq!(
        live.keys_with_prefix("reg:t1:").await.expect("keys"),
        strings(&["reg:t1:100", "reg:t1:101"]),
        "keys whose entries all expired are not listed"
    );
    assert_eq!(
        live.keys_with_prefix("reg:t1").await.expect("keys"),
        strings(&["reg:t10:100", "reg:t1:100", "reg:t1:101"]),
        "sorted bytewise"
    );
    live.remove_key("reg:t1:101").await.expect("remove_key");
    assert_eq!(
        live.keys_with_prefix("").await.expect("keys"),
        strings(&["agent:t1:7", "reg:t10:100", "reg:t1:100", "reg:t2:100"])
    );
    assert!(live.keys_with_prefix("nothing:").await.expect("keys").is_empty());
}

pub(crate) async fn keys_with_prefix_takes_the_prefix_literally(f: &impl LiveFixture) {
    let live = f.store();
    for key in ["odd*[x]?\\", "odd*", "oddity", "od", "odd?", "odd[x]"] {
        live.put_entry(key, "f", b"x", LONG).await.expect("put");
    }
    assert_eq!(
        live.keys_with_prefix("odd*").await.expect("keys"),
        strings(&["odd*", "odd*[x]?\\"])
    );
    assert_eq!(
        live.keys_with_prefix("odd?").await.expect("keys"),
        strings(&["odd?"])
    );
    assert_eq!(
        live.keys_with_prefix("odd[").await.expect("keys"),
        strings(&["odd[x]"])
    );
    assert_eq!(
        live.keys_with_prefix("odd*[x]?\\").await.expect("keys"),
        strings(&["odd*[x]?\\"])
    );
}

pub(crate) async fn keys_with_prefix_pages_through_many_keys(f: &impl LiveFixture) {
    let live = f.store();
    let mut expected = Vec::new();
    for i in 0..300 {
        let key = format!("reg:big:{i:04}");
        live.put_entry(&key, "f", b"x", LONG).await.expect("put");
        expected.push(key);
    }
    for i in 0..50 {
        live.put_entry(&format!("reg:other:{i}"), "f", b"x", LONG)
            .await
            .expect("put");
    }
    assert_eq!(live.keys_with_prefix("reg:big:").await.expect("keys"), expected);
}

pub(crate) async fn leases_are_a_separate_namespace(f: &impl LiveFixture) {
    let live = f.store();
    assert!(live
        .try_acquire("reg:t1:100", "node-a", LONG)
        .await
        .expect("acquire"));
    assert!(
        live.keys_with_prefix("").await.expect("keys").is_empty(),
        "a lease is not a key"
    );
    live.put_entry("reg:t1:100", "f", b"x", LONG).await.expect("put");
    assert_eq!(fields_of(&*live, "reg:t1:100").await, strings(&["f"]));
    assert_eq!(
        live.holder("reg:t1:100").await.expect("holder").as_deref(),
        Some("node-a"),
        "a key of the same name leaves the lease alone"
    );
    live.remove_key("reg:t1:100").await.expect("remove_key");
    assert_eq!(
        live.holder("reg:t1:100").await.expect("holder").as_deref(),
        Some("node-a")
    );
    assert!(live.release("reg:t1:100", "node-a").await.expect("release"));
}

pub(crate) async fn lease_acquire_refuse_renew_release(f: &impl LiveFixture) {
    let live = f.store();
    let lease = "tenant:t1:eu";
    assert_eq!(live.holder(lease).await.expect("holder"), None, "free at first");
    assert!(
        !live.renew(lease, "a", LONG).await.expect("renew"),
        "renewing a free lease fails"
    );
    assert!(
        !live.release(lease, "a").await.expect("release"),
        "releasing a free lease fails"
    );
    assert!(
        live.try_acquire(lease, "a", LONG).await.expect("acquire"),
        "free: acquired"
    );
    assert_eq!(live.holder(lease).await.expect("holder").as_deref(), Some("a"));
    assert!(
        !live.try_acquire(lease, "b", LONG).await.expect("acquire"),
        "held: refused"
    );
    assert!(
        live.try_acquire(lease, "a", LONG).await.expect("acquire"),
        "same holder: ok"
    );
    assert!(
        live.renew(lease, "a", LONG).await.expect("renew"),
        "holder renews"
    );
    assert!(
        !live.renew(lease, "b", LONG).await.expect("renew"),
        "non-holder cannot renew"
    );
    assert!(
        !live.release(lease, "b").await.expect("release"),
        "non-holder cannot release"
    );
    assert_eq!(
        live.holder(lease).await.expect("holder").as_deref(),
        Some("a"),
        "refused calls leave the lease alone"
    );
    assert!(
        live.try_acquire("tenant:t2:eu", "b", LONG)
            .await
            .expect("acquire"),
        "leases are independent"
    );
    assert!(
        live.release(lease, "a").await.expect("release"),
        "holder releases"
    );
    assert_eq!(live.holder(lease).await.expect("holder"), None, "released: free");
    assert!(
        !live.release(lease, "a").await.expect("release"),
        "released once only"
    );
    assert!(
        live.try_acquire(lease, "b", LONG).await.expect("acquire"),
        "free again: b"
    );
    assert_eq!(live.holder(lease).await.expect("holder").as_deref(), Some("b"));
}

pub(crate) async fn lease_expiry_frees_it_for_another_holder(f: &impl LiveFixture) {
    let live = f.store();
    let lease = "tenant:t3:eu";
    assert!(live
        .try_acquire(lease, "a", Duration::from_millis(250))
        .await
        .expect("acquire"));
    sleep(Duration::from_millis(450)).await;
    assert_eq!(live.holder(lease).await.expect("holder"), None, "lapsed");
    assert!(
        !live.renew(lease, "a", LONG).await.expect("renew"),
        "a lapsed lease is not renewed"
    );
    assert!(
        live.try_acquire(lease, "b", LONG).await.expect("acquire"),
        "b takes over"
    );
    assert!(
        !live.renew(lease, "a", LONG).await.expect("renew"),
        "the old holder is refused"
    );
    assert!(!live.release(lease, "a").await.expect("release"));
    assert_eq!(live.holder(lease).await.expect("holder").as_deref(), Some("b"));
}

pub(crate) async fn same_holder_acquire_and_renew_extend_the_lease(f: &impl LiveFixture) {
    let live = f.store();
    let lease = "tenant:t4:eu";
    let ttl = Duration::from_millis(1000);
    assert!(live.try_acquire(lease, "a", ttl).await.expect("acquire"));
    sleep(Duration::from_millis(700)).await;
    assert!(live.try_acquire(lease, "a", ttl).await.expect("re-acquire"));
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        live.holder(lease).await.expect("holder").as_deref(),
        Some("a"),
        "re-acquiring renewed the lease past its first TTL"
    );
    sleep(Duration::from_millis(200)).await;
    assert!(live.renew(lease, "a", ttl).await.expect("renew"));
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        live.holder(lease).await.expect("holder").as_deref(),
        Some("a"),
        "renew extended it past the re-acquired TTL"
    );
    // Renewing may also shorten it.
    assert!(live
        .renew(lease, "a", Duration::from_millis(100))
        .await
        .expect("renew"));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(live.holder(lease).await.expect("holder"), None);
}

pub(crate) async fn concurrent_acquires_have_exactly_one_winner(f: &impl LiveFixture) {
    let store = f.store();
    let peer = f.peer().await;
    for round in 0..100 {
        let lease = format!("race:{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let contender = |live: Arc<dyn LiveState>, holder: &'static str| {
            let (lease, barrier) = (lease.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                live.try_acquire(&lease, holder, LONG).await.expect("acquire")
            })
        };
        let a = contender(store.clone(), "node-a");
        let b = contender(peer.clone(), "node-b");
        let (a, b) = (a.await.expect("task a"), b.await.expect("task b"));
        assert!(a ^ b, "round {round}: exactly one winner (a: {a}, b: {b})");
        let winner = if a { "node-a" } else { "node-b" };
        assert_eq!(
            store.holder(&lease).await.expect("holder").as_deref(),
            Some(winner)
        );
        assert_eq!(
            peer.holder(&lease).await.expect("holder").as_deref(),
            Some(winner)
        );
    }
}

pub(crate) async fn ping_succeeds(f: &impl LiveFixture) {
    f.store().ping().await.expect("ping");
}
