//! `kinesthetic stream …`: stream administration on either backend.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::consumer::StreamWalk;
use crate::stream::any::AnyBackend;
use crate::stream::kinesis::{KinesisBackend, KinesisSettings};
use crate::stream::local::{LocalLog, LocalOptions};
use crate::stream::{StartPosition, StreamBackend, reshard};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

/// Which stream implementation, and where.
#[derive(Debug, Clone, Args)]
pub(crate) struct BackendArgs {
    /// `local` (the embedded log in --data) or `kinesis` (AWS credentials
    /// and region from the usual environment; --endpoint for a stand-in).
    /// Default: kinesis when --endpoint is given, else local.
    #[arg(long, global = true, value_enum)]
    backend: Option<Backend>,
    /// Directory of the local log.
    #[arg(
        long,
        global = true,
        env = "KINESTHETIC_DATA",
        default_value = "kinesthetic-data"
    )]
    data: PathBuf,
    /// Kinesis endpoint override, e.g. http://127.0.0.1:4568 (with
    /// --backend kinesis and no --endpoint, AWS_ENDPOINT_URL_KINESIS applies).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// AWS region (default: from the environment, else us-east-1).
    #[arg(long, global = true)]
    region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    Local,
    Kinesis,
}

impl BackendArgs {
    pub(crate) async fn connect(&self, writer: bool) -> anyhow::Result<AnyBackend> {
        let kind = self.backend.unwrap_or(if self.endpoint.is_some() {
            Backend::Kinesis
        } else {
            Backend::Local
        });
        Ok(match kind {
            Backend::Local => {
                let opts = LocalOptions::default();
                let log = if writer {
                    LocalLog::open(&self.data, opts)
                } else {
                    LocalLog::open_read_only(&self.data, opts)
                };
                AnyBackend::Local(log.with_context(|| {
                    format!("cannot open the local log in {}", self.data.display())
                })?)
            }
            Backend::Kinesis => AnyBackend::Kinesis(
                KinesisBackend::connect(&KinesisSettings {
                    region: self.region.clone(),
                    endpoint: self.endpoint.clone(),
                    ..KinesisSettings::default()
                })
                .await,
            ),
        })
    }
}

/// Create, inspect, reshard and read streams (the local log or Kinesis).
#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    command: StreamCommand,
}

#[derive(Debug, Subcommand)]
enum StreamCommand {
    /// Create a stream with N shards of even hash-key ranges.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        shards: u32,
    },
    /// Show a stream's status and shards (parents first).
    Describe { name: String },
    /// List the streams.
    List,
    /// Delete a stream and its data.
    Delete { name: String },
    /// Split and merge shards until the stream has N shards of even
    /// hash-key ranges, one step at a time, waiting for ACTIVE between steps.
    Reshard {
        name: String,
        #[arg(long)]
        shards: u32,
    },
    /// Print a stream's events, de-aggregated, with their stamps:
    /// `EVENT-ID RECEIVED KEY<TAB>EVENT`. Parents are read before children.
    Tail {
        name: String,
        /// trim-horizon, latest, a time (RFC 3339: 2026-11-28T09:00:00Z,
        /// 2026-11-28T10:00:00+01:00; no zone means UTC), Unix epoch
        /// milliseconds, or an age (10m: ten minutes ago).
        #[arg(long, default_value = "trim-horizon")]
        from: String,
        /// Keep waiting for new events (and new shards after a reshard).
        #[arg(long, short)]
        follow: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
}

