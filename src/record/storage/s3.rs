//! The S3 backend (aws-sdk-s3): any S3-compatible store, with path-style addressing optional.

use super::{ObjectInfo, StorageError};
use crate::config::RecordConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::time::Duration;

pub struct S3Store {
    pub(super) client: aws_sdk_s3::Client,
    pub(super) bucket: String,
    /// Without slashes at either end; may be empty.
    pub(super) prefix: String,
    pub(super) endpoint: String,
}

impl S3Store {
    pub(super) async fn new(config: &RecordConfig) -> S3Store {
        let s3 = &config.s3;
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(s3.region.clone()))
            .load()
            .await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s3.force_path_style)
            .timeout_config(timeouts);
        if !s3.endpoint.is_empty() {
            builder = builder.endpoint_url(&s3.endpoint);
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.trim_matches('/').to_string(),
            endpoint: s3.endpoint.clone(),
        }
    }

    pub(super) fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    pub(super) fn error<E>(op: &'static str, key: &str, e: E) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata,
    {
        // The code and message of an S3 error ("InvalidAccessKeyId", "SignatureDoesNotMatch",
        // "NoSuchBucket") say what to fix; for a transport failure the context chain does.
        let message = match (e.code(), e.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            _ => DisplayErrorContext(&e).to_string(),
        };
        StorageError::S3 {
            op,
            key: key.to_string(),
            message,
        }
    }

    pub(super) async fn check(&self) -> Result<(), StorageError> {
        // A write, not just HeadBucket: read-only credentials would only fail at the first upload.
        let key = ".livegate-write-check";
        self.put(key, Bytes::from_static(b"ok"), "text/plain")
            .await?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| Self::error("DeleteObject", key, e))?;
        Ok(())
    }

    pub(super) async fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_type(content_type)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| Self::error("PutObject", key, e))?;
        Ok(())
    }

    pub(super) async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StorageError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some((start, end)) = range {
            request = request.range(format!("bytes={start}-{end}"));
        }
        let output = request.send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                StorageError::NotFound(key.to_string())
            } else {
                Self::error("GetObject", key, e)
            }
        })?;
        let data = output.body.collect().await.map_err(|e| StorageError::S3 {
            op: "GetObject",
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.get(strip..)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::error("ListObjectsV2", prefix, e))?;
            for common in page.common_prefixes() {
                if let Some(p) = common.prefix().and_then(|p| p.get(strip..)) {
                    out.push(p.to_string());
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn delete(&self, objects: &[ObjectInfo]) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        // DeleteObjects takes at most 1000 keys per request.
        for chunk in objects.chunks(1000) {
            let ids = chunk
                .iter()
                .map(|o| {
                    ObjectIdentifier::builder()
                        .key(self.full_key(&o.key))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    key: String::new(),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    key: String::new(),
                    message: e.to_string(),
                })?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| Self::error("DeleteObjects", "", e))?;
            if let Some(failed) = output.errors().first() {
                return Err(StorageError::S3 {
                    op: "DeleteObjects",
                    key: failed.key().unwrap_or_default().to_string(),
                    message: failed.message().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }
}
