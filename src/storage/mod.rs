//! Object storage over the S3 API (MinIO in production, s3s-fs in tests): the quarantine
//! bucket, where borrowers' uploads land by pre-signed PUT, and the documents bucket, which
//! holds only encrypted, scanned documents.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::config::S3Settings;

#[derive(Clone, Debug)]
pub struct Storage {
    pub quarantine: Arc<AmazonS3>,
    pub documents: Arc<AmazonS3>,
    /// Where browsers PUT uploads: the quarantine bucket at the public endpoint.
    upload_bucket: rusty_s3::Bucket,
    settings: S3Settings,
    secret_key: SecretString,
    http: reqwest::Client,
}

impl Storage {
    /// Builds the clients; nothing connects until first use.
    pub fn new(settings: &S3Settings) -> anyhow::Result<Self> {
        let secret_key = settings.secret_access_key()?;
        let pem = match &settings.ca_file {
            Some(ca) => Some(crate::tls::read_ca("s3.ca_file", ca)?),
            None => None,
        };
        let roots = match &pem {
            Some(pem) => object_store::Certificate::from_pem_bundle(pem)?,
            None => Vec::new(),
        };
        let build_at = |endpoint: &url::Url, bucket: &str| -> anyhow::Result<Arc<AmazonS3>> {
            let store = AmazonS3Builder::new()
                .with_endpoint(endpoint.as_str().trim_end_matches('/'))
                .with_region(&settings.region)
                .with_bucket_name(bucket)
                .with_access_key_id(&settings.access_key_id)
                .with_secret_access_key(secret_key.expose_secret())
                .with_virtual_hosted_style_request(false)
                .with_allow_http(settings.allow_http)
                .with_client_options(
                    roots
                        .iter()
                        .fold(ClientOptions::new(), |o, c| {
                            o.with_root_certificate(c.clone())
                        })
                        .with_allow_http(settings.allow_http)
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(settings.timeout_secs)),
                )
                // Retries belong to the caller's queue (with backoff and a DLQ); a readiness
                // probe must answer within its budget.
                .with_retry(RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                })
                .build()
                .with_context(|| format!("configuring the S3 client for bucket {bucket}"))?;
            Ok(Arc::new(store))
        };
        let build = |bucket: &str| build_at(&settings.endpoint, bucket);
        let mut http = reqwest::Client::builder();
        if let Some(pem) = &pem {
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        let http = http
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(settings.timeout_secs))
            .build()?;
        Ok(Self {
            quarantine: build(&settings.quarantine_bucket)?,
            documents: build(&settings.documents_bucket)?,
            upload_bucket: rusty_s3::Bucket::new(
                settings
                    .public_endpoint
                    .clone()
                    .unwrap_or_else(|| settings.endpoint.clone()),
                rusty_s3::UrlStyle::Path,
                settings.quarantine_bucket.clone(),
                settings.region.clone(),
            )
            .context("the quarantine bucket's upload address")?,
            settings: settings.clone(),
            secret_key,
            http,
        })
    }

    /// A pre-signed PUT of exactly `length` bytes of `content_type` to `key` in quarantine,
    /// valid for `ttl`. Both headers are signed (SigV4 `X-Amz-SignedHeaders`), so the
    /// store refuses any other size or type; the URL is the only capability it grants.
    pub fn presign_upload(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: Duration,
    ) -> url::Url {
        use rusty_s3::S3Action;
        let credentials = rusty_s3::Credentials::new(
            self.settings.access_key_id.clone(),
            self.secret_key.expose_secret().to_owned(),
        );
        let mut action = self.upload_bucket.put_object(Some(&credentials), key);
        action
            .headers_mut()
            .insert("content-length", length.to_string());
        action
            .headers_mut()
            .insert("content-type", content_type.to_owned());
        action.sign(ttl)
    }

    /// Stream exactly `length` bytes into the documents bucket with one PUT (no buffering,
    /// no multipart round trips). An error item in `body` aborts the request, so a partial
    /// object is never stored.
    pub async fn put_document_stream<S>(
        &self,
        path: &Path,
        length: u64,
        body: S,
    ) -> anyhow::Result<()>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        use object_store::signer::Signer;
        let url = self
            .documents
            .signed_url(http::Method::PUT, path, Duration::from_secs(900))
            .await
            .context("signing the document PUT")?;
        let response = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .context("storing the encrypted document")?;
        anyhow::ensure!(
            response.status().is_success(),
            "storing the encrypted document: {}",
            response.status()
        );
        Ok(())
    }

    /// Reachable, authenticated, and both buckets exist: one list request per bucket.
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = Path::from("readyz-probe");
        for (name, store) in [
            (&self.settings.quarantine_bucket, &self.quarantine),
            (&self.settings.documents_bucket, &self.documents),
        ] {
            store
                .list_with_delimiter(Some(&probe))
                .await
                .with_context(|| format!("listing bucket {name}"))?;
        }
        Ok(())
    }

    /// Create both buckets if missing (development, tests and first install; production
    /// buckets are usually created by IT with versioning and policies of their own).
    pub async fn ensure_buckets(&self) -> anyhow::Result<()> {
        for bucket in [
            &self.settings.quarantine_bucket,
            &self.settings.documents_bucket,
        ] {
            self.create_bucket(bucket).await?;
        }
        Ok(())
    }

    async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let bucket = rusty_s3::Bucket::new(
            self.settings.endpoint.clone(),
            rusty_s3::UrlStyle::Path,
            name.to_owned(),
            self.settings.region.clone(),
        )
        .with_context(|| format!("bucket name {name}"))?;
        let credentials = rusty_s3::Credentials::new(
            self.settings.access_key_id.clone(),
            self.secret_key.expose_secret().to_owned(),
        );
        let url =
            rusty_s3::S3Action::sign(&bucket.create_bucket(&credentials), Duration::from_secs(60));
        let response = self
            .http
            .put(url)
            .send()
            .await
            .context("creating a bucket")?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        // Already there (ours or not) is what we wanted.
        if status == reqwest::StatusCode::CONFLICT
            || body.contains("BucketAlreadyOwnedByYou")
            || body.contains("BucketAlreadyExists")
        {
            return Ok(());
        }
        bail!("creating bucket {name}: {status}")
    }

    /// Let browsers of `origin` PUT into the quarantine bucket (the borrower page's
    /// pre-signed uploads): a bucket CORS rule, replacing the bucket's CORS configuration.
    /// Servers that keep CORS outside the bucket API (MinIO: a server setting; s3s-fs)
    /// answer 501, and a key without the bucket owner's rights (least privilege) 403: both
    /// are reported, not errors — CORS is then the storage administrator's to configure
    /// (docs/operations/network.md).
    pub async fn allow_browser_uploads(&self, origin: &str) -> anyhow::Result<CorsOutcome> {
        use base64::Engine;
        use md5::Digest;
        let document = format!(
            "<CORSConfiguration><CORSRule><AllowedOrigin>{}</AllowedOrigin>\
             <AllowedMethod>PUT</AllowedMethod><AllowedHeader>content-type</AllowedHeader>\
             <AllowedHeader>content-length</AllowedHeader><ExposeHeader>ETag</ExposeHeader>\
             <MaxAgeSeconds>600</MaxAgeSeconds></CORSRule></CORSConfiguration>",
            xml_escape(origin)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&document));
        let mut url = self.settings.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("s3.endpoint cannot be a base URL"))?
            .pop_if_empty()
            .push(&self.settings.quarantine_bucket);
        let query = [("cors", "")];
        let headers = [("content-md5", md5.as_str())];
        let signed = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Put,
            url,
            &self.settings.access_key_id,
            self.secret_key.expose_secret(),
            None,
            &self.settings.region,
            60,
            query.iter().copied(),
            headers.iter().copied(),
        );
        let response = self
            .http
            .put(signed)
            .header("content-md5", &md5)
            .body(document)
            .send()
            .await
            .context("setting the quarantine bucket's CORS rule")?;
        let status = response.status();
        if status.is_success() {
            return Ok(CorsOutcome::Set);
        }
        if status == reqwest::StatusCode::NOT_IMPLEMENTED {
            return Ok(CorsOutcome::Unsupported);
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Ok(CorsOutcome::Denied);
        }
        bail!(
            "setting the quarantine bucket's CORS rule: {status} {}",
            response.text().await.unwrap_or_default()
        )
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }
}

/// What `allow_browser_uploads` could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsOutcome {
    /// The bucket's CORS rule now allows the origin.
    Set,
    /// The server has no bucket CORS API (501).
    Unsupported,
    /// The key may not change the bucket's CORS configuration (403).
    Denied,
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
