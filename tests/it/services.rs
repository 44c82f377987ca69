//! The test services (DESIGN.md, "Test services"): real local stand-ins of
//! the AWS APIs, started by `cargo xtask services up` (which `.ci/run`
//! does) and found through environment variables.
//!
//! Locally a test whose service is missing prints why and skips (returns
//! early); with `CI=true` it fails, so CI can never pass by skipping.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kinesthetic::stream::kinesis::{KinesisBackend, KinesisSettings};

const HOW: &str = "start them with `cargo xtask services up` and export what it prints";

/// CI as runners set it: `true`, `1`, `yes` (any case).
fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// Skips (locally) or fails (in CI) with `why`.
#[track_caller]
fn missing<T>(why: String) -> Option<T> {
    if in_ci() {
        panic!("CI=true and a test service is missing: {why}; .ci/run must start it");
    }
    eprintln!("skipping: {why} ({HOW})");
    None
}

/// Skips (locally) or fails (in CI) for want of a tool.
#[track_caller]
pub(crate) fn missing_tool<T>(why: String) -> Option<T> {
    if in_ci() {
        panic!("CI=true and a tool is missing: {why}; .ci/run must install it");
    }
    eprintln!("skipping: {why} (`cargo xtask install-tools` installs it)");
    None
}

/// `host:port` of an `http://host:port[/…]` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Whether something accepts TCP connections at the URL's host and port.
fn answers(url: &str) -> Result<(), String> {
    let auth = authority(url).ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let addrs = auth
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {auth:?}: {e}"))?;
    for addr in addrs {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
            return Ok(());
        }
    }
    Err(format!("nothing answers at {url}"))
}

/// The endpoint in `var`, if set and answering.
#[track_caller]
fn endpoint(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => match answers(&url) {
            Ok(()) => Some(url),
            Err(e) => missing(format!("{var}={url}: {e}")),
        },
        _ => missing(format!("{var} is not set")),
    }
}

/// The Kinesis stand-in (kinesis-local), e.g. `http://127.0.0.1:4568`.
#[track_caller]
pub(crate) fn kinesis_endpoint() -> Option<String> {
    endpoint("KINESIS_ENDPOINT")
}

/// The S3 stand-in (moto).
#[track_caller]
pub(crate) fn s3_endpoint() -> Option<String> {
    endpoint("S3_ENDPOINT")
}

/// The DynamoDB stand-in (moto).
#[track_caller]
pub(crate) fn dynamodb_endpoint() -> Option<String> {
    endpoint("DYNAMODB_ENDPOINT")
}

/// A Python that can import the KPL aggregation library `aws_kinesis_agg`
/// (the venv of `cargo xtask services up`). Checked once per test run.
#[track_caller]
pub(crate) fn kpl_python() -> Option<PathBuf> {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let python = std::env::var_os("KPL_PYTHON")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or("KPL_PYTHON is not set")?;
        let out = Command::new(&python)
            .args([
                "-c",
                "import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator",
            ])
            .output()
            .map_err(|e| format!("KPL_PYTHON={}: cannot run: {e}", python.display()))?;
        if out.status.success() {
            Ok(python)
        } else {
            Err(format!(
                "KPL_PYTHON={} cannot import aws_kinesis_agg: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    match checked {
        Ok(p) => Some(p.clone()),
        Err(e) => missing(e.clone()),
    }
}

/// A [`KinesisBackend`] for the stand-in, or `None` (skip) locally when it
/// is not running.
pub(crate) async fn kinesis_backend() -> Option<KinesisBackend> {
    let url = kinesis_endpoint()?;
    Some(
        KinesisBackend::connect(&KinesisSettings {
            region: None,
            endpoint: Some(url),
            ..KinesisSettings::default()
        })
        .await,
    )
}

/// A stream name no other test (or earlier run against the same stand-in)
/// uses: `PREFIX-PID-MILLIS-N`.
pub(crate) fn unique_stream(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{prefix}-{}-{ms}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn urls_are_split_into_host_and_port() {
    assert_eq!(authority("http://127.0.0.1:4568"), Some("127.0.0.1:4568"));
    assert_eq!(authority("http://h:1/x/y"), Some("h:1"));
    assert_eq!(authority("127.0.0.1:4568"), None);
    let e = answers("127.0.0.1:1").err().unwrap_or_default();
    assert!(e.contains("not an http:// URL"), "{e}");
}

#[test]
fn stream_names_are_unique_and_valid() {
    let a = unique_stream("t");
    let b = unique_stream("t");
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert!(n.len() <= 128, "{n}");
        assert!(
            n.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)),
            "{n}"
        );
    }
}

/// One HTTP/1.1 exchange with `url`'s server; the whole response as text.
fn http(url: &str, request: &str) -> Result<String, String> {
    let auth = authority(url).ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let mut s = TcpStream::connect(auth).map_err(|e| format!("{auth}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(request.replace("{host}", auth).as_bytes())
        .map_err(|e| format!("{auth}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("{auth}: {e}"))?;
    Ok(out)
}

/// The S3 and DynamoDB stand-in speaks both APIs at its endpoints.
#[test]
fn moto_answers_as_s3_and_as_dynamodb() -> Result<(), String> {
    let (Some(s3), Some(dynamodb)) = (s3_endpoint(), dynamodb_endpoint()) else {
        return Ok(());
    };
    let list_buckets = http(
        &s3,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
    )?;
    assert!(list_buckets.starts_with("HTTP/1.1 200"), "{list_buckets}");
    assert!(
        list_buckets.contains("<ListAllMyBucketsResult"),
        "{list_buckets}"
    );
    // moto picks the API by the credential scope of the signature.
    let list_tables = http(
        &dynamodb,
        "POST / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         X-Amz-Target: DynamoDB_20120810.ListTables\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: 2\r\n\r\n{}",
    )?;
    assert!(list_tables.starts_with("HTTP/1.1 200"), "{list_tables}");
    assert!(list_tables.contains("\"TableNames\""), "{list_tables}");
    Ok(())
}
