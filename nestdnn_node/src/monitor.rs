//! Machine resource readings and the resource budget they imply (no ROS).
//!
//! The `resource_monitor` node samples the machine it runs on and publishes a
//! `nestdnn_msgs/ResourceBudget`: how much CPU time and memory the perception node may use.
//! This module holds everything except the publishing:
//!
//! - parsers for `/proc/stat`, `/proc/meminfo`, `/proc/<pid>/stat|statm|comm`,
//!   `/proc/self/cgroup`, `/proc/self/mountinfo`, cgroup v2 `cpu.max`, `cpu.stat`,
//!   `memory.max`, `memory.current`, and `/sys/class/power_supply/*` (all sans-IO: text in,
//!   values out, tested on fixture text);
//! - [`Monitor`], which reads those files under configurable roots, keeps the previous sample,
//!   and turns the deltas into a [`Budget`];
//! - [`ChangeRule`], the "significant change" test deciding between publishing at once and
//!   waiting for the next period;
//! - [`Trace`], a scripted sequence of timed budgets (YAML or CSV) for demos and tests.
//!
//! # The budget
//! `cpu_cores_available = min(cores in the CPU set, cgroup quota) - cores used by others on
//! them - headroom`, clamped at 0, where *others* is every process except the consumers (by
//! default the `nestdnn_node` processes): the node's own inference does not shrink its own
//! budget, which would otherwise oscillate. The CPU set ([`MonitorSettings::cpus`]) is where
//! perception may run, by default this process's own affinity; one that holds every online CPU
//! is the whole machine. Memory likewise: `min(MemAvailable, memory.max - memory.current)`
//! plus what the consumers already hold, minus the memory headroom.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_UNKNOWN`.
pub const POWER_SUPPLY_STATUS_UNKNOWN: u8 = 0;
/// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_CHARGING`.
pub const POWER_SUPPLY_STATUS_CHARGING: u8 = 1;
/// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_DISCHARGING`.
pub const POWER_SUPPLY_STATUS_DISCHARGING: u8 = 2;
/// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_NOT_CHARGING`.
pub const POWER_SUPPLY_STATUS_NOT_CHARGING: u8 = 3;
/// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_FULL`.
pub const POWER_SUPPLY_STATUS_FULL: u8 = 4;

/// Errors of the monitor boundary (reading and parsing machine state, loading traces).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's text did not have the expected format.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// Which file or field.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A trace file is invalid.
    #[error("trace {path}: {detail}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What was wrong (with the line or entry).
        detail: String,
    },
    /// A configuration value is out of range.
    #[error("invalid monitor setting {name}: {detail}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// What was wrong.
        detail: String,
    },
}

fn parse_err(what: &'static str, detail: impl Into<String>) -> MonitorError {
    MonitorError::Parse {
        what,
        detail: detail.into(),
    }
}

/// Cumulative CPU time counters of a `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Ticks spent on anything but idle and iowait.
    pub busy: u64,
    /// All ticks (busy + idle + iowait).
    pub total: u64,
}

/// What `/proc/stat` says about the CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Aggregate counters over all CPUs.
    pub all: CpuTimes,
    /// The counters of each online CPU: (N of its `cpuN` line, counters), in file order.
    pub per_cpu: Vec<(u32, CpuTimes)>,
}

impl ProcStat {
    /// Number of `cpuN` lines (online CPUs), at least 1.
    pub fn cpus(&self) -> u32 {
        (self.per_cpu.len() as u32).max(1)
    }
}

/// The busy and total ticks of one `cpu` line's values (user nice system idle iowait irq
/// softirq steal; `guest`/`guest_nice` are already in `user`/`nice`).
fn cpu_times(
    line: &str,
    values: std::str::SplitAsciiWhitespace<'_>,
) -> Result<CpuTimes, MonitorError> {
    let vals: Vec<u64> = values
        .take(8)
        .map(|v| v.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| parse_err("/proc/stat", format!("cpu line {line:?}: {e}")))?;
    if vals.len() < 4 {
        return Err(parse_err("/proc/stat", format!("short cpu line {line:?}")));
    }
    let idle = vals[3].saturating_add(vals.get(4).copied().unwrap_or(0));
    let total = vals.iter().fold(0u64, |a, &v| a.saturating_add(v));
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Parses `/proc/stat`. `guest`/`guest_nice` are already included in `user`/`nice` and are
/// not counted twice.
///
/// # Errors
/// [`MonitorError::Parse`] when the aggregate `cpu` line is missing or malformed.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, MonitorError> {
    let mut all = None;
    let mut per_cpu = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(label) = it.next() else { continue };
        if label == "cpu" {
            all = Some(cpu_times(line, it)?);
        } else if let Some(n) = label
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<u32>().ok())
        {
            per_cpu.push((n, cpu_times(line, it)?));
        }
    }
    let all = all.ok_or_else(|| parse_err("/proc/stat", "no aggregate cpu line"))?;
    Ok(ProcStat { all, per_cpu })
}

/// Largest CPU number a CPU list may name (Linux's `NR_CPUS` limit is 8192).
const MAX_CPU: u32 = 8191;

/// Parses a Linux CPU list (`0-3,6,8-9`; the format of `Cpus_allowed_list`, `cpuset.cpus` and
/// `taskset -c`) into sorted, distinct CPU numbers.
///
/// # Errors
/// [`MonitorError::Parse`] for an empty list, a bad number or range, or a CPU above 8191.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, MonitorError> {
    let bad = |d: String| parse_err("CPU list", d);
    let num = |t: &str| -> Result<u32, MonitorError> {
        let n = t
            .trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("{t:?} is not a CPU number in {text:?}")))?;
        if n > MAX_CPU {
            return Err(bad(format!("CPU {n} above {MAX_CPU} in {text:?}")));
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {part:?} runs backwards in {text:?}")));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The `Cpus_allowed_list` of a `/proc/<pid>/status` text (the CPUs the process may run on:
/// its affinity, within its cpuset), parsed; `Ok(None)` when the field is absent.
///
/// # Errors
/// [`MonitorError::Parse`] when the field is malformed.
pub fn parse_cpus_allowed_list(status: &str) -> Result<Option<Vec<u32>>, MonitorError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(parse_cpu_list)
        .transpose()
}

