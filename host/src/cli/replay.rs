//! `kinesthetic replay`: archived objects through a pipeline's filter into
//! its sinks again (the backfill after a filter changed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, PipelineConfig, SinkKind};
use crate::filter::{EngineSettings, Runtime};
use crate::pipeline::Sinks;
use crate::pipeline::replay::{Progress, Selection, replay};
use crate::sink::{StreamWriter, open_store};
use anyhow::{Context, bail};
use clap::Args;

pub(crate) const REPLAY_EXAMPLES: &str = "\
Examples:
  # errors-only changed: run the last day of the raw archive through it again
  kinesthetic replay --pipeline errors-only --since 24h
  # a configured pipeline, a time range, into a fresh directory to compare
  kinesthetic replay --config kinesthetic.toml --pipeline errors --from raw \\
      --since 2026-12-05T08:00:00Z --until 2026-12-05T09:00:00Z --into-dir /tmp/check

Objects are written under the keys the live pipeline gives the same records
(stream, shard, sequence range, first receive time), so a replay into the
pipeline's own archive replaces its objects instead of adding copies.";

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Configuration file (default: the embedded default, as `serve` runs
    /// it with none).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (overrides stream.data_dir).
    #[arg(long, env = "KINESTHETIC_DATA")]
    data: Option<PathBuf>,
    /// The pipeline whose filter, params and sinks are used: a configured
    /// one, or a module of the filters directory run as an automatic
    /// pipeline.
    #[arg(long)]
    pipeline: String,
    /// The archive sink to read (default: the sink of the raw pipeline
    /// reading the same stream).
    #[arg(long, value_name = "SINK")]
    from: Option<String>,
    /// Only objects whose key starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Objects whose first event was received at or after this: RFC 3339
    /// (`2026-12-05T08:00:00Z`) or a duration ago (`90m`, `24h`, `7d`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// … and before this (same forms).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Run this module instead of the pipeline's filter from the filters
    /// directory.
    #[arg(long, value_name = "FILE.wasm")]
    filter: Option<PathBuf>,
    /// Write the pipeline's dir sinks' objects under this directory instead
    /// (same keys): to look at a replay before it replaces anything.
    #[arg(long, value_name = "DIR")]
    into_dir: Option<PathBuf>,
}

/// A time argument in epoch milliseconds.
fn time_arg(what: &str, s: &str) -> anyhow::Result<i64> {
    if let Some(ms) = crate::timefmt::parse_rfc3339_ms(s) {
        return Ok(ms);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(crate::intake::stamp::now_ms() - d.as_millis() as i64);
    }
    bail!(
        "--{what} {s:?}: expected an RFC 3339 time (2026-12-05T08:00:00Z) or a duration ago (90m, 24h, 7d)"
    )
}

