//! The behaviour every [`Bus`] must show, written once and run by each implementation's
//! tests through [`bus_conformance_tests!`].
//!
//! Each check takes a fresh bus (or one whose streams are private to the test, e.g. a Redis
//! bus with a unique key prefix) and panics with a message on the first deviation.

use super::{Bus, BusEntry};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const NO_WAIT: Duration = Duration::ZERO;

/// Generates one `#[tokio::test]` per conformance check. `$make` is an expression evaluating
/// to a future of a fixture that derefs to the bus under test; the fixture is dropped (and
/// may clean up) when the test ends.
macro_rules! bus_conformance_tests {
    ($make:expr) => {
        $crate::bus::conformance::bus_conformance_tests!(@each $make;
            append_and_read_in_order,
            read_after_blocks_until_append,
            read_after_times_out_empty,
            trimming_keeps_the_newest,
            group_consumers_get_disjoint_entries,
            read_group_blocks_until_append,
            dead_consumer_entries_are_claimed,
            ensure_group_is_idempotent,
            each_group_sees_every_entry,
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
                    $crate::bus::conformance::$check(&*fixture).await;
                }
            )*
        }
    };
}
pub(crate) use bus_conformance_tests;

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not <ms>-<seq>"));
    (
        ms.parse().unwrap_or_else(|_| panic!("bad ms in {id:?}")),
        seq.parse().unwrap_or_else(|_| panic!("bad seq in {id:?}")),
    )
}