/// Memory figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`: memory that can be allocated without swapping.
    pub available: u64,
}

/// Parses `/proc/meminfo` (`MemTotal` and `MemAvailable`, given in kB).
///
/// # Errors
/// [`MonitorError::Parse`] when either field is missing or malformed.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, MonitorError> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        let mut it = rest.split_ascii_whitespace();
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| parse_err("/proc/meminfo", format!("bad line {line:?}")))?;
        let mult = match it.next() {
            Some("kB") => 1024,
            None => 1,
            Some(u) => return Err(parse_err("/proc/meminfo", format!("unit {u:?}"))),
        };
        *slot = Some(v.saturating_mul(mult));
    }
    Ok(MemInfo {
        total: total.ok_or_else(|| parse_err("/proc/meminfo", "no MemTotal"))?,
        available: available.ok_or_else(|| parse_err("/proc/meminfo", "no MemAvailable"))?,
    })
}

/// The cgroup v2 path of a process from `/proc/<pid>/cgroup` (the `0::/path` line), if any.
pub fn parse_cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

/// The mount point of the cgroup v2 hierarchy from `/proc/self/mountinfo`, if mounted.
pub fn parse_cgroup2_mount(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_ascii_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Parses cgroup v2 `cpu.max` (`"$QUOTA $PERIOD"` or `"max $PERIOD"`) into a core limit.
/// `Ok(None)` means unlimited.
///
/// # Errors
/// [`MonitorError::Parse`] on malformed text or a zero period.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, MonitorError> {
    let mut it = text.split_ascii_whitespace();
    let quota = it.next().ok_or_else(|| parse_err("cpu.max", "empty"))?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: f64 = quota
        .parse()
        .map_err(|_| parse_err("cpu.max", format!("quota {quota:?}")))?;
    let period: f64 = match it.next() {
        Some(p) => p
            .parse()
            .map_err(|_| parse_err("cpu.max", format!("period {p:?}")))?,
        None => 100_000.0,
    };
    if period <= 0.0 {
        return Err(parse_err("cpu.max", "zero period"));
    }
    Ok(Some(quota / period))
}

/// Parses cgroup v2 `memory.max` (bytes or `max`). `Ok(None)` means unlimited.
///
/// # Errors
/// [`MonitorError::Parse`] on malformed text.
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, MonitorError> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| parse_err("memory.max", format!("{t:?}")))
}

/// Parses the `usage_usec` field of cgroup v2 `cpu.stat` (microseconds of CPU time).
///
/// # Errors
/// [`MonitorError::Parse`] when the field is missing or malformed.
pub fn parse_cpu_stat_usage_usec(text: &str) -> Result<u64, MonitorError> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| parse_err("cpu.stat", "no usage_usec"))
}

/// Parses `/proc/<pid>/stat` into `utime + stime` clock ticks (the comm field may hold spaces
/// and parentheses; fields are counted after the last `)`).
///
/// # Errors
/// [`MonitorError::Parse`] on malformed text.
pub fn parse_pid_stat_ticks(text: &str) -> Result<u64, MonitorError> {
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| parse_err("/proc/<pid>/stat", "no comm"))?;
    // After ")": state(3) ppid(4) ... utime(14) stime(15); index 0 here is field 3.
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    let get = |i: usize| -> Result<u64, MonitorError> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| parse_err("/proc/<pid>/stat", format!("field {}", i + 3)))
    };
    Ok(get(11)? + get(12)?)
}

/// Maps a `/sys/class/power_supply/*/status` text to a `BatteryState` status constant.
pub fn parse_power_supply_status(text: &str) -> u8 {
    match text.trim() {
        "Charging" => POWER_SUPPLY_STATUS_CHARGING,
        "Discharging" => POWER_SUPPLY_STATUS_DISCHARGING,
        "Not charging" => POWER_SUPPLY_STATUS_NOT_CHARGING,
        "Full" => POWER_SUPPLY_STATUS_FULL,
        _ => POWER_SUPPLY_STATUS_UNKNOWN,
    }
}

/// Battery state of the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    /// Charge 0..1 (NaN if unknown).
    pub percentage: f32,
    /// A `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_*` value.
    pub status: u8,
}

impl Battery {
    /// No battery found.
    pub const UNKNOWN: Battery = Battery {
        percentage: f32::NAN,
        status: POWER_SUPPLY_STATUS_UNKNOWN,
    };
}

/// Resource budget for the perception node: the plain counterpart of
/// `nestdnn_msgs/ResourceBudget` (without the header).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// CPU time per second the node may spend on inference, in cores (>= 0).
    pub cpu_cores_available: f32,
    /// Whole-machine CPU load 0..1 (NaN if unknown).
    pub cpu_load: f32,
    /// Memory the node may use for models and activations, in bytes.
    pub memory_available_bytes: u64,
    /// Battery charge 0..1 (NaN if unknown).
    pub battery_percentage: f32,
    /// A `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_*` value.
    pub power_supply_status: u8,
}

/// Resources reserved for the rest of the robot, never handed to the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    /// Cores kept free (>= 0).
    pub cpu_cores: f64,
    /// Bytes kept free.
    pub memory_bytes: u64,
}

impl Default for Headroom {
    fn default() -> Self {
        Headroom {
            cpu_cores: 0.25,
            memory_bytes: 256 << 20,
        }
    }
}

/// Where the monitor reads machine state; tests point these at fixture trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The procfs root (`/proc`).
    pub proc_root: PathBuf,
    /// The sysfs root (`/sys`).
    pub sys_root: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