pub(crate) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::serve::file_or_embedded(args.config.as_deref(), args.data.as_deref())?;
    let since = args
        .since
        .as_deref()
        .map(|s| time_arg("since", s))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| time_arg("until", s))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        bail!("--since is not before --until: nothing to replay");
    }
    let pipeline = pipeline_named(&config, &args.pipeline, args.filter.is_some())?;
    let from = match &args.from {
        Some(f) => f.clone(),
        None => raw_sink_of(&config, &pipeline.stream)?,
    };
    let from_config = config
        .sinks
        .get(&from)
        .with_context(|| format!("--from {from}: no such sink in the configuration"))?
        .clone();
    if !matches!(from_config.kind, SinkKind::Dir | SinkKind::S3) {
        bail!("--from {from}: only a dir or s3 sink is an archive that can be read back");
    }
    if let Some(dir) = &args.into_dir {
        for name in pipeline
            .sinks
            .iter()
            .chain(pipeline.routes.values().flatten())
        {
            if let Some(s) = config.sinks.get_mut(name)
                && s.kind == SinkKind::Dir
            {
                s.path = Some(dir.clone());
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Only the sinks this replay uses are opened.
        let writer = StreamWriter::default();
        let mut sinks = Sinks::default();
        for name in pipeline
            .sinks
            .iter()
            .chain(pipeline.routes.values().flatten())
        {
            let c = config
                .sinks
                .get(name)
                .with_context(|| format!("pipeline {}: no sink {name}", pipeline.name))?;
            let store = open_store(name, c, &writer).await?;
            sinks.stores.insert(name.clone(), (c.clone(), store));
        }
        let mut spec_config = pipeline.clone();
        spec_config.on_error = crate::config::ErrorPolicy::Skip;
        spec_config.dead_letter = None;
        let spec = sinks.pipeline(&spec_config)?;
        let source = open_store(&from, &from_config, &writer).await?;
        let filter = match (&args.filter, &pipeline.filter) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(name)) => Some(config.filters.dir.join(format!("{name}.wasm"))),
            (None, None) => None,
        };
        let filter = match filter {
            None => None,
            Some(path) => {
                let runtime = Runtime::new(EngineSettings {
                    cache_dir: config.filters.cache_dir.clone().or_else(|| {
                        std::env::var_os("HOME")
                            .map(|h| PathBuf::from(h).join(".cache/kinesthetic/modules"))
                    }),
                    ..EngineSettings::default()
                })?;
                let f = runtime
                    .load_file(&path)
                    .with_context(|| format!("loading the filter {}", path.display()))?;
                Some(Arc::new(f))
            }
        };
        let selection = Selection {
            stream: pipeline.stream.clone(),
            prefix: args.prefix.clone(),
            since_ms: since,
            until_ms: until,
        };
        eprintln!(
            "replaying {} (stream {}) through {} into {}",
            source.location(),
            selection.stream,
            filter.as_ref().map_or("no filter".to_owned(), |f| format!(
                "{} ({})",
                f.info().name,
                &f.sha256()[..12]
            )),
            spec.sinks
                .iter()
                .map(|s| format!("{} ({})", s.name, s.store.location()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} objects {per_sec} {msg} [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut lines_out = 0u64;
        let mut on_progress = |p: Progress<'_>| match p {
            Progress::Listed(n) => bar.set_length(n),
            Progress::Object { lines_out: n, .. } => {
                lines_out += n;
                bar.inc(1);
                bar.set_message(format!("{lines_out} lines out"));
            }
        };
        let done = replay(source.as_ref(), &selection, &spec, filter, &mut on_progress).await;
        bar.finish_and_clear();
        let done = done?;
        println!(
            "replayed {} of {} objects: {} lines in, {} out, into {} objects; {} not selected \
             (another stream or outside the time range){}",
            done.objects_read,
            done.listed,
            done.lines_in,
            done.lines_out,
            done.objects_written,
            done.not_selected,
            if done.poison > 0 {
                format!(
                    "; {} lines the filter failed on were left out (the archive still holds them)",
                    done.poison
                )
            } else {
                String::new()
            }
        );
        if done.skipped.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{} objects could not be replayed:", done.skipped.len());
        for (key, why) in &done.skipped {
            eprintln!("  {key}: {why}");
        }
        Ok(ExitCode::FAILURE)
    })
}

/// The configured pipeline `name`, or the automatic pipeline of the
/// module `name` in the filters directory.
fn pipeline_named(
    config: &Config,
    name: &str,
    module_given: bool,
) -> anyhow::Result<PipelineConfig> {
    if let Some(p) = config.pipelines.iter().find(|p| p.name == name) {
        return Ok(p.clone());
    }
    let module = config.filters.dir.join(format!("{name}.wasm"));
    match &config.filters.auto {
        Some(auto) if module_given || module.is_file() => Ok(auto.pipeline_for(name)),
        _ => {
            let known: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no pipeline {name:?}: the configuration has {known:?}{}",
                if config.filters.auto.is_some() {
                    format!(", and {} does not exist", module.display())
                } else {
                    String::new()
                }
            )
        }
    }
}

/// The archive of the raw pipeline reading `stream`.
fn raw_sink_of(config: &Config, stream: &str) -> anyhow::Result<String> {
    let raw: Vec<&String> = config
        .pipelines
        .iter()
        .filter(|p| p.stream == stream && p.filter.is_none())
        .flat_map(|p| &p.sinks)
        .filter(|s| {
            config
                .sinks
                .get(*s)
                .is_some_and(|c| matches!(c.kind, SinkKind::Dir | SinkKind::S3))
        })
        .collect();
    match raw.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no raw archive of stream {stream} in the configuration: name the archive to read with --from SINK"
        ),
        many => {
            bail!("several raw archives of stream {stream} ({many:?}): choose one with --from SINK")
        }
    }
}