fn ids(entries: &[BusEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

async fn append_all(bus: &dyn Bus, stream: &str, payloads: &[&[u8]]) -> Vec<String> {
    let mut out = Vec::new();
    for p in payloads {
        out.push(bus.append(stream, p, None).await.expect("append"));
    }
    out
}

pub(crate) async fn append_and_read_in_order(bus: &dyn Bus) {
    let s = "conf-order";
    assert_eq!(bus.last_id(s).await.expect("last_id"), None, "absent stream");
    assert!(
        bus.read_after(s, None, 10, NO_WAIT)
            .await
            .expect("read absent")
            .is_empty(),
        "reading an absent stream yields nothing"
    );

    let payloads: Vec<&[u8]> = vec![b"one", b"\x00\xff\x00binary", b"", b"four", b"five"];
    let appended = append_all(bus, s, &payloads).await;
    for pair in appended.windows(2) {
        assert!(
            parse_id(&pair[0]) < parse_id(&pair[1]),
            "ids strictly increase: {pair:?}"
        );
    }
    assert_eq!(
        bus.last_id(s).await.expect("last_id").as_deref(),
        appended.last().map(String::as_str)
    );

    let all = bus.read_after(s, None, 100, NO_WAIT).await.expect("read");
    assert_eq!(ids(&all), appended);
    for (entry, payload) in all.iter().zip(&payloads) {
        assert_eq!(entry.payload, *payload, "payload of {}", entry.id);
        assert_eq!(entry.deliveries, 1);
    }

    let page = bus
        .read_after(s, Some(&appended[1]), 2, NO_WAIT)
        .await
        .expect("read page");
    assert_eq!(ids(&page), appended[2..4].to_vec(), "count and after");

    let started = Instant::now();
    let none = bus
        .read_after(s, appended.last().map(String::as_str), 10, NO_WAIT)
        .await
        .expect("read tail");
    assert!(none.is_empty(), "nothing after the newest entry");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a zero block returns at once"
    );
}

pub(crate) async fn read_after_blocks_until_append(bus: &dyn Bus) {
    let s = "conf-block";
    let first = bus.append(s, b"first", None).await.expect("append");
    let block = Duration::from_secs(5);
    let started = Instant::now();
    let (read, appended) = tokio::join!(bus.read_after(s, Some(&first), 10, block), async {
        sleep(Duration::from_millis(300)).await;
        bus.append(s, b"second", None).await.expect("append")
    });
    let read = read.expect("blocking read");
    let elapsed = started.elapsed();
    assert_eq!(ids(&read), vec![appended], "the read wakes with the new entry");
    assert_eq!(read[0].payload, b"second");
    assert!(
        elapsed >= Duration::from_millis(250),
        "the read waited for the append ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "the read woke on the append, not at the timeout ({elapsed:?})"
    );

    // A reader from the start of an absent stream wakes on the stream's first entry.
    let s2 = "conf-block-absent";
    let (read, appended) = tokio::join!(bus.read_after(s2, None, 10, block), async {
        sleep(Duration::from_millis(200)).await;
        bus.append(s2, b"hello", None).await.expect("append")
    });
    assert_eq!(ids(&read.expect("blocking read")), vec![appended]);
}

pub(crate) async fn read_after_times_out_empty(bus: &dyn Bus) {
    let s = "conf-timeout";
    let id = bus.append(s, b"x", None).await.expect("append");
    let block = Duration::from_millis(400);
    let started = Instant::now();
    let read = bus.read_after(s, Some(&id), 10, block).await.expect("read");
    let elapsed = started.elapsed();
    assert!(read.is_empty(), "nothing new: {read:?}");
    assert!(
        elapsed >= Duration::from_millis(350),
        "waited about block ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "returned soon after block ({elapsed:?})"
    );
}

pub(crate) async fn trimming_keeps_the_newest(bus: &dyn Bus) {
    let s = "conf-trim";
    let total = 300usize;
    let max_len = 10usize;
    for i in 0..total {
        bus.append(s, i.to_string().as_bytes(), Some(max_len))
            .await
            .expect("append");
    }
    let kept = bus.read_after(s, None, 10_000, NO_WAIT).await.expect("read");
    // Redis trims with `MAXLEN ~`, whole radix-tree nodes (100 entries by default) at a time,
    // so "about max_len" means at least max_len and at most one node more.
    assert!(
        kept.len() >= max_len && kept.len() <= max_len + 100,
        "kept {} of {total} with max_len {max_len}",
        kept.len()
    );
    let numbers: Vec<usize> = kept
        .iter()
        .map(|e| {
            String::from_utf8(e.payload.clone())
                .expect("utf8")
                .parse()
                .expect("number")
        })
        .collect();
    let expected: Vec<usize> = (total - kept.len()..total).collect();
    assert_eq!(numbers, expected, "the newest entries are kept, in order");

    // Without max_len nothing is trimmed.
    let s2 = "conf-notrim";
    for i in 0..150usize {
        bus.append(s2, i.to_string().as_bytes(), None)
            .await
            .expect("append");
    }
    let all = bus.read_after(s2, None, 10_000, NO_WAIT).await.expect("read");
    assert_eq!(all.len(), 150);
}

pub(crate) async fn group_consumers_get_disjoint_entries(bus: &dyn Bus) {
    let (s, g) = ("conf-group", "workers");
    bus.ensure_group(s, g).await.expect("ensure_group");
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("e{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let appended = append_all(bus, s, &refs).await;

    let a = bus.read_group(s, g, "c1", 4, NO_WAIT).await.expect("read c1");
    let b = bus.read_group(s, g, "c2", 100, NO_WAIT).await.expect("read c2");
    assert_eq!(a.len(), 4, "count is honoured");
    assert_eq!(b.len(), 6, "the second consumer gets the rest");
    let ids_a: BTreeSet<String> = ids(&a).into_iter().collect();
    let ids_b: BTreeSet<String> = ids(&b).into_iter().collect();
    assert!(ids_a.is_disjoint(&ids_b), "no entry goes to both consumers");
    let union: Vec<String> = ids_a.union(&ids_b).cloned().collect();
    let mut expected = appended.clone();
    expected.sort_by_key(|id| parse_id(id));
    let mut union_sorted = union;
    union_sorted.sort_by_key(|id| parse_id(id));
    assert_eq!(union_sorted, expected, "together they get every entry");
    for e in a.iter().chain(&b) {
        assert_eq!(e.deliveries, 1, "first delivery of {}", e.id);
        let i = appended.iter().position(|id| *id == e.id).expect("known id");
        assert_eq!(e.payload, payloads[i]);
    }

    assert!(
        bus.read_group(s, g, "c3", 10, NO_WAIT)
            .await
            .expect("read c3")
            .is_empty(),
        "nothing is delivered twice to the group"
    );
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 10);
    bus.ack(s, g, &ids(&a)).await.expect("ack a");
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 6);
    bus.ack(s, g, &ids(&b)).await.expect("ack b");
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 0);
    bus.ack(s, g, &ids(&b)).await.expect("acking twice is harmless");
    bus.ack(s, g, &[]).await.expect("acking nothing is harmless");
}

pub(crate) async fn read_group_blocks_until_append(bus: &dyn Bus) {
    let (s, g) = ("conf-group-block", "workers");
    bus.ensure_group(s, g).await.expect("ensure_group");
    let started = Instant::now();
    let (read, appended) = tokio::join!(bus.read_group(s, g, "c1", 10, Duration::from_secs(5)), async {
        sleep(Duration::from_millis(300)).await;
        bus.append(s, b"job", None).await.expect("append")
    });
    let elapsed = started.elapsed();
    let read = read.expect("blocking read_group");
    assert_eq!(ids(&read), vec![appended]);
    assert_eq!(read[0].payload, b"job");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "woke on the append ({elapsed:?})"
    );

    let started = Instant::now();
    let none = bus
        .read_group(s, g, "c1", 10, Duration::from_millis(300))
        .await
        .expect("read_group");
    let elapsed = started.elapsed();
    assert!(none.is_empty());
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "timed out after about block ({elapsed:?})"
    );
    bus.ack(s, g, &ids(&read)).await.expect("ack");
}

