//! Production object store over S3 (AWS or any S3-compatible server).
//!
//! The client is configured explicitly (static keys, region, endpoint): no environment or
//! instance-metadata credential chain, so start-up never waits on a metadata service.
//! Objects live at `{key_prefix}{key}` in one bucket.

use super::{validate_key, ObjectError, ObjectMeta, ObjectStore};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach the bucket.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `https://s3.example.com`; None: AWS's endpoint for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `endpoint/bucket/key` URLs instead of `bucket.endpoint/key` (most self-hosted servers).
    #[serde(default)]
    pub path_style: bool,
    /// Prepended to every key, e.g. `pbx/`, to share a bucket.
    #[serde(default)]
    pub key_prefix: String,
}

impl fmt::Debug for S3Config {
    // Never print the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// [`ObjectStore`] over an S3 bucket.
#[derive(Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    key_prefix: String,
    region: String,
}

impl fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("bucket", &self.bucket)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

fn http_status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn unavailable<E, R>(op: &str, key: &str, e: &SdkError<E, R>) -> ObjectError
where
    E: std::error::Error + 'static,
    R: fmt::Debug,
{
    ObjectError::Unavailable(format!("{op} {key:?}: {}", DisplayErrorContext(e)))
}

impl S3ObjectStore {
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
            None,
            None,
            "pbx-config",
        );
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
            // Many S3-compatible servers reject the newer default (CRC checksums sent as
            // aws-chunked trailers on every upload); only send checksums where S3 requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            key_prefix: config.key_prefix.clone(),
            region: config.region.clone(),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, ObjectError> {
        validate_key(key)?;
        Ok(format!("{}{}", self.key_prefix, key))
    }

    /// Creates the bucket unless it exists already (for tests and the first start).
    pub async fn create_bucket_if_missing(&self) -> Result<(), ObjectError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if http_status(&e) == Some(404) => {}
            Err(e) => return Err(unavailable("head bucket", &self.bucket, &e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // AWS wants the region spelled out everywhere but in us-east-1.
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Lost a race with another creator: fine.
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists())
                {
                    Ok(())
                } else {
                    Err(unavailable("create bucket", &self.bucket, &e))
                }
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| unavailable("put", key, &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let full = self.full_key(key)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if http_status(&e) == Some(404)
                    || e.as_service_error().is_some_and(|s| s.is_no_such_key()) =>
            {
                return Err(ObjectError::NotFound(key.to_owned()));
            }
            Err(e) => return Err(unavailable("get", key, &e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Unavailable(format!("get {key:?}: reading body: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for absent keys; some compatible servers answer 404.
            Err(e) if http_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(unavailable("delete", key, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let full_prefix = format!("{}{}", self.key_prefix, prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| unavailable("list", prefix, &e))?;
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.key_prefix.as_str()))
                else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; sort anyway for servers that do not.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, ObjectError> {
        let full = self.full_key(key)?;
        // SigV4 allows at most 7 days.
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| ObjectError::Unavailable(format!("presign {key:?}: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .presigned(config)
            .await
            .map_err(|e| unavailable("presign", key, &e))?;
        Ok(request.uri().to_owned())
    }

    async fn ping(&self) -> Result<(), ObjectError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| unavailable("ping bucket", &self.bucket, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::S3sFs;
    use std::ops::Deref;

    pub(crate) struct Fixture {
        store: S3ObjectStore,
        _server: S3sFs,
    }

    fn config(server: &S3sFs, key_prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(server.endpoint()),
            region: "us-east-1".to_owned(),
            bucket: "pbx-test".to_owned(),
            access_key_id: server.access_key.clone(),
            secret_access_key: server.secret_key.clone(),
            path_style: true,
            key_prefix: key_prefix.to_owned(),
        }
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let server = S3sFs::start();
            let store = S3ObjectStore::new(&config(&server, ""));
            store.create_bucket_if_missing().await.expect("create bucket");
            Self {
                store,
                _server: server,
            }
        }
    }

    impl Deref for Fixture {
        type Target = S3ObjectStore;
        fn deref(&self) -> &S3ObjectStore {
            &self.store
        }
    }

    /// A plain HTTP GET, as a browser following the link would do.
    async fn fetch(_fixture: &Fixture, url: &str) -> Option<Vec<u8>> {
        // reqwest is built without a default crypto provider; plain HTTP still needs one set.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let response = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("GET presigned URL");
        if response.status().is_success() {
            Some(response.bytes().await.expect("body").to_vec())
        } else {
            None
        }
    }

    crate::objects::conformance::object_conformance_tests!(Fixture::new(), fetch);

    #[test]
    fn debug_redacts_the_secret() {
        let config = S3Config {
            endpoint: None,
            region: "eu-central-1".to_owned(),
            bucket: "b".to_owned(),
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "very-secret-value".to_owned(),
            path_style: false,
            key_prefix: String::new(),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE") && shown.contains("<redacted>"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_prefix_namespaces_objects_and_create_bucket_is_idempotent() {
        let server = S3sFs::start();
        let plain = S3ObjectStore::new(&config(&server, ""));
        plain.create_bucket_if_missing().await.expect("create");
        plain.create_bucket_if_missing().await.expect("create again");
        let prefixed = S3ObjectStore::new(&config(&server, "deploy-a/"));
        prefixed
            .put("t1/x", Bytes::from_static(b"x"), "text/plain")
            .await
            .expect("put");
        assert_eq!(
            prefixed.list("").await.expect("list"),
            vec![ObjectMeta {
                key: "t1/x".to_owned(),
                size: 1
            }],
            "keys come back without the prefix"
        );
        assert_eq!(
            plain.get("deploy-a/t1/x").await.expect("get").as_ref(),
            b"x",
            "stored under the prefix"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_pages_through_more_than_a_thousand_objects() {
        let fixture = Fixture::new().await;
        let store: &S3ObjectStore = &fixture;
        // ListObjectsV2 returns at most 1000 keys a page.
        let n = 1005;
        for batch in (0..n).collect::<Vec<usize>>().chunks(50) {
            let mut tasks = tokio::task::JoinSet::new();
            for &i in batch {
                let store = store.clone();
                tasks.spawn(async move {
                    store
                        .put(&format!("t1/many/{i:05}"), Bytes::from_static(b"x"), "text/plain")
                        .await
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.expect("task").expect("put");
            }
        }
        let listed = store.list("t1/many/").await.expect("list");
        assert_eq!(listed.len(), n);
        assert_eq!(listed[0].key, "t1/many/00000");
        assert_eq!(listed[n - 1].key, format!("t1/many/{:05}", n - 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_credentials_are_unavailable() {
        let server = S3sFs::start();
        let mut bad = config(&server, "");
        bad.secret_access_key = "wrong".to_owned();
        let err = S3ObjectStore::new(&bad).ping().await.expect_err("denied");
        assert!(matches!(err, ObjectError::Unavailable(_)), "{err:?}");
        assert!(!format!("{err}").contains("wrong"), "{err}");
    }
}
