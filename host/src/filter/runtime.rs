//! The shared Wasm engine: pooling allocator, epoch ticker, module cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::{LoadError, chain};
use super::limits::EngineSettings;
use super::module::LoadedFilter;

/// Epoch ticks per second: deadlines have millisecond resolution.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// One engine shared by every filter. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    settings: EngineSettings,
    /// Hex digest of everything that makes a precompiled artifact valid.
    engine_key: String,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// The engine could not be created from its settings.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Wasm engine: {0}")]
pub struct EngineError(String);

impl Runtime {
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let mut pool = PoolingAllocationConfig::default();
        let n = settings.max_instances.max(1);
        pool.total_component_instances(n)
            // A Rust or C component has a handful of core instances (the
            // module, shims, fix-ups) and one or two memories; one made by
            // componentize-py links CPython and its libraries as 38 core
            // instances (slots of a few KiB each: memories are what costs).
            .total_core_instances(n * 64)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .max_memories_per_component(4)
            .max_core_instances_per_component(64)
            .linear_memory_keep_resident(settings.keep_resident_bytes)
            .table_keep_resident(64 << 10);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(settings.fuel)
            .max_wasm_stack(settings.max_wasm_stack)
            .memory_init_cow(settings.memory_init_cow)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| EngineError(chain(&e)))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());

        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), Arc::clone(&stop_ticker))
            .map_err(|e| EngineError(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                settings,
                engine_key,
                stop_ticker,
            }),
        })
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads a filter from a file; the filter's name is the file stem.
    pub fn load_file(&self, path: &Path) -> Result<LoadedFilter, LoadError> {
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
            path: path.to_owned(),
            error,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "filter".to_owned());
        self.load(&name, &bytes)
    }

    /// Compiles (or fetches from the cache), validates and links a filter.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedFilter, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if !b"\0asm".starts_with(&bytes[..bytes.len().min(4)]) || bytes.is_empty() {
            return Err(LoadError::NotWasm {
                name: name.to_owned(),
            });
        }
        if bytes.len() < 8 {
            return Err(LoadError::Truncated {
                name: name.to_owned(),
                len: bytes.len(),
            });
        }
        // Bytes 4..8: version (1 for core modules) and layer (1 for components).
        if bytes[6..8] == [0, 0] {
            return Err(LoadError::CoreModule {
                name: name.to_owned(),
            });
        }
        let component = self.compile_cached(name, bytes, &sha256)?;
        LoadedFilter::link(self.clone(), name, sha256, bytes.len(), component)
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.settings.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{}.cwasm", self.inner.engine_key)))
    }

    fn compile_cached(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Component, LoadError> {
        let engine = &self.inner.engine;
        let cache = self.cache_path(sha256);
        if let Some(path) = cache.as_ref().filter(|p| p.exists()) {
            match deserialize(engine, path) {
                Ok(c) => {
                    tracing::debug!(filter = name, path = %path.display(), "precompiled module from cache");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(filter = name, path = %path.display(), error = %chain(&e), "ignoring unusable cache entry")
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
            name: name.to_owned(),
            message: chain(&e),
        })?;
        if let Some(path) = &cache
            && let Err(e) = write_cache(&component, path)
        {
            tracing::warn!(filter = name, path = %path.display(), error = %e, "cannot write the module cache");
        }
        Ok(component)
    }
}

/// Bytes of the SHA-256 that ends every cache file.
const CACHE_DIGEST: usize = 32;

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    use sha2::Digest;
    // Read into memory rather than mapping the file: a cache file truncated
    // or rewritten in place while mapped would crash the process (SIGBUS).
    let file = std::fs::read(path)?;
    // wasmtime checks the header but runs the machine code as it is: a
    // damaged file (disk, copy, a stray write) would crash every run, so
    // the file carries the SHA-256 of the artifact and must match it.
    let Some(split) = file.len().checked_sub(CACHE_DIGEST) else {
        wasmtime::bail!("shorter than its checksum");
    };
    let (artifact, digest) = file.split_at(split);
    if sha2::Sha256::digest(artifact)[..] != *digest {
        wasmtime::bail!("checksum mismatch: the file is damaged");
    }
    // SAFETY: the artifact is byte for byte what `Component::serialize`
    // produced in a process with the same engine key (checksum above);
    // wasmtime checks the header and the engine's compatibility. The
    // directory must not be writable by untrusted users, who could write a
    // matching checksum.
    unsafe { Component::deserialize(engine, artifact) }
}

fn write_cache(component: &Component, path: &Path) -> std::io::Result<()> {
    use sha2::Digest;
    use std::io::Write;
    let mut bytes = component.serialize().map_err(std::io::Error::other)?;
    let digest = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A temporary file of our own, made durable, then renamed into place:
    // a reader never sees half a file, and writers never share one.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            // One tick per millisecond of real time: a sleep lasts longer
            // than asked, so the ticks owed are counted from the start (a
            // tick per sleep made deadlines ≈ 10 % late).
            let start = std::time::Instant::now();
            let mut ticks: u128 = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                let due = start.elapsed().as_nanos() / TICK.as_nanos();
                while ticks < due {
                    engine.increment_epoch();
                    ticks += 1;
                }
            }
        })
        .map(|_| ())
}