pub(crate) async fn dead_consumer_entries_are_claimed(bus: &dyn Bus) {
    let (s, g) = ("conf-claim", "workers");
    bus.ensure_group(s, g).await.expect("ensure_group");
    let appended = append_all(bus, s, &[b"a", b"b", b"c"]).await;
    // "dead" reads and never acknowledges, as if its process had died.
    let dead = bus.read_group(s, g, "dead", 3, NO_WAIT).await.expect("read dead");
    assert_eq!(ids(&dead), appended);
    // A later entry that the live consumer reads and acknowledges itself.
    let own = bus.append(s, b"d", None).await.expect("append");
    let live = bus
        .read_group(s, g, "live", 10, NO_WAIT)
        .await
        .expect("read live");
    assert_eq!(ids(&live), vec![own.clone()]);
    bus.ack(s, g, &[own]).await.expect("ack own");

    let min_idle = Duration::from_millis(300);
    assert!(
        bus.claim_stale(s, g, "live", min_idle, 10)
            .await
            .expect("claim early")
            .is_empty(),
        "entries are not claimed before min_idle"
    );
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 3);

    sleep(Duration::from_millis(400)).await;
    let first = bus
        .claim_stale(s, g, "live", min_idle, 2)
        .await
        .expect("claim two");
    assert_eq!(ids(&first), appended[..2].to_vec(), "count is honoured");
    let rest = bus
        .claim_stale(s, g, "live", min_idle, 10)
        .await
        .expect("claim rest");
    assert_eq!(
        ids(&rest),
        appended[2..].to_vec(),
        "just-claimed entries are not idle any more; the third one is"
    );
    for (e, payload) in first.iter().chain(&rest).zip([b"a", b"b", b"c"]) {
        assert_eq!(e.payload, payload, "payload of {}", e.id);
        assert!(
            e.deliveries >= 2,
            "{} was delivered twice, reported {}",
            e.id,
            e.deliveries
        );
    }
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 3);

    let claimed: Vec<String> = ids(&first).into_iter().chain(ids(&rest)).collect();
    bus.ack(s, g, &claimed).await.expect("ack");
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 0);
    sleep(Duration::from_millis(400)).await;
    assert!(
        bus.claim_stale(s, g, "other", min_idle, 10)
            .await
            .expect("claim after ack")
            .is_empty(),
        "acknowledged entries are never claimed"
    );
}

pub(crate) async fn ensure_group_is_idempotent(bus: &dyn Bus) {
    let (s, g) = ("conf-ensure", "workers");
    bus.ensure_group(s, g).await.expect("first ensure_group");
    bus.ensure_group(s, g).await.expect("second ensure_group");
    assert_eq!(
        bus.last_id(s).await.expect("last_id"),
        None,
        "the created stream is empty"
    );
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 0);

    let appended = append_all(bus, s, &[b"1", b"2"]).await;
    let got = bus.read_group(s, g, "c1", 10, NO_WAIT).await.expect("read");
    assert_eq!(ids(&got), appended, "a group reads from the start");
    bus.ensure_group(s, g).await.expect("ensure_group again");
    assert!(
        bus.read_group(s, g, "c1", 10, NO_WAIT)
            .await
            .expect("read again")
            .is_empty(),
        "ensure_group on an existing group does not rewind it"
    );
    assert_eq!(bus.pending_count(s, g).await.expect("pending"), 2);

    // A group created after entries exist still reads them all.
    bus.ensure_group(s, "late").await.expect("late group");
    let late = bus
        .read_group(s, "late", "c1", 10, NO_WAIT)
        .await
        .expect("read late");
    assert_eq!(ids(&late), appended);
}

pub(crate) async fn each_group_sees_every_entry(bus: &dyn Bus) {
    let s = "conf-fanout";
    bus.ensure_group(s, "g1").await.expect("g1");
    bus.ensure_group(s, "g2").await.expect("g2");
    let appended = append_all(bus, s, &[b"w", b"x", b"y", b"z"]).await;
    let one = bus.read_group(s, "g1", "c", 100, NO_WAIT).await.expect("g1");
    let two = bus.read_group(s, "g2", "c", 100, NO_WAIT).await.expect("g2");
    assert_eq!(ids(&one), appended);
    assert_eq!(ids(&two), appended);
    bus.ack(s, "g1", &ids(&one)).await.expect("ack g1");
    assert_eq!(bus.pending_count(s, "g1").await.expect("g1"), 0);
    assert_eq!(
        bus.pending_count(s, "g2").await.expect("g2"),
        4,
        "acking in one group does not touch another"
    );
    // Plain readers are independent of groups.
    let plain = bus.read_after(s, None, 100, NO_WAIT).await.expect("plain");
    assert_eq!(ids(&plain), appended);
}

pub(crate) async fn ping_succeeds(bus: &dyn Bus) {
    bus.ping().await.expect("ping");
}