fn read(path: &Path) -> Result<String, MonitorError> {
    fs::read_to_string(path).map_err(|source| MonitorError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The cgroup v2 directory of this process, with the files the monitor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Directory under the cgroup2 mount.
    pub dir: PathBuf,
}

impl Cgroup {
    /// Finds this process's cgroup v2 directory (`/proc/self/cgroup` + `/proc/self/mountinfo`
    /// under `sources`), or `None` when the machine has no cgroup v2 hierarchy.
    pub fn discover(sources: &Sources) -> Option<Cgroup> {
        let rel = parse_cgroup_v2_path(&read(&sources.proc_root.join("self/cgroup")).ok()?)?;
        let mount = read(&sources.proc_root.join("self/mountinfo"))
            .ok()
            .and_then(|t| parse_cgroup2_mount(&t))
            .map(|m| {
                // Fixture trees: the mount point is taken relative to the sys root.
                m.strip_prefix("/sys")
                    .map(|r| sources.sys_root.join(r))
                    .unwrap_or(m)
            })?;
        let dir = mount.join(rel.trim_start_matches('/'));
        dir.is_dir().then_some(Cgroup { dir })
    }

    /// Core limit from `cpu.max` of this cgroup and its ancestors up to the mount (the
    /// smallest wins); `None` when unlimited or unreadable.
    pub fn cpu_limit(&self) -> Option<f64> {
        self.ancestors()
            .filter_map(|d| read(&d.join("cpu.max")).ok())
            .filter_map(|t| parse_cpu_max(&t).ok().flatten())
            .reduce(f64::min)
    }

    /// Free memory under `memory.max` (`memory.max - memory.current`, smallest over the
    /// ancestors), `None` when unlimited or unreadable.
    pub fn memory_free(&self) -> Option<u64> {
        self.ancestors()
            .filter_map(|d| {
                let max = parse_memory_max(&read(&d.join("memory.max")).ok()?).ok()??;
                let cur: u64 = read(&d.join("memory.current")).ok()?.trim().parse().ok()?;
                Some(max.saturating_sub(cur))
            })
            .min()
    }

    /// CPU time used by this cgroup so far, in microseconds (`cpu.stat usage_usec`).
    pub fn usage_usec(&self) -> Option<u64> {
        read(&self.dir.join("cpu.stat"))
            .ok()
            .and_then(|t| parse_cpu_stat_usage_usec(&t).ok())
    }

    fn ancestors(&self) -> impl Iterator<Item = &Path> {
        // Stop at the hierarchy root: it has no cpu.max/memory.max files anyway.
        self.dir
            .ancestors()
            .take_while(|d| d.join("cgroup.procs").exists())
    }
}

/// Reads the first battery under `<sys>/class/power_supply` (a supply whose `type` is
/// `Battery`); [`Battery::UNKNOWN`] when there is none.
pub fn read_battery(sources: &Sources) -> Battery {
    let dir = sources.sys_root.join("class/power_supply");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Battery::UNKNOWN;
    };
    let mut supplies: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    supplies.sort();
    for s in supplies {
        let is_battery = read(&s.join("type"))
            .map(|t| t.trim() == "Battery")
            .unwrap_or(false);
        if !is_battery {
            continue;
        }
        let percentage = read(&s.join("capacity"))
            .ok()
            .and_then(|t| t.trim().parse::<f32>().ok())
            .map(|p| (p / 100.0).clamp(0.0, 1.0))
            .unwrap_or(f32::NAN);
        let status = read(&s.join("status"))
            .map(|t| parse_power_supply_status(&t))
            .unwrap_or(POWER_SUPPLY_STATUS_UNKNOWN);
        return Battery { percentage, status };
    }
    Battery::UNKNOWN
}

/// Settings of a [`Monitor`].
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    /// Resources reserved for the rest of the robot.
    pub headroom: Headroom,
    /// Process names (`/proc/<pid>/comm`, at most 15 bytes) whose CPU time and memory are the
    /// consumer's own and do not count as used by others.
    pub consumers: Vec<String>,
    /// The CPUs the consumers may run on: only these count as cores, and only the time others
    /// spend on them is subtracted. `None` (default): this process's own affinity
    /// (`Cpus_allowed_list` of `/proc/self/status`, which `taskset` and cpusets set), so a
    /// monitor started with the node under the same pinning follows it; all online CPUs where
    /// that cannot be read.
    pub cpus: Option<Vec<u32>>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            headroom: Headroom::default(),
            consumers: vec!["nestdnn_node".to_string()],
            cpus: None,
        }
    }
}

/// One raw sample of the machine.
#[derive(Debug, Clone)]
struct Sample {
    stat: ProcStat,
    cgroup_usec: Option<u64>,
    /// pid -> utime+stime ticks of consumer processes.
    consumer_ticks: HashMap<u32, u64>,
    at: std::time::Instant,
}

/// A derived reading between two samples (what the budget is computed from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Online cores the consumers may run on (all online cores without a CPU set).
    pub cores_online: f64,
    /// cgroup v2 core limit, if any.
    pub cores_limit: Option<f64>,
    /// Cores busy over the interval on those CPUs (all processes).
    pub busy_cores: f64,
    /// Of those, cores used by the consumer processes.
    pub consumer_cores: f64,
    /// Cores used by this cgroup over the interval (when limited).
    pub cgroup_busy_cores: Option<f64>,
    /// Machine load 0..1.
    pub cpu_load: f64,
    /// Memory available machine-wide, bytes.
    pub mem_available: u64,
    /// Free memory under the cgroup limit, bytes.
    pub cgroup_mem_free: Option<u64>,
    /// Resident memory of the consumer processes, bytes.
    pub consumer_rss: u64,
    /// Battery.
    pub battery: Battery,
}

/// Samples the machine and turns consecutive samples into [`Budget`]s.
#[derive(Debug)]
pub struct Monitor {
    sources: Sources,
    settings: MonitorSettings,
    cgroup: Option<Cgroup>,
    /// The CPUs counted (`None`: all online CPUs).
    cpu_set: Option<Vec<u32>>,
    prev: Option<Sample>,
    page_size: u64,
}

impl Monitor {
    /// A monitor reading the live machine (`/proc`, `/sys`).
    ///
    /// # Errors
    /// [`MonitorError::Setting`] when the headroom is negative or not finite.
    pub fn new(settings: MonitorSettings) -> Result<Monitor, MonitorError> {
        Monitor::with_sources(Sources::default(), settings)
    }

