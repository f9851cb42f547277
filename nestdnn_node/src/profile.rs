//! On-device profiler: per-descendant latency, plan build time and memory, cached on disk.
//!
//! [`profile_model`] builds every descendant's plan on the calling thread and times it:
//! build time (median of [`ProfileOptions::builds`] builds), single-thread batch-1 latency
//! (median and p90 after a warm-up, over at least [`ProfileOptions::min_runs`] runs and
//! [`ProfileOptions::min_time`]), and memory: the bytes the plan keeps and the transient peak
//! while building, both measured by the counting allocator ([`alloc`]) when the binary
//! installs it, else estimated as the descendant's weight bytes ([`MemorySource`] says which).
//!
//! [`ProfileCache`] stores one JSON file per model and machine, keyed by the SHA-256 of the
//! model's manifest (which pins every model file by hash), the CPU model string from
//! `/proc/cpuinfo` and this crate's version, so a restart does not re-profile. Next to it, under
//! the same key, the node keeps its [`Calibration`]: the CPU time per frame each descendant took
//! in operation, so a restarted node plans with what frames really cost from its first plan.

pub mod alloc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{DescendantPlan, ModelError, MultiCapacityModel};

/// Errors of profiling and of the profile cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Building or running a plan failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The cache folder or file could not be written.
    #[error("profile cache {}: {error}", path.display())]
    Cache {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error (shown in the message).
        error: std::io::Error,
    },
    /// Options out of range.
    #[error("profile options: {0}")]
    Options(String),
}

/// How much measuring to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Untimed runs before timing (default 10).
    pub warmup: usize,
    /// Timed runs at least (default 50).
    pub min_runs: usize,
    /// Timed runs at most (default 5000).
    pub max_runs: usize,
    /// Time spent in timed runs at least, per descendant (default 300 ms).
    pub min_time: Duration,
    /// Plan builds per descendant; `build_ms` is their median (default 3, at least 1).
    pub builds: usize,
    /// Also profile the vanilla model (default true).
    pub vanilla: bool,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            warmup: 10,
            min_runs: 50,
            max_runs: 5000,
            min_time: Duration::from_millis(300),
            builds: 3,
            vanilla: true,
        }
    }
}

/// Where the memory figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// Measured by [`alloc::CountingAlloc`] (heap bytes on the building thread).
    CountingAllocator,
    /// The allocator was not installed: `plan_bytes` is the descendant's f32 weight bytes and
    /// `peak_build_bytes` is 3x that (the transient peak measured on the feasibility VGG).
    WeightBytesEstimate,
}

/// Profile of one descendant (or the vanilla model) on this machine. Times in milliseconds,
/// sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescendantProfile {
    /// Descendant name (`vanilla` for the vanilla model).
    pub name: String,
    /// Median single-thread batch-1 latency.
    pub latency_ms_median: f64,
    /// 90th percentile of the same runs.
    pub latency_ms_p90: f64,
    /// Median plan build time (slice + BN fold + tract optimize): the on-demand switch cost.
    pub build_ms: f64,
    /// Heap bytes the built plan keeps.
    pub plan_bytes: u64,
    /// Highest transient heap use while building, above the level before the build.
    pub peak_build_bytes: u64,
    /// Bytes of the descendant's (sliced, BN-folded) f32 weights.
    pub weight_bytes: u64,
    /// Timed runs behind the latency figures.
    pub runs: usize,
}

/// Profile of a model's whole ladder on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Task name from the manifest.
    pub task: String,
    /// SHA-256 of `manifest.yaml`.
    pub model_sha256: String,
    /// CPU model string (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Version of this crate that measured.
    pub crate_version: String,
    /// Where `plan_bytes` and `peak_build_bytes` come from.
    pub memory_source: MemorySource,
    /// Bytes of master weights an on-demand slot keeps besides its active plan.
    pub master_bytes: u64,
    /// Seconds since the Unix epoch when measured.
    pub created_unix_s: u64,
    /// Per descendant, ladder order (smallest first).
    pub descendants: Vec<DescendantProfile>,
    /// The vanilla model, if profiled.
    pub vanilla: Option<DescendantProfile>,
}