pub(crate) fn run(args: StreamArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: StreamArgs) -> anyhow::Result<ExitCode> {
    let writer = !matches!(
        args.command,
        StreamCommand::Describe { .. } | StreamCommand::List | StreamCommand::Tail { .. }
    );
    let b = args.backend.connect(writer).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        StreamCommand::Create { name, shards } => {
            if shards == 0 {
                anyhow::bail!("--shards must be at least 1");
            }
            b.create_stream(&name, shards).await?;
            reshard::wait_active(&b, &name, Duration::from_secs(120)).await?;
            writeln!(out, "created {name} with {shards} shard(s)")?;
        }
        StreamCommand::Describe { name } => {
            let d = b.describe(&name).await?;
            writeln!(
                out,
                "{}  {}  retention {} h  {} open shard(s) of {}",
                d.name,
                d.status,
                d.retention_hours,
                d.open_shards().count(),
                d.shards.len()
            )?;
            for s in &d.shards {
                let width = s.hash_range.end - s.hash_range.start;
                let share = width as f64 / u128::MAX as f64 * 100.0;
                writeln!(
                    out,
                    "  {}  {}  hash {:>39}..={:<39} ({share:5.1} %)  seq {}..{}{}{}",
                    s.id,
                    if s.is_open() { "open  " } else { "closed" },
                    s.hash_range.start,
                    s.hash_range.end,
                    s.starting_sequence,
                    s.ending_sequence
                        .as_ref()
                        .map_or(String::new(), ToString::to_string),
                    s.parent
                        .as_ref()
                        .map_or(String::new(), |p| format!("  parent {p}")),
                    s.adjacent_parent
                        .as_ref()
                        .map_or(String::new(), |p| format!(" + {p}")),
                )?;
            }
        }
        StreamCommand::List => {
            for s in b.list_streams().await? {
                writeln!(out, "{s}")?;
            }
        }
        StreamCommand::Delete { name } => {
            b.delete_stream(&name).await?;
            writeln!(out, "deleted {name}")?;
        }
        StreamCommand::Reshard { name, shards } => {
            let before = b.describe(&name).await?.open_shards().count();
            // A bar at a terminal; a line per step in logs and pipes.
            let tty = std::io::stderr().is_terminal();
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let steps = reshard::reshard(&b, &name, shards, Duration::from_secs(300), |p| {
                let what = match &p.step {
                    reshard::Step::Split { at, .. } => format!("split at hash key {at}"),
                    reshard::Step::Merge { .. } => "merge two adjacent shards".to_owned(),
                };
                match p.phase {
                    reshard::Phase::Starting if tty => {
                        bar.set_length(p.total as u64);
                        bar.set_position(p.done as u64);
                        bar.set_message(format!("{what}, waiting for ACTIVE…"));
                    }
                    reshard::Phase::Starting => {
                        eprintln!("step {}/{}: {what}", p.done + 1, p.total);
                    }
                    reshard::Phase::Done if tty => bar.set_position(p.done as u64),
                    reshard::Phase::Done => {}
                }
            })
            .await?;
            bar.finish_and_clear();
            writeln!(
                out,
                "resharded {name}: {before} -> {shards} open shard(s) in {steps} step(s)"
            )?;
        }
        StreamCommand::Tail {
            name,
            from,
            follow,
            limit,
        } => {
            let from = parse_from(&from)?;
            tail(
                &b,
                &name,
                &from,
                follow,
                limit.unwrap_or(u64::MAX),
                &mut out,
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `--from`: trim-horizon, latest, an RFC 3339 time (`Z`, an offset
/// such as `+01:00`, or none for UTC; `T` or a space), Unix epoch
/// milliseconds, or an age such as `10m`.
pub(crate) fn parse_from(s: &str) -> anyhow::Result<StartPosition> {
    let s = s.trim();
    let from = parse_from_any(s)?;
    // Kinesis refuses a future time, and on the local log it would just
    // wait: one answer for both, naming the option.
    if let StartPosition::AtTimestamp(ms) = from {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if ms > now + 1_000 {
            anyhow::bail!(
                "--from {s:?} is in the future; to wait for new events, use --from latest --follow"
            );
        }
    }
    Ok(from)
}

fn parse_from_any(s: &str) -> anyhow::Result<StartPosition> {
    Ok(match s {
        "trim-horizon" | "TRIM_HORIZON" => StartPosition::TrimHorizon,
        "latest" | "LATEST" => StartPosition::Latest,
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => StartPosition::AtTimestamp(
            s.parse::<i64>()
                .map_err(|e| anyhow::anyhow!("--from {s:?}: not a number of milliseconds: {e}"))?,
        ),
        _ => {
            if let Some(ms) = parse_time_ms(s) {
                StartPosition::AtTimestamp(ms)
            } else if let Ok(age) = humantime::parse_duration(s) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                StartPosition::AtTimestamp(now.saturating_sub(age).as_millis() as i64)
            } else {
                anyhow::bail!(
                    "--from {s:?}: expected trim-horizon, latest, a time like \
                     2026-11-28T09:00:00Z or 2026-11-28T10:00:00+01:00, Unix epoch \
                     milliseconds, or an age like 10m"
                )
            }
        }
    })
}

/// An RFC 3339 time in epoch milliseconds; without a zone it is UTC.
fn parse_time_ms(s: &str) -> Option<i64> {
    crate::timefmt::parse_rfc3339_ms(s)
}

fn format_ms(ms: i64) -> String {
    crate::timefmt::format_ms(ms)
}

/// Reads every shard, parents before children, printing each event.
async fn tail(
    b: &AnyBackend,
    stream: &str,
    from: &StartPosition,
    follow: bool,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let mut printed = 0u64;
    let mut walk = StreamWalk::new(b.clone(), stream, from.clone(), follow);
    while let Some(w) = walk.next().await? {
        for u in &w.undecodable {
            eprintln!(
                "record {} of shard {}: {} (not printed; {} bytes)",
                u.sequence,
                w.batch.context.shard,
                u.error,
                u.data.len()
            );
        }
        let b = &w.batch;
        for i in 0..b.len() {
            let st = b.stamp(i);
            write!(
                out,
                "{} {} {}\t",
                st.id,
                format_ms(st.received_ms),
                crate::stream::key::printable(b.key(i))
            )?;
            out.write_all(b.line(i))?;
            out.write_all(b"\n")?;
            printed += 1;
            if printed >= limit {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    Ok(())
}