    /// A monitor reading under other roots (fixture trees in tests).
    ///
    /// # Errors
    /// [`MonitorError::Setting`] when the headroom is negative or not finite, or the CPU set
    /// is empty.
    pub fn with_sources(
        sources: Sources,
        settings: MonitorSettings,
    ) -> Result<Monitor, MonitorError> {
        let h = settings.headroom.cpu_cores;
        if !h.is_finite() || h < 0.0 {
            return Err(MonitorError::Setting {
                name: "headroom_cpu_cores",
                detail: format!("{h} (must be >= 0)"),
            });
        }
        let cpu_set = match &settings.cpus {
            Some(c) if c.is_empty() => {
                return Err(MonitorError::Setting {
                    name: "cpus",
                    detail: "an empty CPU set (name at least one CPU, or leave it unset)".into(),
                })
            }
            Some(c) => {
                let mut c = c.clone();
                c.sort_unstable();
                c.dedup();
                Some(c)
            }
            // Unreadable or malformed: count every online CPU, as before CPU sets were read.
            None => read(&sources.proc_root.join("self/status"))
                .ok()
                .and_then(|t| parse_cpus_allowed_list(&t).ok().flatten()),
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Ok(Monitor {
            cgroup: Cgroup::discover(&sources),
            cpu_set,
            sources,
            settings,
            prev: None,
            page_size: if page > 0 { page as u64 } else { 4096 },
        })
    }

    /// The cgroup v2 directory in use, if any.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// The CPUs counted as the consumers' (`None`: every online CPU).
    pub fn cpu_set(&self) -> Option<&[u32]> {
        self.cpu_set.as_deref()
    }

    /// Cores, busy ticks and total ticks over the interval on the CPU set, when a set is in
    /// force, names an online CPU and leaves out at least one: `None` means the whole machine.
    fn set_deltas(&self, now: &ProcStat, prev: &ProcStat) -> Option<(f64, u64, u64)> {
        let set = self.cpu_set.as_ref()?;
        let counted: Vec<&(u32, CpuTimes)> = now
            .per_cpu
            .iter()
            .filter(|(n, _)| set.binary_search(n).is_ok())
            .collect();
        if counted.is_empty() || counted.len() == now.per_cpu.len() {
            return None;
        }
        let (mut busy, mut total) = (0u64, 0u64);
        for (n, t) in counted.iter().copied() {
            // A CPU that came online since the last sample counts from now on.
            let p = prev
                .per_cpu
                .iter()
                .find(|(m, _)| m == n)
                .map_or(*t, |(_, p)| *p);
            busy = busy.saturating_add(t.busy.saturating_sub(p.busy));
            total = total.saturating_add(t.total.saturating_sub(p.total));
        }
        Some((counted.len() as f64, busy, total))
    }

    /// Pids whose `comm` is one of the consumer names.
    fn consumer_pids(&self) -> Vec<u32> {
        if self.settings.consumers.is_empty() {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(&self.sources.proc_root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                read(&self.sources.proc_root.join(format!("{pid}/comm")))
                    .map(|c| self.settings.consumers.iter().any(|n| n == c.trim()))
                    .unwrap_or(false)
            })
            .collect()
    }

    fn take_sample(&self) -> Result<(Sample, Vec<u32>), MonitorError> {
        let stat = parse_proc_stat(&read(&self.sources.proc_root.join("stat"))?)?;
        let pids = self.consumer_pids();
        let consumer_ticks = pids
            .iter()
            .filter_map(|pid| {
                let t = read(&self.sources.proc_root.join(format!("{pid}/stat"))).ok()?;
                Some((*pid, parse_pid_stat_ticks(&t).ok()?))
            })
            .collect();
        Ok((
            Sample {
                stat,
                cgroup_usec: self.cgroup.as_ref().and_then(Cgroup::usage_usec),
                consumer_ticks,
                at: std::time::Instant::now(),
            },
            pids,
        ))
    }

    /// Takes a sample and derives a [`Reading`] against the previous one. The first call
    /// only primes the counters and returns `Ok(None)`.
    ///
    /// # Errors
    /// [`MonitorError`] when `/proc/stat` or `/proc/meminfo` cannot be read or parsed.
    pub fn read(&mut self) -> Result<Option<Reading>, MonitorError> {
        let (now, pids) = self.take_sample()?;
        let mem = parse_meminfo(&read(&self.sources.proc_root.join("meminfo"))?)?;
        let Some(prev) = self.prev.replace(now.clone()) else {
            return Ok(None);
        };
        let cores_all = f64::from(now.stat.cpus());
        let dt_ticks = now.stat.all.total.saturating_sub(prev.stat.all.total);
        let d_busy = now.stat.all.busy.saturating_sub(prev.stat.all.busy);
        let cpu_load = if dt_ticks == 0 {
            f64::NAN
        } else {
            d_busy as f64 / dt_ticks as f64
        };
        // Under a CPU set only its CPUs count, and only what runs on them (cpu_load stays the
        // machine's).
        let (cores, busy_cores) = match self.set_deltas(&now.stat, &prev.stat) {
            Some((n, busy, total)) if total > 0 => (n, busy as f64 / total as f64 * n),
            Some((n, _, _)) => (n, 0.0),
            None if dt_ticks == 0 => (cores_all, 0.0),
            None => (cores_all, cpu_load * cores_all),
        };
        // Wall time of the interval in ticks (total ticks are summed over all CPUs).
        let wall_ticks = dt_ticks as f64 / cores_all;
        let consumer_ticks: u64 = now
            .consumer_ticks
            .iter()
            .map(|(pid, t)| t.saturating_sub(prev.consumer_ticks.get(pid).copied().unwrap_or(*t)))
            .sum();
        let consumer_cores = if wall_ticks > 0.0 {
            (consumer_ticks as f64 / wall_ticks).min(busy_cores)
        } else {
            0.0
        };
        let wall_s = now.at.duration_since(prev.at).as_secs_f64();
        let cgroup_busy_cores = match (now.cgroup_usec, prev.cgroup_usec) {
            (Some(a), Some(b)) if wall_s > 0.0 => Some(a.saturating_sub(b) as f64 / 1e6 / wall_s),
            _ => None,
        };
        let consumer_rss = pids
            .iter()
            .filter_map(|pid| {
                let t = read(&self.sources.proc_root.join(format!("{pid}/statm"))).ok()?;
                let pages: u64 = t.split_ascii_whitespace().nth(1)?.parse().ok()?;
                Some(pages * self.page_size)
            })
            .sum();
        Ok(Some(Reading {
            cores_online: cores,
            cores_limit: self.cgroup.as_ref().and_then(Cgroup::cpu_limit),
            busy_cores,
            consumer_cores,
            cgroup_busy_cores,
            cpu_load,
            mem_available: mem.available,
            cgroup_mem_free: self.cgroup.as_ref().and_then(Cgroup::memory_free),
            consumer_rss,
            battery: read_battery(&self.sources),
        }))
    }

    /// Computes the budget of a reading with this monitor's headroom.
    pub fn budget(&self, r: &Reading) -> Budget {
        budget_from_reading(r, &self.settings.headroom)
    }
}

/// The budget formula (see the module docs): pure, for tests and traces.
pub fn budget_from_reading(r: &Reading, headroom: &Headroom) -> Budget {
    let others = (r.busy_cores - r.consumer_cores).max(0.0);
    let mut cpu = r.cores_online - others;
    if let Some(limit) = r.cores_limit {
        let others_in_cgroup = r
            .cgroup_busy_cores
            .map(|c| (c - r.consumer_cores).max(0.0))
            .unwrap_or(others);
        cpu = cpu.min(limit - others_in_cgroup);
    }
    cpu = (cpu - headroom.cpu_cores).max(0.0);
    let mut mem = r.mem_available;
    if let Some(free) = r.cgroup_mem_free {
        mem = mem.min(free);
    }
    let mem = mem
        .saturating_add(r.consumer_rss)
        .saturating_sub(headroom.memory_bytes);
    Budget {
        cpu_cores_available: cpu as f32,
        cpu_load: r.cpu_load as f32,
        memory_available_bytes: mem,
        battery_percentage: r.battery.percentage,
        power_supply_status: r.battery.status,
    }
}

/// Thresholds of a significant budget change (publish at once instead of waiting for the
/// next period).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeRule {
    /// Change of `cpu_cores_available`, in cores.
    pub cpu_cores: f32,
    /// Relative change of `memory_available_bytes` (0.1 = 10 %).
    pub memory_fraction: f64,
    /// Change of the battery charge (0..1).
    pub battery: f32,
}

