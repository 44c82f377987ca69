//! The S3 sink through the official AWS SDK for Rust.
//!
//! Credentials and region come from the standard chain; `endpoint` (or
//! `AWS_ENDPOINT_URL_S3`) points it at a stand-in, with path-style
//! addressing and, when the environment has none, dummy credentials.
//! Objects above `multipart_threshold_bytes` go up in parts; a failed
//! multipart upload is aborted so no parts are left to pay for. Every call
//! is bounded (attempt and operation timeouts).

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::future::BoxFuture;

use super::{Object, ObjectStore, SinkError};
use crate::config::SinkConfig;

/// Size of each part of a multipart upload (S3: 5 MiB to 5 GiB).
const PART_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct S3Store {
    name: String,
    client: Client,
    bucket: String,
    multipart_threshold: usize,
}

impl S3Store {
    /// Connects and checks that the bucket exists (a missing bucket is an
    /// error now rather than a write retried for ever; an unreachable
    /// service is only a warning, since it may come back).
    pub async fn connect(name: &str, config: &SinkConfig) -> Result<Self, SinkError> {
        let bucket = config.bucket.clone().ok_or_else(|| SinkError::Setup {
            sink: name.to_owned(),
            message: "an s3 sink needs a bucket".into(),
        })?;
        let loaded = crate::aws::load(
            config.region.as_deref(),
            config.endpoint.as_deref(),
            "AWS_ENDPOINT_URL_S3",
            Some(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .operation_timeout(Duration::from_secs(300))
                    .build(),
            ),
        )
        .await;
        let mut conf = aws_sdk_s3::config::Builder::from(&loaded.config);
        if loaded.endpoint.is_some() {
            // Stand-ins serve buckets by path, not by host name.
            conf = conf.force_path_style(true);
        }
        let store = Self {
            name: name.to_owned(),
            client: Client::from_conf(conf.build()),
            bucket,
            multipart_threshold: usize::try_from(config.multipart_threshold_bytes)
                .unwrap_or(usize::MAX)
                .max(PART_BYTES),
        };
        store.check_bucket().await?;
        Ok(store)
    }

    async fn check_bucket(&self) -> Result<(), SinkError> {
        let head = self.client.head_bucket().bucket(&self.bucket).send();
        let Ok(answer) = tokio::time::timeout(Duration::from_secs(5), head).await else {
            tracing::warn!(sink = %self.name, bucket = %self.bucket, "S3 did not answer within 5 s; writes will retry");
            return Ok(());
        };
        match answer {
            Ok(_) => Ok(()),
            Err(e) => {
                let not_found = e
                    .as_service_error()
                    .is_some_and(aws_sdk_s3::operation::head_bucket::HeadBucketError::is_not_found);
                if not_found {
                    Err(SinkError::Setup {
                        sink: self.name.clone(),
                        message: format!("bucket {:?} does not exist", self.bucket),
                    })
                } else {
                    tracing::warn!(sink = %self.name, bucket = %self.bucket, error = %DisplayErrorContext(&e), "cannot check the bucket now; writes will retry");
                    Ok(())
                }
            }
        }
    }

    async fn put_whole(&self, key: &str, o: &Object) -> Result<(), String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(o.content_type)
            .body(ByteStream::from(o.body.clone()));
        if let Some(enc) = o.content_encoding {
            req = req.content_encoding(enc);
        }
        for (k, v) in &o.metadata {
            req = req.metadata(*k, v);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(&e).to_string())
    }

    async fn put_multipart(&self, key: &str, o: &Object) -> Result<(), String> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(o.content_type);
        if let Some(enc) = o.content_encoding {
            create = create.content_encoding(enc);
        }
        for (k, v) in &o.metadata {
            create = create.metadata(*k, v);
        }
        let up = create
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        let id = up
            .upload_id()
            .ok_or("CreateMultipartUpload answered without an upload id")?
            .to_owned();
        let result = self.upload_parts(key, &id, o).await;
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(sink = %self.name, %key, upload = %id, error = %DisplayErrorContext(&e), "cannot abort a failed multipart upload; its parts stay until a lifecycle rule removes them");
            }
        }
        result
    }

    async fn upload_parts(&self, key: &str, id: &str, o: &Object) -> Result<(), String> {
        let mut parts = Vec::new();
        let mut start = 0usize;
        let mut number = 1i32;
        while start < o.body.len() {
            let end = (start + PART_BYTES).min(o.body.len());
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(o.body.slice(start..end)))
                .send()
                .await
                .map_err(|e| DisplayErrorContext(&e).to_string())?;
            let etag = part
                .e_tag()
                .ok_or_else(|| format!("UploadPart {number} answered without an ETag"))?;
            parts.push(
                CompletedPart::builder()
                    .e_tag(etag)
                    .part_number(number)
                    .build(),
            );
            start = end;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(&e).to_string())
    }
}

impl ObjectStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, object: &'a Object) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let r = if object.body.len() > self.multipart_threshold {
                self.put_multipart(key, object).await
            } else {
                self.put_whole(key, object).await
            };
            r.map_err(|message| SinkError::Write {
                sink: self.name.clone(),
                key: key.to_owned(),
                message,
            })
        })
    }

    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| SinkError::Setup {
                        sink: self.name.clone(),
                        message: format!(
                            "cannot list s3://{}/{prefix}: {}",
                            self.bucket,
                            DisplayErrorContext(&e)
                        ),
                    })?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            keys.sort();
            Ok(keys)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<super::Stored, SinkError>> {
        Box::pin(async move {
            let fail = |message: String| SinkError::Write {
                sink: self.name.clone(),
                key: key.to_owned(),
                message,
            };
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
            let mut metadata: std::collections::BTreeMap<String, String> = got
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            if let Some(e) = got.content_encoding() {
                metadata.insert("content-encoding".into(), e.to_owned());
            }
            let body = got
                .body
                .collect()
                .await
                .map_err(|e| fail(format!("reading the body: {e}")))?
                .into_bytes();
            Ok(super::Stored { body, metadata })
        })
    }
}