impl ModelProfile {
    /// Bytes of a resident slot: all descendants' plans.
    pub fn resident_bytes(&self) -> u64 {
        self.descendants.iter().map(|d| d.plan_bytes).sum()
    }
}

/// The CPU model string of this machine (`model name` in `/proc/cpuinfo`), with the
/// architecture; `unknown` parts where not available.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Hardware" | "Model" | "cpu model"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("{name} ({})", std::env::consts::ARCH)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds rounded to nanoseconds, so values survive a JSON round trip unchanged.
fn ns_round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
/// The nearest-rank `q`-quantile of `sorted` (ascending; 0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Times one plan: warm-up, then runs until both `min_runs` and `min_time` are reached.
///
/// # Errors
/// [`ModelError`] if the plan fails to run.
pub fn time_plan(
    plan: &DescendantPlan,
    input: &[f32],
    opts: &ProfileOptions,
) -> Result<(f64, f64, usize), ModelError> {
    let mut state = plan.spawn()?;
    for _ in 0..opts.warmup {
        state.run(input)?;
    }
    let mut times = Vec::with_capacity(opts.min_runs.max(64));
    let started = Instant::now();
    while times.len() < opts.max_runs
        && (times.len() < opts.min_runs || started.elapsed() < opts.min_time)
    {
        let t = Instant::now();
        let out = state.run(input)?;
        times.push(ms(t.elapsed()));
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let med = median(&mut times);
    Ok((med, percentile(&times, 0.9), n))
}

fn profile_one(
    build: &dyn Fn() -> Result<DescendantPlan, ModelError>,
    input: &[f32],
    opts: &ProfileOptions,
) -> Result<(DescendantProfile, bool), ProfileError> {
    let mut build_ms = Vec::with_capacity(opts.builds);
    let mut plan = None;
    for _ in 0..opts.builds.max(1) {
        drop(plan.take());
        let p = build()?;
        build_ms.push(ms(p.stats().build_time));
        plan = Some(p);
    }
    let plan = plan.ok_or_else(|| ProfileError::Options("builds must be >= 1".into()))?;
    let (latency_ms_median, latency_ms_p90, runs) = time_plan(&plan, input, opts)?;
    let st = plan.stats();
    let measured = st.measured_plan_bytes.is_some();
    Ok((
        DescendantProfile {
            name: plan.name().to_string(),
            latency_ms_median: ns_round(latency_ms_median),
            latency_ms_p90: ns_round(latency_ms_p90),
            build_ms: ns_round(median(&mut build_ms)),
            plan_bytes: plan.plan_bytes(),
            peak_build_bytes: st.peak_build_bytes.unwrap_or(st.weight_bytes * 3),
            weight_bytes: st.weight_bytes,
            runs,
        },
        measured,
    ))
}

/// Profiles every descendant (and optionally the vanilla model) of `model` on this thread.
///
/// # Errors
/// [`ProfileError::Model`] if a plan fails to build or run, [`ProfileError::Options`] for
/// `min_runs == 0` or `max_runs < min_runs`.
pub fn profile_model(
    model: &MultiCapacityModel,
    opts: &ProfileOptions,
) -> Result<ModelProfile, ProfileError> {
    if opts.min_runs == 0 || opts.max_runs < opts.min_runs {
        return Err(ProfileError::Options(format!(
            "need 1 <= min_runs <= max_runs, got {} and {}",
            opts.min_runs, opts.max_runs
        )));
    }
    // A real image where the fixtures have one; latency does not depend on the values.
    let input = model
        .load_fixtures()
        .ok()
        .and_then(|f| f.input(0).map(<[f32]>::to_vec))
        .filter(|x| x.len() == model.input_shape().iter().product::<usize>())
        .unwrap_or_else(|| vec![0.5; model.input_shape().iter().product()]);
    let mut all_measured = true;
    let mut descendants = Vec::with_capacity(model.num_descendants());
    for i in 0..model.num_descendants() {
        let (p, measured) = profile_one(&|| model.build_plan(i), &input, opts)?;
        all_measured &= measured;
        descendants.push(p);
    }
    let vanilla = if opts.vanilla {
        let (p, measured) = profile_one(&|| model.build_vanilla_plan(), &input, opts)?;
        all_measured &= measured;
        Some(p)
    } else {
        None
    };
    Ok(ModelProfile {
        task: model.manifest().task.clone(),
        model_sha256: model.manifest_sha256().to_string(),
        cpu_model: cpu_model(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        memory_source: if all_measured {
            MemorySource::CountingAllocator
        } else {
            MemorySource::WeightBytesEstimate
        },
        master_bytes: model.master_bytes(),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        descendants,
        vanilla,
    })
}

/// Profiles on disk, one JSON file per (model, CPU, crate version).
#[derive(Debug, Clone)]
pub struct ProfileCache {
    dir: PathBuf,
}

/// What frames of a model's descendants cost in operation on this machine (the node's
/// re-calibration, `scheduler.calibration_period_s`), persisted in the [`ProfileCache`] under
/// the profile's key so that a restart starts calibrated. Valid only for the same model
/// (manifest hash), CPU model and crate version, like the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Task name from the manifest.
    pub task: String,
    /// SHA-256 of `manifest.yaml`.
    pub model_sha256: String,
    /// CPU model string (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Version of this crate that measured.
    pub crate_version: String,
    /// Seconds since the Unix epoch when stored.
    pub created_unix_s: u64,
    /// Descendant names, ladder order.
    pub descendants: Vec<String>,
    /// Per descendant, thread CPU seconds one frame took in operation (`None`: not observed).
    pub cpu_s_per_frame: Vec<Option<f64>>,
}

impl Calibration {
    /// A calibration of `model` on this machine from per-descendant observations (seconds per
    /// frame; entries that are not finite and > 0 become `None`; resized to the ladder).
    pub fn new(model: &MultiCapacityModel, cpu_s_per_frame: &[Option<f64>]) -> Calibration {
        let descendants: Vec<String> = model
            .manifest()
            .descendants
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let cpu_s_per_frame = (0..descendants.len())
            .map(|d| {
                cpu_s_per_frame
                    .get(d)
                    .copied()
                    .flatten()
                    .filter(|x| x.is_finite() && *x > 0.0)
            })
            .collect();
        Calibration {
            task: model.manifest().task.clone(),
            model_sha256: model.manifest_sha256().to_string(),
            cpu_model: cpu_model(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            descendants,
            cpu_s_per_frame,
        }
    }

    /// True if this calibration was made for `model` on this machine by this crate version.
    pub fn matches(&self, model: &MultiCapacityModel) -> bool {
        self.model_sha256 == model.manifest_sha256()
            && self.cpu_model == cpu_model()
            && self.crate_version == env!("CARGO_PKG_VERSION")
            && self.cpu_s_per_frame.len() == model.num_descendants()
            && self.descendants.len() == model.num_descendants()
            && self
                .descendants
                .iter()
                .zip(&model.manifest().descendants)
                .all(|(a, b)| *a == b.name)
    }
}

/// Whether [`load_or_profile`] measured or read the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileOrigin {
    /// Read from this cache file.
    Cached(PathBuf),
    /// Measured now (and written to this cache file, if a cache was given).
    Measured(Option<PathBuf>),
}

impl ProfileCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProfileCache { dir: dir.into() }
    }

    /// `$NESTDNN_CACHE_DIR`, else `$XDG_CACHE_HOME/nestdnn`, else `$HOME/.cache/nestdnn`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("NESTDNN_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("nestdnn")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("nestdnn")))
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a model's profile on this machine lives in.
    pub fn path_for(&self, model: &MultiCapacityModel) -> PathBuf {
        self.file_for("profile", model)
    }

    /// The file a model's [`Calibration`] on this machine lives in (same key as the profile).
    pub fn calibration_path_for(&self, model: &MultiCapacityModel) -> PathBuf {
        self.file_for("calibration", model)
    }

    /// The stored calibration of `model` on this machine, if present and made for this model,
    /// CPU and crate version (anything else is ignored).
    pub fn load_calibration(&self, model: &MultiCapacityModel) -> Option<Calibration> {
        let text = std::fs::read_to_string(self.calibration_path_for(model)).ok()?;
        let c: Calibration = serde_json::from_str(&text).ok()?;
        c.matches(model).then_some(c)
    }

    /// Writes `calibration` for `model` (atomically: temporary file, then rename).
    ///
    /// # Errors
    /// [`ProfileError::Cache`] if the folder or file cannot be written.
    pub fn store_calibration(
        &self,
        model: &MultiCapacityModel,
        calibration: &Calibration,
    ) -> Result<PathBuf, ProfileError> {
        let path = self.calibration_path_for(model);
        self.write_atomic(&path, calibration)?;
        Ok(path)
    }

    fn file_for(&self, kind: &str, model: &MultiCapacityModel) -> PathBuf {
        let key = crate::model::sha256_hex(
            format!(
                "{}\n{}\n{}",
                model.manifest_sha256(),
                cpu_model(),
                env!("CARGO_PKG_VERSION")
            )
            .as_bytes(),
        );
        let task: String = model
            .manifest()
            .task
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{kind}-{task}-{}.json", &key[..16]))
    }

    /// The cached profile of `model` on this machine, if present and matching (a stale,
    /// unreadable or foreign file is ignored).
    pub fn load(&self, model: &MultiCapacityModel) -> Option<ModelProfile> {
        let text = std::fs::read_to_string(self.path_for(model)).ok()?;
        let p: ModelProfile = serde_json::from_str(&text).ok()?;
        let ok = p.model_sha256 == model.manifest_sha256()
            && p.cpu_model == cpu_model()
            && p.crate_version == env!("CARGO_PKG_VERSION")
            && p.descendants.len() == model.num_descendants()
            && p.descendants
                .iter()
                .zip(&model.manifest().descendants)
                .all(|(a, b)| a.name == b.name);
        ok.then_some(p)
    }

    /// Writes `profile` for `model` (atomically: temporary file, then rename).
    ///
    /// # Errors
    /// [`ProfileError::Cache`] if the folder or file cannot be written.
    pub fn store(
        &self,
        model: &MultiCapacityModel,
        profile: &ModelProfile,
    ) -> Result<PathBuf, ProfileError> {
        let path = self.path_for(model);
        self.write_atomic(&path, profile)?;
        Ok(path)
    }

    /// Writes `value` as JSON to `path` in the cache folder: a temporary file in the same
    /// folder, then a rename, so readers see the old file or the new one, never a torn one.
    fn write_atomic<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), ProfileError> {
        let cache_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ProfileError::Cache { path, error }
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err(&self.dir))?;
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let text = serde_json::to_string_pretty(value).map_err(|e| ProfileError::Cache {
            path: path.to_path_buf(),
            error: std::io::Error::other(e),
        })?;
        std::fs::write(&tmp, text).map_err(cache_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(cache_err(path))
    }
}

/// The profile of `model` on this machine: from `cache` unless `reprofile` or absent, else
/// measured now and stored in `cache`.
///
/// # Errors
/// As [`profile_model`] and [`ProfileCache::store`].
pub fn load_or_profile(
    model: &MultiCapacityModel,
    opts: &ProfileOptions,
    cache: Option<&ProfileCache>,
    reprofile: bool,
) -> Result<(ModelProfile, ProfileOrigin), ProfileError> {
    if let (Some(c), false) = (cache, reprofile) {
        if let Some(p) = c.load(model) {
            return Ok((p, ProfileOrigin::Cached(c.path_for(model))));
        }
    }
    let p = profile_model(model, opts)?;
    let stored = match cache {
        Some(c) => Some(c.store(model, &p)?),
        None => None,
    };
    Ok((p, ProfileOrigin::Measured(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v, 1.0), 10.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 0.9), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn cpu_model_is_named() {
        let c = cpu_model();
        assert!(c.ends_with(&format!("({})", std::env::consts::ARCH)));
        assert!(c.len() > std::env::consts::ARCH.len() + 3);
    }
}