impl Default for ChangeRule {
    fn default() -> Self {
        ChangeRule {
            cpu_cores: 0.25,
            memory_fraction: 0.10,
            battery: 0.05,
        }
    }
}

impl ChangeRule {
    /// Whether `new` differs significantly from the last published budget: any threshold
    /// crossed, the power supply status changed, or a value became (un)known.
    pub fn significant(&self, last: &Budget, new: &Budget) -> bool {
        let cpu = (new.cpu_cores_available - last.cpu_cores_available).abs() >= self.cpu_cores
            || new.cpu_cores_available.is_nan() != last.cpu_cores_available.is_nan();
        let (a, b) = (
            last.memory_available_bytes as f64,
            new.memory_available_bytes as f64,
        );
        let mem = (a - b).abs() >= self.memory_fraction * a.max(1.0);
        let bat = (new.battery_percentage - last.battery_percentage).abs() >= self.battery
            || new.battery_percentage.is_nan() != last.battery_percentage.is_nan();
        cpu || mem || bat || new.power_supply_status != last.power_supply_status
    }
}

/// One step of a [`Trace`]: from `at` on, the budget is `budget`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceStep {
    /// Time since the start of the trace.
    pub at: Duration,
    /// The budget from then on.
    pub budget: Budget,
}

/// A scripted sequence of budgets (`resource_monitor --trace FILE`).
///
/// YAML: a list of maps `{t: 0.0, cpu_cores: 2.0, memory_mb: 512, cpu_load: 0.3,
/// battery: 0.8, power_supply_status: 2}` (`t` seconds; only `t` and `cpu_cores` required;
/// `memory_bytes` may replace `memory_mb`; a missing field keeps the previous step's value,
/// or 1 GiB / NaN / unknown in the first step). CSV: a header line naming the same columns,
/// then one row per step; `#` starts a comment line. Steps must be in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The steps, in time order (at least one).
    pub steps: Vec<TraceStep>,
    /// Length of one round when the trace repeats (see [`Trace::looped`]).
    pub period: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRow {
    t: f64,
    cpu_cores: f32,
    #[serde(default)]
    memory_mb: Option<f64>,
    #[serde(default)]
    memory_bytes: Option<u64>,
    #[serde(default)]
    cpu_load: Option<f32>,
    #[serde(default)]
    battery: Option<f32>,
    #[serde(default)]
    power_supply_status: Option<u8>,
}

/// Memory of a first trace step that names none: 1 GiB.
const TRACE_DEFAULT_MEMORY: u64 = 1 << 30;

impl Trace {
    /// Loads a trace file (`.csv` = CSV, anything else YAML).
    ///
    /// # Errors
    /// [`MonitorError::Read`] or [`MonitorError::Trace`] with the offending entry.
    pub fn load(path: &Path) -> Result<Trace, MonitorError> {
        let text = read(path)?;
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let rows = if is_csv {
            parse_trace_csv(&text)
        } else {
            serde_yaml::from_str::<Vec<TraceRow>>(&text).map_err(|e| e.to_string())
        }
        .map_err(|detail| MonitorError::Trace {
            path: path.to_path_buf(),
            detail,
        })?;
        Trace::from_rows(rows).map_err(|detail| MonitorError::Trace {
            path: path.to_path_buf(),
            detail,
        })
    }

    fn from_rows(rows: Vec<TraceRow>) -> Result<Trace, String> {
        if rows.is_empty() {
            return Err("no steps".into());
        }
        let mut steps: Vec<TraceStep> = Vec::with_capacity(rows.len());
        let mut last = -1.0f64;
        for (i, r) in rows.into_iter().enumerate() {
            if !r.t.is_finite() || r.t < 0.0 || r.t < last {
                return Err(format!("step {i}: t={} not >= previous {last}", r.t));
            }
            last = r.t;
            // Optional fields carry over from the previous step.
            let prev = steps.last().map(|s| s.budget).unwrap_or(Budget {
                cpu_cores_available: 0.0,
                cpu_load: f32::NAN,
                memory_available_bytes: TRACE_DEFAULT_MEMORY,
                battery_percentage: f32::NAN,
                power_supply_status: POWER_SUPPLY_STATUS_UNKNOWN,
            });
            let memory = match (r.memory_bytes, r.memory_mb) {
                (Some(b), _) => b,
                (None, Some(mb)) if mb.is_finite() && mb >= 0.0 => (mb * 1048576.0) as u64,
                (None, Some(mb)) => return Err(format!("step {i}: memory_mb {mb}")),
                (None, None) => prev.memory_available_bytes,
            };
            steps.push(TraceStep {
                at: Duration::from_secs_f64(r.t),
                budget: Budget {
                    // Traces may script invalid budgets (NaN, negative) on purpose: the node
                    // must cope, so they are passed through unchanged.
                    cpu_cores_available: r.cpu_cores,
                    cpu_load: r.cpu_load.unwrap_or(prev.cpu_load),
                    memory_available_bytes: memory,
                    battery_percentage: r.battery.unwrap_or(prev.battery_percentage),
                    power_supply_status: r.power_supply_status.unwrap_or(prev.power_supply_status),
                },
            });
        }
        Ok(Trace {
            steps,
            period: None,
        })
    }

