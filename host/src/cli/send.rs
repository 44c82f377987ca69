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
            // Exactly the lines the intake skips: blank (empty, or only
            // `\r`). Whitespace is an event like any other bytes.
            if line.is_empty() || line == b"\r" {
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
        tasks.spawn(async move {
            let _permit = permit;
            let r = post(&client, &url, &b, key, token, gzip, retries).await;
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
         ({:.0} events/s, {:.1} MB/s); first event id {}, last event id {}",
        bytes as f64 / 1e6,
        results.len() + refused.len(),
        args.stream,
        accepted as f64 / secs,
        bytes as f64 / 1e6 / secs,
        results.first().map_or("-", |(_, a)| a.first_id.as_str()),
        results.last().map_or("-", |(_, a)| a.last_id.as_str()),
    );
    if refused.is_empty() {
        return Ok(if accepted == events {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    refused.sort();
    for (first, last, e) in &refused {
        eprintln!("lines {first}..{last}: refused: {e}");
    }
    if let Some(from) = unsent_from {
        eprintln!("lines {from}..: not sent (sending stops at the first refusal)");
    }
    let kept: Vec<String> = results
        .iter()
        .map(|(_, a)| format!("{}..{}", a.first_line, a.last_line))
        .collect();
    if !kept.is_empty() {
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

fn accepted_so_far(results: &[(usize, Accepted)]) -> usize {
    results.iter().map(|(_, a)| a.accepted).sum()
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
