//! `kinesthetic send`: post a file of events to an intake, in batches.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

/// Post a file of NDJSON (or any) lines to an intake in batches, with a
/// progress bar and a summary. Retries a batch the intake answers 503 to
/// (honouring Retry-After) or cannot be reached for (a restart), with a
/// growing jittered wait; stops at the first batch it refuses otherwise.
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
    /// Give up on a batch after this many retries (each after a 503, or
    /// when the intake cannot be reached).
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
    /// The file lines of the batch (filled in here, not by the intake).
    #[serde(skip)]
    first_line: usize,
    #[serde(skip)]
    last_line: usize,
}

struct Batch {
    /// Line numbers in the file (blank lines count) of its first and last
    /// event.
    first_line: usize,
    last_line: usize,
    /// Events in it.
    lines: usize,
    /// Bytes of the file it covers (for progress).
    raw_bytes: u64,
    body: Vec<u8>,
    /// The file line of each event, in body order (the intake numbers the
    /// body's lines; blank lines of the file are not sent).
    file_lines: Vec<usize>,
}

pub(crate) fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(send(args))
}

/// Reads batches on a thread of its own, a few ahead of the requests: a
/// file of any size is sent in bounded memory.
fn spawn_reader(
    args: &SendArgs,
    ahead: usize,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<Batch>>> {
    let reader: Box<dyn BufRead + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file.display()))?,
        ))
    };
    let (tx, rx) = tokio::sync::mpsc::channel(ahead.max(1));
    let per_batch = args.batch.max(1);
    let file = args.file.clone();
    std::thread::spawn(move || {
        let new_batch = |first_line| Batch {
            first_line,
            last_line: first_line,
            lines: 0,
            raw_bytes: 0,
            body: Vec::new(),
            file_lines: Vec::new(),
        };
        let mut cur = new_batch(1);
        let mut n = 0usize;
        for line in reader.split(b'\n') {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.blocking_send(Err(anyhow::anyhow!(
                        "cannot read {} after line {n}: {e}",
                        file.display()
                    )));
                    return;
                }
            };
            n += 1;
            cur.raw_bytes += line.len() as u64 + 1;
            // Exactly the lines the intake skips (its rule): blank.
            // Whitespace is an event like any other bytes.
            if crate::event::event_of_line(&line).is_none() {
                continue;
            }
            if cur.lines == 0 {
                cur.first_line = n;
            }
            cur.last_line = n;
            cur.body.extend_from_slice(&line);
            cur.body.push(b'\n');
            cur.file_lines.push(n);
            cur.lines += 1;
            if cur.lines == per_batch
                && tx
                    .blocking_send(Ok(std::mem::replace(&mut cur, new_batch(n + 1))))
                    .is_err()
            {
                return;
            }
        }
        if cur.lines > 0 {
            let _ = tx.blocking_send(Ok(cur));
        }
    });
    Ok(rx)
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency.max(1);
    let mut batches = spawn_reader(&args, concurrency * 2)?;
    // The name is one path segment, escaped: `a/b` or `x?y` reaches the
    // intake as a name, which then says what is wrong with it.
    let mut url =
        reqwest::Url::parse(&args.url).map_err(|e| anyhow::anyhow!("--url {}: {e}", args.url))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {}: not an http(s) URL", args.url))?
        .pop_if_empty()
        .extend(["v1", "streams", &args.stream, "events"]);
    let url = url.to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    // Progress by bytes of the file when its size is known, else a count.
    let size = std::fs::metadata(&args.file)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let bar = match (args.quiet, size) {
        (true, _) => indicatif::ProgressBar::hidden(),
        (false, Some(len)) => {
            let b = indicatif::ProgressBar::new(len);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        }
        (false, None) => {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {bytes} sent  {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        }
    };
    let start = Instant::now();
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    let mut refused: Vec<(usize, usize, String)> = Vec::new();
    let mut unsent_from: Option<usize> = None;
    let (mut events, mut bytes) = (0usize, 0u64);
    let mut i = 0usize;
    while let Some(b) = batches.recv().await {
        let b = b?;
        // After a refusal, send nothing more; the batches in flight finish.
        if !refused.is_empty() {
            unsent_from = Some(b.first_line);
            break;
        }
        events += b.lines;
        bytes += b.body.len() as u64 - b.lines as u64;
        let permit = std::sync::Arc::clone(&sem).acquire_owned().await?;
        let client = client.clone();
        let url = url.clone();
        let key = args.key.clone();
        let token = args.token.clone();
        let (gzip, retries) = (args.gzip, args.retries);
        let task_bar = bar.clone();
        let task_retried = std::sync::Arc::clone(&retried);
        tasks.spawn(async move {
            let _permit = permit;
            let r = post(&client, &url, &b, key, token, gzip, retries, &task_retried).await;
            task_bar.inc(b.raw_bytes);
            (i, b, r)
        });
        i += 1;
        while let Some(done) = tasks.try_join_next() {
            collect(done?, &mut results, &mut refused);
        }
    }
    drop(batches);
    while let Some(done) = tasks.join_next().await {
        collect(done?, &mut results, &mut refused);
    }
    if refused.is_empty() {
        bar.finish_and_clear();
    } else {
        bar.abandon();
    }
    results.sort_by_key(|(i, _)| *i);
    let accepted = accepted_so_far(&results);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "sent {events} events ({:.1} MB) in {} requests to {}: {accepted} accepted in {secs:.2} s \
         ({:.0} events/s, {:.1} MB/s){}",
        bytes as f64 / 1e6,
        results.len() + refused.len(),
        args.stream,
        accepted as f64 / secs,
        bytes as f64 / 1e6 / secs,
        if retried.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            format!(
                "; {} requests retried",
                retried.load(std::sync::atomic::Ordering::Relaxed)
            )
        } else {
            String::new()
        }
    );
    if !results.is_empty() {
        eprintln!("{}", id_summary(&results));
    }
    if refused.is_empty() {
        return Ok(if accepted == events {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    refused.sort();
    // Neighbouring batches refused for the same reason (an intake that
    // stayed unreachable) are said once.
    let mut said: Vec<(usize, usize, &str)> = Vec::new();
    for (first, last, e) in &refused {
        match said.last_mut() {
            Some(prev) if prev.2 == e.as_str() && *first <= prev.1.saturating_add(1) => {
                prev.1 = *last;
            }
            _ => said.push((*first, *last, e)),
        }
    }
    for (first, last, e) in said {
        eprintln!("lines {first}..{last}: refused: {e}");
    }
    if let Some(from) = unsent_from {
        eprintln!("lines {from}..: not sent (sending stops at the first refusal)");
    }
    let kept = merged(results.iter().map(|(_, a)| (a.first_line, a.last_line)));
    if !kept.is_empty() {
        let kept: Vec<String> = kept.iter().map(|(a, b)| format!("{a}..{b}")).collect();
        eprintln!(
            "accepted: lines {} (send only the refused and unsent lines again, or the event ids \
             tell duplicates apart)",
            kept.join(", ")
        );
    }
    Err(anyhow::anyhow!(
        "{} of {} requests refused",
        refused.len(),
        results.len() + refused.len()
    ))
}

/// Files a finished batch's answer: accepted, or refused with the intake's
/// words, its batch line numbers turned into the file's.
fn collect(
    (i, b, r): (usize, Batch, anyhow::Result<Accepted>),
    results: &mut Vec<(usize, Accepted)>,
    refused: &mut Vec<(usize, usize, String)>,
) {
    match r {
        Ok(mut a) => {
            a.first_line = b.first_line;
            a.last_line = b.last_line;
            results.push((i, a));
        }
        Err(e) => refused.push((
            b.first_line,
            b.last_line,
            file_line_note(&format!("{e:#}"), &b),
        )),
    }
}

/// The intake names a line of the request's body (`line 5 is …`): add the
/// line of the file it is.
fn file_line_note(message: &str, b: &Batch) -> String {
    let Some(at) = message.find("line ") else {
        return message.to_owned();
    };
    let digits: String = message[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| b.file_lines.get(n.checked_sub(1)?))
    {
        Some(line) => {
            format!("{message} (line {digits} of the request is line {line} of the file)")
        }
        None => message.to_owned(),
    }
}

/// Sorted inclusive ranges, adjacent and overlapping ones merged.
fn merged(ranges: impl Iterator<Item = (usize, usize)>) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The accepted events' ids: the ids of the file's first and last accepted
/// lines (input order), and every id accepted as merged ranges of each
/// listener's counter (one range when nothing else wrote in between).
fn id_summary(results: &[(usize, Accepted)]) -> String {
    use crate::event::EventId;
    let first = results.first().map_or("-", |(_, a)| a.first_id.as_str());
    let last = results.last().map_or("-", |(_, a)| a.last_id.as_str());
    let mut by_listener: std::collections::BTreeMap<u64, Vec<(usize, usize)>> =
        std::collections::BTreeMap::new();
    for (_, a) in results {
        if let (Ok(f), Ok(l)) = (a.first_id.parse::<EventId>(), a.last_id.parse::<EventId>())
            && f.listener == l.listener
        {
            by_listener
                .entry(f.listener)
                .or_default()
                .push((f.counter as usize, l.counter as usize));
        }
    }
    let ranges: Vec<String> = by_listener
        .into_iter()
        .flat_map(|(listener, rs)| {
            merged(rs.into_iter()).into_iter().map(move |(a, b)| {
                let id = |counter| EventId {
                    listener,
                    counter: counter as u64,
                };
                format!("{}..{}", id(a), id(b))
            })
        })
        .collect();
    let shown = match ranges.len() {
        0 => "-".to_owned(),
        1..=4 => ranges.join(", "),
        n => format!(
            "{}, … ({n} ranges: other writers' events in between)",
            ranges[..3].join(", ")
        ),
    };
    format!("event ids: {shown}; the file's first line is {first}, its last {last}")
}

fn accepted_so_far(results: &[(usize, Accepted)]) -> usize {
    results.iter().map(|(_, a)| a.accepted).sum()
}

/// Posts one batch. A 503, or no connection (the intake restarting, or
/// not up yet), is retried up to `retries` times: after Retry-After when
/// the intake gave one, else after a jittered, growing wait.
#[allow(clippy::too_many_arguments)]
async fn post(
    client: &reqwest::Client,
    url: &str,
    b: &Batch,
    key: Option<String>,
    token: Option<String>,
    gzip: bool,
    retries: u32,
    retried: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<Accepted> {
    let backoff = crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
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
        let resp = match req.send().await {
            Ok(r) => r,
            // Not connected: the request never reached the intake, so it
            // is sent again as is. (A connection lost after the body was
            // sent may have been accepted: sent again, its events get new
            // ids.)
            Err(e) if (e.is_connect() || e.is_request()) && attempt < retries => {
                attempt += 1;
                retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(error = %e, attempt, "no connection; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "POST {url} (after {attempt} retries; is the intake running there? \
                     `kinesthetic serve` starts one on 127.0.0.1:8080)"
                )));
            }
        };
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
            retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let wait = retry_after.map_or_else(
                || backoff.delay(attempt),
                |s| Duration::from_secs(s.min(30)),
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        anyhow::bail!("{status}: {}", text.trim());
    }
}
