//! The behaviour every [`ObjectStore`] must show, written once and run by each
//! implementation's tests through [`object_conformance_tests!`].

use super::{ObjectError, ObjectMeta, ObjectStore};
use bytes::Bytes;
use std::time::Duration;

/// Generates one `#[tokio::test]` per conformance check. `$make` evaluates to a future of a
/// fresh fixture that derefs to the store under test (its own empty namespace); `$fetch` is
/// an `async fn(&Fixture, &str) -> Option<Vec<u8>>` that GETs a presigned URL the way a
/// client would (None: refused).
macro_rules! object_conformance_tests {
    ($make:expr, $fetch:path) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::objects::conformance::object_conformance_tests!(@each $make;
                round_trip_binary,
                overwrite_replaces,
                get_missing_is_not_found,
                delete_is_idempotent,
                list_by_prefix_sorted_with_sizes,
                invalid_keys_are_rejected,
                ping_succeeds,
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn presigned_get_serves_the_object() {
                let fixture = $make.await;
                $crate::objects::conformance::presigned_get_serves_the_object(
                    &*fixture,
                    async |url: &str| $fetch(&fixture, url).await,
                )
                .await;
            }
        }
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $make.await;
                $crate::objects::conformance::$check(&*fixture).await;
            }
        )*
    };
}
pub(crate) use object_conformance_tests;

/// Bytes that catch text-mode or NUL-terminated handling: every byte value, zeros included.
fn binary_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 256) as u8).collect()
}

async fn put(store: &dyn ObjectStore, key: &str, body: &[u8]) {
    store
        .put(key, Bytes::copy_from_slice(body), "application/octet-stream")
        .await
        .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
}

async fn get(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key:?}: {e}"))
        .to_vec()
}

pub(crate) async fn round_trip_binary(store: &dyn ObjectStore) {
    let small = b"\x00\x01\x00\xffnul\x00end\r\n\x1a".to_vec();
    put(store, "t1/bin/small.bin", &small).await;
    assert_eq!(get(store, "t1/bin/small.bin").await, small);

    let big = binary_body(2 * 1024 * 1024);
    assert!(big.contains(&0) && big.contains(&255));
    put(store, "t1/bin/big.bin", &big).await;
    let back = get(store, "t1/bin/big.bin").await;
    assert_eq!(back.len(), big.len(), "2 MiB body length");
    assert!(back == big, "2 MiB body content");

    put(store, "t1/bin/empty", b"").await;
    assert!(get(store, "t1/bin/empty").await.is_empty());

    let key = "t1/names/with space, ü & ✓ (1).txt";
    put(store, key, b"unicode key").await;
    assert_eq!(get(store, key).await, b"unicode key");
    let listed = store.list("t1/names/").await.expect("list");
    assert_eq!(
        listed,
        vec![ObjectMeta {
            key: key.to_owned(),
            size: 11
        }]
    );
}

pub(crate) async fn overwrite_replaces(store: &dyn ObjectStore) {
    let key = "t1/prompts/greeting.wav";
    put(store, key, b"first version, the longer one").await;
    put(store, key, b"v2").await;
    assert_eq!(get(store, key).await, b"v2");
    assert_eq!(
        store.list("t1/prompts/").await.expect("list"),
        vec![ObjectMeta {
            key: key.to_owned(),
            size: 2
        }],
        "one object with the new size"
    );
}