    /// Makes the trace repeat: after the last step plus `gap` it starts over.
    pub fn looped(mut self, gap: Duration) -> Trace {
        let last = self.steps.last().map(|s| s.at).unwrap_or_default();
        self.period = Some(last + gap);
        self
    }

    /// Index of the step in force `elapsed` after the start.
    pub fn index_at(&self, elapsed: Duration) -> usize {
        let t = match self.period {
            Some(p) if !p.is_zero() => {
                Duration::from_nanos((elapsed.as_nanos() % p.as_nanos()) as u64)
            }
            _ => elapsed,
        };
        self.steps.iter().rposition(|s| s.at <= t).unwrap_or(0)
    }

    /// The budget in force `elapsed` after the start.
    pub fn budget_at(&self, elapsed: Duration) -> Budget {
        self.steps[self.index_at(elapsed)].budget
    }

    /// Time from `elapsed` to the next step change (`None` after the last step of a
    /// non-looping trace).
    pub fn next_change(&self, elapsed: Duration) -> Option<Duration> {
        match self.period {
            Some(p) if !p.is_zero() => {
                let base =
                    Duration::from_nanos((elapsed.as_nanos() / p.as_nanos() * p.as_nanos()) as u64);
                let t = elapsed - base;
                let next = self
                    .steps
                    .iter()
                    .find(|s| s.at > t)
                    .map(|s| s.at)
                    .unwrap_or(p);
                Some(next - t)
            }
            _ => self
                .steps
                .iter()
                .find(|s| s.at > elapsed)
                .map(|s| s.at - elapsed),
        }
    }
}

