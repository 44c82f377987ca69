//! `kinesthetic send`: post a file of events to an intake, in batches.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

/// Post a file of NDJSON (or any) lines to an intake in batches, with a
/// progress bar and a summary. Retries a batch the intake answers 503 to
/// (honouring Retry-After); stops at the first batch it refuses otherwise.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The file of events, one per line (`-` for stdin).
    file: PathBuf,
    /// The intake's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The stream to write to.
    #[arg(long)]
    stream: String,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Partition key for every event (`X-Partition-Key`).
    #[arg(long)]
    key: Option<String>,
    /// Compress request bodies with gzip.
    #[arg(long)]
    gzip: bool,
    /// Bearer token.
    #[arg(long, env = "KINESTHETIC_TOKEN")]
    token: Option<String>,
    /// Give up on a batch after this many 503 answers.
    #[arg(long, default_value_t = 30)]
    retries: u32,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, serde::Deserialize)]
struct Accepted {
    accepted: usize,
    first_id: String,
    last_id: String,
}

struct Batch {
    first_line: usize,
    lines: usize,
    body: Vec<u8>,
}

pub(crate) fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(send(args))
}

fn read_batches(args: &SendArgs) -> anyhow::Result<(Vec<Batch>, u64)> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file.display()))?,
        ))
    };
    let mut batches = Vec::new();
    let mut cur = Batch {
        first_line: 1,
        lines: 0,
        body: Vec::new(),
    };
    let mut total = 0u64;
    let mut n = 0usize;
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", args.file.display()))?;
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        total += line.len() as u64;
        cur.body.extend_from_slice(&line);
        cur.body.push(b'\n');
        cur.lines += 1;
        if cur.lines == args.batch.max(1) {
            batches.push(std::mem::replace(
                &mut cur,
                Batch {
                    first_line: n + 1,
                    lines: 0,
                    body: Vec::new(),
                },
            ));
        }
    }
    if cur.lines > 0 {
        batches.push(cur);
    }
    Ok((batches, total))
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let (batches, bytes) = read_batches(&args)?;
    let events: usize = batches.iter().map(|b| b.lines).sum();
    let url = format!(
        "{}/v1/streams/{}/events",
        args.url.trim_end_matches('/'),
        args.stream
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(events as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} events  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for (i, b) in batches.into_iter().enumerate() {
        let permit = std::sync::Arc::clone(&sem).acquire_owned().await?;
        let client = client.clone();
        let url = url.clone();
        let key = args.key.clone();
        let token = args.token.clone();
        let (gzip, retries) = (args.gzip, args.retries);
        let task_bar = bar.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let r = post(&client, &url, &b, key, token, gzip, retries).await;
            task_bar.inc(b.lines as u64);
            (i, b.first_line, b.lines, r)
        });
        // Surface a failure early instead of sending the rest.
        while let Some(done) = tasks.try_join_next() {
            results.push(answer(done?, &bar)?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        results.push(answer(done?, &bar)?);
    }
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    let accepted: usize = results.iter().map(|(_, a)| a.accepted).sum();
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "sent {events} events ({:.1} MB) in {} requests to {}: {accepted} accepted in {secs:.2} s \
         ({:.0} events/s, {:.1} MB/s); first event id {}, last event id {}",
        bytes as f64 / 1e6,
        results.len(),
        args.stream,
        accepted as f64 / secs,
        bytes as f64 / 1e6 / secs,
        results.first().map_or("-", |(_, a)| a.first_id.as_str()),
        results.last().map_or("-", |(_, a)| a.last_id.as_str()),
    );
    Ok(if accepted == events {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A batch's answer, or the error that stops the tool (naming its lines).
fn answer(
    (i, first, lines, r): (usize, usize, usize, anyhow::Result<Accepted>),
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(usize, Accepted)> {
    r.map(|a| (i, a)).map_err(|e| {
        bar.abandon();
        anyhow::anyhow!("lines {first}..{}: {e:#}", first + lines - 1)
    })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    b: &Batch,
    key: Option<String>,
    token: Option<String>,
    gzip: bool,
    retries: u32,
) -> anyhow::Result<Accepted> {
    let body = if gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&b.body)?;
        enc.finish()?
    } else {
        b.body.clone()
    };
    let mut attempt = 0;
    loop {
        let mut req = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone());
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        if let Some(k) = &key {
            req = req.header("x-partition-key", k);
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        if status.is_success() {
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("reading the answer of {url}"))?;
            return serde_json::from_slice::<Accepted>(&body)
                .with_context(|| format!("the answer of {url} is not the intake's JSON"));
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = resp.text().await.unwrap_or_default();
        if status.as_u16() == 503 && attempt < retries {
            attempt += 1;
            tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).min(30))).await;
            continue;
        }
        anyhow::bail!("{status}: {}", text.trim());
    }
}