pub(crate) async fn get_missing_is_not_found(store: &dyn ObjectStore) {
    match store.get("t1/missing/object.wav").await {
        Err(ObjectError::NotFound(key)) => assert_eq!(key, "t1/missing/object.wav"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A key whose "folder" is an object is missing too. (Not checked: getting a "folder"
    // itself, which s3s-fs answers with a 500 where AWS says 404; the dir store's own tests
    // cover it.)
    put(store, "t1/file", b"x").await;
    assert!(matches!(
        store.get("t1/file/child").await,
        Err(ObjectError::NotFound(_))
    ));
}

pub(crate) async fn delete_is_idempotent(store: &dyn ObjectStore) {
    let key = "t1/exports/x.csv";
    put(store, key, b"a,b\n").await;
    store.delete(key).await.expect("delete");
    assert!(matches!(store.get(key).await, Err(ObjectError::NotFound(_))));
    store.delete(key).await.expect("delete again");
    store.delete("t1/never/existed").await.expect("delete absent");
    assert!(
        store.list("t1/exports/").await.expect("list").is_empty(),
        "deleted objects are not listed"
    );
}

pub(crate) async fn list_by_prefix_sorted_with_sizes(store: &dyn ObjectStore) {
    let objects: [(&str, &[u8]); 6] = [
        ("t1/rec/b.wav", b"bbb"),
        ("t2/rec/a.wav", b"22222"),
        ("t1/rec/sub/c.wav", b"cc"),
        ("t1/recx", b"xxxx"),
        ("t1/rec/a.wav", b"a"),
        ("t1/rec/a.wav.meta", b"mmmmmm"),
    ];
    for (key, body) in objects {
        put(store, key, body).await;
    }
    let meta = |key: &str, size: u64| ObjectMeta {
        key: key.to_owned(),
        size,
    };

    assert_eq!(
        store.list("t1/rec/").await.expect("list"),
        vec![
            meta("t1/rec/a.wav", 1),
            meta("t1/rec/a.wav.meta", 6),
            meta("t1/rec/b.wav", 3),
            meta("t1/rec/sub/c.wav", 2),
        ],
        "a folder prefix, nested keys included, sorted by key"
    );
    assert_eq!(
        store.list("t1/rec").await.expect("list"),
        vec![
            meta("t1/rec/a.wav", 1),
            meta("t1/rec/a.wav.meta", 6),
            meta("t1/rec/b.wav", 3),
            meta("t1/rec/sub/c.wav", 2),
            meta("t1/recx", 4),
        ],
        "a prefix is a string prefix, not a folder"
    );
    assert_eq!(
        store.list("t1/rec/a").await.expect("list"),
        vec![meta("t1/rec/a.wav", 1), meta("t1/rec/a.wav.meta", 6)],
        "a prefix ending inside a name"
    );
    assert_eq!(
        store.list("t1/rec/a.wav").await.expect("list"),
        vec![meta("t1/rec/a.wav", 1), meta("t1/rec/a.wav.meta", 6)]
    );
    assert!(
        store.list("t3/").await.expect("list").is_empty(),
        "a prefix that matches nothing"
    );
    assert!(store.list("t1/rec/zzz").await.expect("list").is_empty());
    let all = store.list("").await.expect("list all");
    let keys: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "t1/rec/a.wav",
            "t1/rec/a.wav.meta",
            "t1/rec/b.wav",
            "t1/rec/sub/c.wav",
            "t1/recx",
            "t2/rec/a.wav"
        ]
    );
}

pub(crate) async fn invalid_keys_are_rejected(store: &dyn ObjectStore) {
    for key in [
        "", "/abs/key", "t1//x", "t1/", "../x", "t1/../x", "t1/./x", "a\\b", "a\0b",
    ] {
        let is_invalid = |r: Result<(), ObjectError>| matches!(r, Err(ObjectError::InvalidKey(_)));
        assert!(
            is_invalid(store.put(key, Bytes::from_static(b"x"), "text/plain").await),
            "put {key:?}"
        );
        assert!(
            matches!(store.get(key).await, Err(ObjectError::InvalidKey(_))),
            "get {key:?}"
        );
        assert!(is_invalid(store.delete(key).await), "delete {key:?}");
        assert!(
            matches!(
                store.presign_get(key, Duration::from_secs(60)).await,
                Err(ObjectError::InvalidKey(_))
            ),
            "presign {key:?}"
        );
    }
    assert!(
        store.list("").await.expect("list").is_empty(),
        "nothing was written"
    );
}

/// Flips the last character of the URL's signature parameter (`sig`, `X-Amz-Signature`).
fn tamper(url: &str) -> String {
    let (base, query) = url.split_once('?').expect("a presigned URL has a query");
    let params: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let lower = name.to_ascii_lowercase();
            if lower == "sig" || lower.ends_with("signature") {
                let mut v = value.to_owned();
                let last = v.pop().expect("non-empty signature");
                v.push(if last == '0' { '1' } else { '0' });
                format!("{name}={v}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    let tampered = format!("{base}?{}", params.join("&"));
    assert_ne!(tampered, url, "the URL has a signature parameter");
    tampered
}

pub(crate) async fn presigned_get_serves_the_object<F>(store: &dyn ObjectStore, fetch: F)
where
    F: AsyncFn(&str) -> Option<Vec<u8>>,
{
    let key = "t1/recordings/2024/call 1.wav";
    let body = binary_body(70_000);
    put(store, key, &body).await;
    let url = store
        .presign_get(key, Duration::from_secs(300))
        .await
        .expect("presign");
    assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
    assert_eq!(
        fetch(&url).await.as_deref(),
        Some(body.as_slice()),
        "the presigned URL serves the object: {url}"
    );
    assert_eq!(
        fetch(&tamper(&url)).await,
        None,
        "a tampered signature is refused"
    );

    let missing = store
        .presign_get("t1/recordings/missing.wav", Duration::from_secs(300))
        .await
        .expect("presigning does not check existence");
    assert_eq!(fetch(&missing).await, None, "a missing object is not served");
}

pub(crate) async fn ping_succeeds(store: &dyn ObjectStore) {
    store.ping().await.expect("ping");
}