fn parse_trace_csv(text: &str) -> Result<Vec<TraceRow>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let (_, header) = lines.next().ok_or("empty CSV")?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut rows = Vec::new();
    for (n, line) in lines {
        let vals: Vec<&str> = line.split(',').map(str::trim).collect();
        if vals.len() != cols.len() {
            return Err(format!(
                "line {}: {} fields, header has {}",
                n + 1,
                vals.len(),
                cols.len()
            ));
        }
        // Re-use the YAML row schema: build a flow map and let serde check names and types.
        let map = cols
            .iter()
            .zip(&vals)
            .map(|(c, v)| {
                format!(
                    "{c}: {}",
                    if v.eq_ignore_ascii_case("nan") {
                        ".nan"
                    } else {
                        v
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let row: TraceRow = serde_yaml::from_str(&format!("{{{map}}}"))
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\nctxt 5\n";
    const STAT_B: &str = "cpu  250 0 100 900 50 0 0 0 0 0\ncpu0 125 0 50 450 25 0 0 0 0 0\ncpu1 125 0 50 450 25 0 0 0 0 0\n";

    #[test]
    fn proc_stat_parses_busy_and_total() {
        let s = parse_proc_stat(STAT_A).unwrap();
        assert_eq!(s.cpus(), 2);
        assert_eq!(
            s.all,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        assert_eq!(
            s.per_cpu,
            vec![
                (
                    0,
                    CpuTimes {
                        busy: 75,
                        total: 500
                    }
                ),
                (
                    1,
                    CpuTimes {
                        busy: 75,
                        total: 500
                    }
                )
            ]
        );
        assert!(parse_proc_stat("intr 1\n").is_err());
        assert!(parse_proc_stat("cpu 1 x 3 4\n").is_err());
        assert!(
            parse_proc_stat("cpu 1 2 3 4\ncpu0 1 2\n").is_err(),
            "short cpuN line"
        );
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,6, 8-9\n").unwrap(),
            vec![0, 1, 2, 3, 6, 8, 9]
        );
        assert_eq!(parse_cpu_list("2,0-1,1").unwrap(), vec![0, 1, 2]);
        for bad in ["", "a", "3-1", "0-", "1,,2", "0-99999"] {
            let e = parse_cpu_list(bad).unwrap_err().to_string();
            assert!(e.contains("CPU list"), "{bad:?}: {e}");
        }
        let status =
            "Name:\tnestdnn_node\nCpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed_list:\t0\n";
        assert_eq!(parse_cpus_allowed_list(status).unwrap(), Some(vec![0]));
        assert_eq!(parse_cpus_allowed_list("Name:\tx\n").unwrap(), None);
        assert!(parse_cpus_allowed_list("Cpus_allowed_list:\tx\n").is_err());
    }

    /// Two CPUs; between the samples CPU 0 is busy all the time and CPU 1 idle (a hog pinned
    /// to CPU 0). `status`: this process's `/proc/self/status`, if any.
    fn pinned_hog_budget(cpus: Option<Vec<u32>>, status: Option<&str>) -> (Budget, Reading) {
        let d = tempfile::tempdir().unwrap();
        let proc_root = d.path().join("proc");
        fs::create_dir_all(proc_root.join("self")).unwrap();
        fs::write(
            proc_root.join("meminfo"),
            "MemTotal: 2000 kB\nMemAvailable: 1000 kB\n",
        )
        .unwrap();
        if let Some(st) = status {
            fs::write(proc_root.join("self/status"), st).unwrap();
        }
        let stat = |t: &str| fs::write(proc_root.join("stat"), t).unwrap();
        stat("cpu  0 0 0 200 0\ncpu0 0 0 0 100 0\ncpu1 0 0 0 100 0\n");
        let settings = MonitorSettings {
            headroom: Headroom {
                cpu_cores: 0.0,
                memory_bytes: 0,
            },
            consumers: vec![],
            cpus,
        };
        let src = Sources {
            proc_root: proc_root.clone(),
            sys_root: d.path().join("sys"),
        };
        let mut m = Monitor::with_sources(src, settings).unwrap();
        assert!(m.read().unwrap().is_none());
        stat("cpu  100 0 0 300 0\ncpu0 100 0 0 100 0\ncpu1 0 0 0 200 0\n");
        let r = m.read().unwrap().unwrap();
        (m.budget(&r), r)
    }

    #[test]
    fn a_cpu_set_counts_only_its_cpus() {
        // The whole machine: one core busy of two.
        let (b, r) = pinned_hog_budget(None, None);
        assert_eq!((r.cores_online, r.busy_cores), (2.0, 1.0));
        assert_eq!(b.cpu_cores_available, 1.0);
        // Perception pinned to CPU 0, where the hog runs: nothing is left for it.
        let (b, r) = pinned_hog_budget(Some(vec![0]), None);
        assert_eq!((r.cores_online, r.busy_cores), (1.0, 1.0));
        assert_eq!(b.cpu_cores_available, 0.0);
        // Pinned to CPU 1: one idle core.
        let (b, r) = pinned_hog_budget(Some(vec![1]), None);
        assert_eq!((r.cores_online, r.busy_cores), (1.0, 0.0));
        assert_eq!(b.cpu_cores_available, 1.0);
        assert!(
            (r.cpu_load - 0.5).abs() < 1e-12,
            "cpu_load stays the machine's"
        );
        // By default the monitor's own affinity (inherited from taskset or a cpuset).
        let (b, _) = pinned_hog_budget(None, Some("Cpus_allowed_list:\t0\n"));
        assert_eq!(b.cpu_cores_available, 0.0);
        // A set holding every online CPU, or none of them, is the whole machine.
        for set in [vec![0, 1, 5], vec![7]] {
            let (b, r) = pinned_hog_budget(Some(set), None);
            assert_eq!((r.cores_online, b.cpu_cores_available), (2.0, 1.0));
        }
        // An unreadable affinity: the whole machine.
        let (b, _) = pinned_hog_budget(None, Some("Cpus_allowed_list:\tgarbage\n"));
        assert_eq!(b.cpu_cores_available, 1.0);
    }

    #[test]
    fn an_empty_cpu_set_is_refused() {
        let e = Monitor::new(MonitorSettings {
            cpus: Some(vec![]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }

    #[test]
    fn meminfo_parses_kb() {
        let m = parse_meminfo(
            "MemTotal:       24684084 kB\nMemFree: 1 kB\nMemAvailable:   21570136 kB\n",
        )
        .unwrap();
        assert_eq!(m.total, 24684084 * 1024);
        assert_eq!(m.available, 21570136 * 1024);
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\nMemAvailable: 1 kB").is_err());
    }

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(
            parse_cgroup_v2_path("4:memory:/x\n0::/system.slice/a.service\n").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(parse_cgroup_v2_path("4:memory:/x\n"), None);
        let mi = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("30 1 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max("150000 100000\n").unwrap(), Some(1.5));
        assert!(parse_cpu_max("abc 100000").is_err());
        assert!(parse_cpu_max("100 0").is_err());
        assert_eq!(parse_memory_max("max\n").unwrap(), None);
        assert_eq!(parse_memory_max("536870912\n").unwrap(), Some(536870912));
        assert_eq!(
            parse_cpu_stat_usage_usec("usage_usec 1234\nuser_usec 1\n").unwrap(),
            1234
        );
    }

    #[test]
    fn pid_stat_with_odd_comm() {
        let t = "42 (a b) c) R 1 42 42 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 10\n";
        assert_eq!(parse_pid_stat_ticks(t).unwrap(), 10);
        assert!(parse_pid_stat_ticks("42 no comm").is_err());
    }

    #[test]
    fn power_status_maps_to_battery_state() {
        assert_eq!(
            parse_power_supply_status("Discharging\n"),
            POWER_SUPPLY_STATUS_DISCHARGING
        );
        assert_eq!(
            parse_power_supply_status("Not charging"),
            POWER_SUPPLY_STATUS_NOT_CHARGING
        );
        assert_eq!(
            parse_power_supply_status("weird"),
            POWER_SUPPLY_STATUS_UNKNOWN
        );
    }

    fn reading() -> Reading {
        Reading {
            cores_online: 4.0,
            cores_limit: None,
            busy_cores: 1.5,
            consumer_cores: 1.0,
            cgroup_busy_cores: None,
            cpu_load: 0.375,
            mem_available: 1000 << 20,
            cgroup_mem_free: None,
            consumer_rss: 100 << 20,
            battery: Battery::UNKNOWN,
        }
    }

    #[test]
    fn budget_excludes_consumer_and_headroom() {
        let h = Headroom {
            cpu_cores: 0.5,
            memory_bytes: 100 << 20,
        };
        let b = budget_from_reading(&reading(), &h);
        assert!((b.cpu_cores_available - 3.0).abs() < 1e-6); // 4 - 0.5 others - 0.5 headroom
        assert_eq!(b.memory_available_bytes, 1000 << 20);
        assert!(b.battery_percentage.is_nan());
        // cgroup quota binds
        let r = Reading {
            cores_limit: Some(2.0),
            cgroup_busy_cores: Some(1.2),
            ..reading()
        };
        let b = budget_from_reading(&r, &h);
        assert!((b.cpu_cores_available - 1.3).abs() < 1e-6); // 2 - 0.2 - 0.5
                                                             // saturated machine clamps at 0
        let r = Reading {
            busy_cores: 4.0,
            consumer_cores: 0.0,
            ..reading()
        };
        assert_eq!(budget_from_reading(&r, &h).cpu_cores_available, 0.0);
        // cgroup memory binds
        let r = Reading {
            cgroup_mem_free: Some(200 << 20),
            ..reading()
        };
        assert_eq!(
            budget_from_reading(&r, &h).memory_available_bytes,
            200 << 20
        );
    }

    #[test]
    fn change_rule_thresholds() {
        let rule = ChangeRule::default();
        let a = budget_from_reading(&reading(), &Headroom::default());
        assert!(!rule.significant(&a, &a));
        let b = Budget {
            cpu_cores_available: a.cpu_cores_available - 0.3,
            ..a
        };
        assert!(rule.significant(&a, &b));
        let b = Budget {
            cpu_cores_available: a.cpu_cores_available - 0.1,
            ..a
        };
        assert!(!rule.significant(&a, &b));
        let b = Budget {
            memory_available_bytes: a.memory_available_bytes / 2,
            ..a
        };
        assert!(rule.significant(&a, &b));
        let b = Budget {
            battery_percentage: 0.5,
            ..a
        };
        assert!(rule.significant(&a, &b), "battery became known");
        let b = Budget {
            power_supply_status: POWER_SUPPLY_STATUS_CHARGING,
            ..a
        };
        assert!(rule.significant(&a, &b));
    }

    fn fixture_tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let w = |rel: &str, text: &str| {
            let f = p.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, text).unwrap();
        };
        w("proc/stat", STAT_A);
        w(
            "proc/meminfo",
            "MemTotal: 4000000 kB\nMemAvailable: 2000000 kB\n",
        );
        w("proc/self/cgroup", "0::/robot/perception\n");
        w(
            "proc/self/mountinfo",
            "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        w("sys/fs/cgroup/cgroup.procs", "");
        w("sys/fs/cgroup/robot/cgroup.procs", "");
        w("sys/fs/cgroup/robot/cpu.max", "100000 100000\n");
        w("sys/fs/cgroup/robot/perception/cgroup.procs", "");
        w("sys/fs/cgroup/robot/perception/cpu.max", "max 100000\n");
        w("sys/fs/cgroup/robot/perception/memory.max", "1073741824\n");
        w(
            "sys/fs/cgroup/robot/perception/memory.current",
            "536870912\n",
        );
        w(
            "sys/fs/cgroup/robot/perception/cpu.stat",
            "usage_usec 1000\n",
        );
        w("sys/class/power_supply/AC/type", "Mains\n");
        w("sys/class/power_supply/BAT0/type", "Battery\n");
        w("sys/class/power_supply/BAT0/capacity", "80\n");
        w("sys/class/power_supply/BAT0/status", "Discharging\n");
        w("proc/77/comm", "nestdnn_node\n");
        w(
            "proc/77/stat",
            "77 (nestdnn_node) S 1 77 77 0 -1 0 0 0 0 0 10 0 0 0 20 0 1 0 1 1 1\n",
        );
        w("proc/77/statm", "1000 256 0 0 0 0 0\n");
        w("proc/78/comm", "bash\n");
        d
    }

    #[test]
    fn monitor_on_fixture_tree() {
        let d = fixture_tree();
        let src = Sources {
            proc_root: d.path().join("proc"),
            sys_root: d.path().join("sys"),
        };
        let h = Headroom {
            cpu_cores: 0.0,
            memory_bytes: 0,
        };
        let mut m = Monitor::with_sources(
            src,
            MonitorSettings {
                headroom: h,
                ..Default::default()
            },
        )
        .unwrap();
        let cg = m.cgroup().unwrap().clone();
        assert!(cg.dir.ends_with("robot/perception"));
        assert_eq!(cg.cpu_limit(), Some(1.0), "ancestor quota applies");
        assert_eq!(cg.memory_free(), Some(536870912));
        assert!(m.read().unwrap().is_none(), "first sample primes");
        fs::write(d.path().join("proc/stat"), STAT_B).unwrap();
        // consumer used 50 ticks of the interval: 300 total ticks over 2 cpus = 150 wall ticks
        fs::write(
            d.path().join("proc/77/stat"),
            "77 (nestdnn_node) S 1 77 77 0 -1 0 0 0 0 0 60 0 0 0 20 0 1 0 1 1 1\n",
        )
        .unwrap();
        let r = m.read().unwrap().unwrap();
        assert_eq!(r.cores_online, 2.0);
        assert!((r.busy_cores - 2.0 * 200.0 / 300.0).abs() < 1e-9);
        assert!((r.consumer_cores - 50.0 / 150.0).abs() < 1e-9);
        assert!((r.cpu_load - 200.0 / 300.0).abs() < 1e-9);
        assert_eq!(r.consumer_rss, 256 * m.page_size);
        assert_eq!(
            r.battery,
            Battery {
                percentage: 0.8,
                status: POWER_SUPPLY_STATUS_DISCHARGING
            }
        );
        let b = m.budget(&r);
        assert!(b.cpu_cores_available >= 0.0 && b.cpu_cores_available <= 1.0);
        assert_eq!(b.memory_available_bytes, 536870912 + 256 * m.page_size);
    }

    #[test]
    fn trace_yaml_and_csv() {
        let d = tempfile::tempdir().unwrap();
        let y = d.path().join("t.yaml");
        fs::write(&y, "- {t: 0, cpu_cores: 2.0, memory_mb: 512}\n- {t: 1.5, cpu_cores: 0.5, battery: 0.2, power_supply_status: 2}\n").unwrap();
        let t = Trace::load(&y).unwrap();
        assert_eq!(t.steps.len(), 2);
        assert_eq!(t.budget_at(Duration::from_secs(1)).cpu_cores_available, 2.0);
        assert_eq!(
            t.budget_at(Duration::from_secs(1)).memory_available_bytes,
            512 << 20
        );
        assert_eq!(t.budget_at(Duration::from_secs(2)).cpu_cores_available, 0.5);
        assert_eq!(
            t.next_change(Duration::from_secs(1)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(t.next_change(Duration::from_secs(2)), None);
        let l = t.clone().looped(Duration::from_millis(500));
        assert_eq!(
            l.budget_at(Duration::from_millis(2100)).cpu_cores_available,
            2.0
        );
        let c = d.path().join("t.csv");
        fs::write(
            &c,
            "# demo\nt,cpu_cores,memory_bytes,cpu_load\n0,1.0,1000,0.5\n2,nan,1000,0.5\n",
        )
        .unwrap();
        let t = Trace::load(&c).unwrap();
        assert!(t
            .budget_at(Duration::from_secs(3))
            .cpu_cores_available
            .is_nan());
        fs::write(&c, "t,cpu_cores\n1,1\n0,1\n").unwrap();
        assert!(matches!(Trace::load(&c), Err(MonitorError::Trace { .. })));
        fs::write(&c, "t,cpu_cores,bogus\n1,1,1\n").unwrap();
        assert!(Trace::load(&c).is_err());
        fs::write(&y, "[]").unwrap();
        assert!(Trace::load(&y).is_err());
    }
}
