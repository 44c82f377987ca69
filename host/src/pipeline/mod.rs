//! Pipelines: a stream's batches → a fresh filter job → the sinks → the
//! checkpoint (DESIGN.md, "Data flow" and "Delivery").
//!
//! [`PipelineSpec`] is a pipeline's configuration resolved against the
//! sinks; [`worker`] runs one pipeline over one shard.

pub mod replay;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ErrorPolicy, PipelineConfig, SinkConfig};
use crate::filter::{IsolationBudget, Limits, Params};
use crate::sink::{ObjectStore, SinkError, StreamWriter, open_store};

/// A sink a pipeline writes to.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    pub config: SinkConfig,
    pub store: Arc<dyn ObjectStore>,
}

/// A pipeline ready to run.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub name: String,
    pub stream: String,
    /// The filter's name (a module in the filters directory); `None` for a
    /// raw pipeline.
    pub filter: Option<String>,
    pub params: Params,
    pub limits: Limits,
    /// How far isolating a failed batch may go.
    pub isolation: IsolationBudget,
    pub on_error: ErrorPolicy,
    /// Every sink of the pipeline (default and routed), each once.
    pub sinks: Vec<SinkSpec>,
    /// Sinks of lines without a route (or with a route not listed).
    pub default_targets: Vec<usize>,
    /// Sinks by route name.
    pub routes: HashMap<String, Vec<usize>>,
    /// Where poison lines and undecodable records go (`dead-letter` policy).
    pub dead_letter: Option<SinkSpec>,
}

impl PipelineSpec {
    /// The filter's name, or `raw`.
    pub fn filter_label(&self) -> &str {
        self.filter.as_deref().unwrap_or("raw")
    }

    /// The sinks a line with `route` goes to.
    pub fn targets(&self, route: Option<&str>) -> &[usize] {
        route
            .and_then(|r| self.routes.get(r))
            .map_or(&self.default_targets, Vec::as_slice)
    }
}

/// The name of the dead-letter sink a pipeline gets when it names none.
pub const DEFAULT_DEAD_LETTER: &str = "dead-letter";

/// The stores of every configured sink, opened once and shared by the
/// pipelines (and the default dead-letter sink when a pipeline needs it).
#[derive(Debug, Default, Clone)]
pub struct Sinks {
    pub stores: BTreeMap<String, (SinkConfig, Arc<dyn ObjectStore>)>,
}

impl Sinks {
    /// Opens every sink; `writer` is what `kinesis` sinks write with.
    pub async fn open(config: &Config, writer: &StreamWriter) -> Result<Self, SinkError> {
        let mut stores = BTreeMap::new();
        for (name, c) in &config.sinks {
            let mut c = c.clone();
            if c.kind == crate::config::SinkKind::Index {
                // An index lives in the data directory unless placed, and
                // merges the stream of the pipeline writing it.
                if c.path.is_none() {
                    c.path = Some(config.stream.data_dir.join("index").join(name));
                }
                c.stream = config
                    .pipelines
                    .iter()
                    .find(|p| {
                        p.sinks.contains(name) || p.routes.values().flatten().any(|s| s == name)
                    })
                    .map(|p| p.stream.clone());
            }
            let store = open_store(name, &c, writer).await?;
            stores.insert(name.clone(), (c, store));
        }
        let needs_default = config
            .pipelines
            .iter()
            .any(|p| p.on_error == ErrorPolicy::DeadLetter && p.dead_letter.is_none())
            || config
                .filters
                .auto
                .as_ref()
                .is_some_and(|a| a.on_error == ErrorPolicy::DeadLetter);
        if needs_default && !stores.contains_key(DEFAULT_DEAD_LETTER) {
            let c = default_dead_letter(&config.stream.data_dir);
            let store = open_store(DEFAULT_DEAD_LETTER, &c, writer).await?;
            stores.insert(DEFAULT_DEAD_LETTER.to_owned(), (c, store));
        }
        Ok(Self { stores })
    }

    fn spec(&self, name: &str) -> Result<SinkSpec, SinkError> {
        let (config, store) = self.stores.get(name).ok_or_else(|| SinkError::Setup {
            sink: name.to_owned(),
            message: "no such sink".into(),
        })?;
        Ok(SinkSpec {
            name: name.to_owned(),
            config: config.clone(),
            store: Arc::clone(store),
        })
    }

    /// Resolves a pipeline's configuration.
    pub fn pipeline(&self, p: &PipelineConfig) -> Result<PipelineSpec, SinkError> {
        let mut sinks: Vec<SinkSpec> = Vec::new();
        let index = |name: &str, sinks: &mut Vec<SinkSpec>| -> Result<usize, SinkError> {
            if let Some(i) = sinks.iter().position(|s| s.name == name) {
                return Ok(i);
            }
            sinks.push(self.spec(name)?);
            Ok(sinks.len() - 1)
        };
        let mut default_targets = Vec::new();
        for s in &p.sinks {
            let i = index(s, &mut sinks)?;
            if !default_targets.contains(&i) {
                default_targets.push(i);
            }
        }
        let mut routes = HashMap::new();
        for (route, names) in &p.routes {
            let mut t = Vec::new();
            for s in names {
                let i = index(s, &mut sinks)?;
                if !t.contains(&i) {
                    t.push(i);
                }
            }
            routes.insert(route.clone(), t);
        }
        let dead_letter = match p.on_error {
            ErrorPolicy::DeadLetter => {
                Some(self.spec(p.dead_letter.as_deref().unwrap_or(DEFAULT_DEAD_LETTER))?)
            }
            _ => None,
        };
        Ok(PipelineSpec {
            name: p.name.clone(),
            stream: p.stream.clone(),
            filter: p.filter.clone(),
            params: p
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            limits: p.limits.to_limits(),
            isolation: p.limits.isolation(),
            on_error: p.on_error,
            sinks,
            default_targets,
            routes,
            dead_letter,
        })
    }
}

/// The dead-letter sink of pipelines that name none: a directory in
/// `DATA_DIR/dead-letter`, a prefix per pipeline.
pub fn default_dead_letter(data_dir: &Path) -> SinkConfig {
    let mut c = SinkConfig::dir(data_dir.join("dead-letter"));
    c.prefix = "{pipeline}".to_owned();
    c.max_age_ms = Some(crate::config::EMBEDDED_MAX_AGE_MS);
    c
}
