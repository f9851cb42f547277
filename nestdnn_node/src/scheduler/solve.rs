//! Solvers: pick one descendant and a share (multiple of `share_step` cores) per running task.
//!
//! * Tasks that cannot all run (fewer share units than tasks, or the smallest descendants' memory
//!   above the budget) are paused lowest priority first (ties: the later-configured task first).
//! * `min_total_cost`, exact: dynamic programme over share units (`F_k[s] = min_u F_{k-1}[s-u] +
//!   h_k(u)`, `h_k(u) = min_d C_k(d, u)`), `O(T * U * U1)`. If the chosen descendants exceed the
//!   memory budget, a second programme keeps, per share count, the Pareto set of (cost,
//!   memory) labels (dominance also across share counts), which is exact.
//! * `min_max_cost`, exact: binary search over the finite set of cost values for the smallest
//!   threshold a plan can keep every task under (per threshold: minimal units per descendant,
//!   then a units x memory feasibility programme), then `min_total_cost` restricted to options
//!   under that threshold.
//! * Greedy `min_total_cost`: incremental hand-out of share units over each task's lower convex
//!   envelope of `h_k`; with a non-binding memory budget it is within `max_k delta_k` of the
//!   optimum, `delta_k = max_u (h_k(u) - hull_k(u))` (reported as the plan's `gap_bound`).
//! * Greedy `min_max_cost`: water-filling (give units to the currently worst task); optimal for
//!   the maximum when memory does not bind.
//! * Both greedy solvers repair a memory overrun by downgrading the descendant with the least
//!   cost increase per byte saved.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use super::cost::{expected_fps, task_cost, units_for_full_rate};
use super::{Objective, SolverChoice, TaskSpec, EXACT_LIMIT};
use crate::model::SwitchPolicy;

const INF: f64 = f64::INFINITY;
/// The exact memory-constrained programme gives up (greedy is used, and the plan says so) above
/// this many labels in one stage.
const LABEL_LIMIT: usize = 400_000;

/// Which solver produced a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverKind {
    /// The exact dynamic programme.
    Exact,
    /// The greedy incremental hand-out.
    Greedy,
    /// A fixed policy (`static`, `smallest`): nothing was optimised.
    Fixed,
}

pub(crate) struct Env {
    pub cores: f64,
    pub memory: u64,
    pub alpha: f64,
    pub step: f64,
    pub headroom: f64,
    pub policy: SwitchPolicy,
    pub solver: SolverChoice,
    pub objective: Objective,
    /// Switching to descendant d costs `switch_scale * w * build_s(d)` (0: free switches).
    pub switch_scale: f64,
}

pub(crate) struct TaskIn<'a> {
    pub spec: &'a TaskSpec,
    /// The descendant the task's slot holds now (switch cost, tie-break).
    pub current: Option<usize>,
    /// Keep this descendant (hysteresis); shares are still optimised.
    pub pinned: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    Compute,
    Memory,
}

#[derive(Debug, Clone)]
pub(crate) struct Assign {
    pub paused: Option<PauseReason>,
    pub d: usize,
    /// Enforced share in cores (units plus headroom; fixed policies: the equal split).
    pub share: f64,
    pub cost: f64,
    pub switch_cost: f64,
    pub fps: f64,
    pub mem: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub assigns: Vec<Assign>,
    pub kind: SolverKind,
    pub exact: bool,
    pub gap_bound: Option<f64>,
    pub notes: Vec<String>,
    pub total: f64,
    pub max: f64,
    /// Objective including switching costs: (primary, secondary).
    pub decision: (f64, f64),
}

struct Table {
    w: f64,
    ucap: usize,
    ufull: Vec<usize>,
    allowed: Vec<bool>,
    /// `cost[d * (ucap + 1) + u]`, switching cost included; u = 0 is unused.
    cost: Vec<f64>,
    mem: Vec<u64>,
    acc: Vec<f64>,
    current: Option<usize>,
}

impl Table {
    fn c(&self, d: usize, u: usize) -> f64 {
        self.cost[d * (self.ucap + 1) + u.min(self.ucap)]
    }

    fn nd(&self) -> usize {
        self.mem.len()
    }

    fn ds(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nd()).filter(|&d| self.allowed[d])
    }

    /// True if option `a` (cost ca) is preferred over `b` (cost cb) at equal units.
    fn prefer(&self, a: usize, ca: f64, b: usize, cb: f64) -> bool {
        if ca != cb {
            return ca < cb;
        }
        let key = |d: usize| {
            (
                self.current != Some(d),
                self.mem[d],
                std::cmp::Reverse(OrdF(self.acc[d])),
                d,
            )
        };
        key(a) < key(b)
    }

    /// `h(u)` and its argmin for u in 0..=ucap, options above `limit` excluded.
    fn curve(&self, limit: f64) -> (Vec<f64>, Vec<usize>) {
        let mut h = vec![INF; self.ucap + 1];
        let mut hd = vec![usize::MAX; self.ucap + 1];
        for u in 1..=self.ucap {
            for d in self.ds() {
                let c = self.c(d, u);
                if c > limit {
                    continue;
                }
                if hd[u] == usize::MAX || self.prefer(d, c, hd[u], h[u]) {
                    h[u] = c;
                    hd[u] = d;
                }
            }
        }
        (h, hd)
    }

    fn min_mem(&self) -> u64 {
        self.ds().map(|d| self.mem[d]).min().unwrap_or(u64::MAX)
    }
}

/// An `f64` ordered by `total_cmp`.
#[derive(Debug, Clone, Copy)]
struct OrdF(f64);
impl PartialEq for OrdF {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for OrdF {}
impl PartialOrd for OrdF {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn units_per_core(step: f64) -> usize {
    ((1.0 / step) + 1e-9).floor().max(1.0) as usize
}

fn budget_units(cores: f64, step: f64, n: usize, u1: usize) -> usize {
    let cap = n.saturating_mul(u1);
    if !(cores.is_finite() && cores > 0.0) {
        return 0;
    }
    let x = (cores / step + 1e-9).floor();
    if x >= cap as f64 {
        cap
    } else {
        x as usize
    }
}

/// Pause lowest-priority tasks until one share unit each and the smallest descendants fit.
fn pause_step(tasks: &[TaskIn<'_>], env: &Env, units: usize) -> Vec<Option<PauseReason>> {
    let mut paused = vec![None; tasks.len()];
    let mut run: Vec<usize> = (0..tasks.len()).collect();
    let min_mem = |i: usize| {
        let l = &tasks[i].spec.ladder;
        (0..l.len())
            .map(|d| l.memory_bytes(d, env.policy))
            .min()
            .unwrap_or(0)
    };
    loop {
        let mem = run
            .iter()
            .fold(0u64, |acc, &i| acc.saturating_add(min_mem(i)));
        let reason = if run.len() > units {
            PauseReason::Compute
        } else if mem > env.memory {
            PauseReason::Memory
        } else {
            break;
        };
        let Some(pos) = (0..run.len()).min_by(|&a, &b| {
            let (ia, ib) = (run[a], run[b]);
            tasks[ia]
                .spec
                .priority
                .total_cmp(&tasks[ib].spec.priority)
                .then(ib.cmp(&ia))
        }) else {
            break;
        };
        paused[run[pos]] = Some(reason);
        run.remove(pos);
    }
    paused
}

fn build_table(t: &TaskIn<'_>, env: &Env, u1: usize) -> Table {
    let spec = t.spec;
    let l = &spec.ladder;
    let nd = l.len();
    let mem: Vec<u64> = (0..nd).map(|d| l.memory_bytes(d, env.policy)).collect();
    let acc: Vec<f64> = l.rungs().iter().map(|r| r.accuracy).collect();
    let allowed: Vec<bool> = (0..nd)
        .map(|d| t.pinned.is_none_or(|p| p == d || p >= nd))
        .collect();
    let ufull: Vec<usize> = l
        .rungs()
        .iter()
        .map(|r| units_for_full_rate(r.latency_s, spec.target_fps, env.step))
        .collect();
    let ucap = (0..nd)
        .filter(|&d| allowed[d])
        .map(|d| ufull[d])
        .max()
        .unwrap_or(1)
        .clamp(1, u1);
    let amax = l.best_accuracy();
    let mut cost = vec![INF; nd * (ucap + 1)];
    for (d, r) in l.rungs().iter().enumerate() {
        let sw = if t.current.is_some_and(|c| c != d) {
            env.switch_scale * spec.priority * r.build_s
        } else {
            0.0
        };
        for u in 1..=ucap {
            cost[d * (ucap + 1) + u] = task_cost(
                spec.priority,
                env.alpha,
                spec.target_fps,
                amax,
                r.accuracy,
                r.latency_s,
                u as f64 * env.step,
            ) + sw;
        }
    }
    Table {
        w: spec.priority,
        ucap,
        ufull,
        allowed,
        cost,
        mem,
        acc,
        current: t.current,
    }
}

/// Restricts every table's descendants to those that fit next to the others' minimum memory.
/// Returns false if even the minimum does not fit.
fn restrict_memory(tables: &mut [Table], memory: u64) -> bool {
    let mins: Vec<u64> = tables.iter().map(Table::min_mem).collect();
    let total = mins.iter().fold(0u64, |a, &m| a.saturating_add(m));
    if total > memory {
        return false;
    }
    for (t, &own) in tables.iter_mut().zip(&mins) {
        let rest = total - own;
        for d in 0..t.nd() {
            if t.allowed[d] && t.mem[d].saturating_add(rest) > memory {
                t.allowed[d] = false;
            }
        }
    }
    true
}

type Choice = Vec<(usize, usize)>;

/// Per stage and units left: least remaining cost, and the (units, descendant) achieving it.
type RestTables = (Vec<Vec<f64>>, Vec<Vec<(u32, u32)>>);

fn mem_of(tables: &[Table], ch: &[(usize, usize)]) -> u64 {
    tables
        .iter()
        .zip(ch)
        .fold(0u64, |a, (t, &(d, _))| a.saturating_add(t.mem[d]))
}

/// Exact `min_total_cost` among options with cost <= `limit`. `None` if no plan exists under
/// the limit, or the memory programme grew past [`LABEL_LIMIT`].
fn exact_total(tables: &[Table], units: usize, memory: u64, limit: f64) -> Option<Choice> {
    let n = tables.len();
    let curves: Vec<(Vec<f64>, Vec<usize>)> = tables.iter().map(|t| t.curve(limit)).collect();
    let w = units + 1;
    let mut f = vec![0.0f64; w];
    let mut g = vec![INF; w];
    let mut choice = vec![0u32; n * w];
    for (k, (t, (h, _))) in tables.iter().zip(&curves).enumerate() {
        let row = &mut choice[k * w..(k + 1) * w];
        for s in 0..w {
            let mut best = INF;
            let mut arg = 0usize;
            for u in 1..=t.ucap.min(s) {
                let v = f[s - u] + h[u];
                if v < best {
                    best = v;
                    arg = u;
                }
            }
            g[s] = best;
            row[s] = arg as u32;
        }
        std::mem::swap(&mut f, &mut g);
    }
    if !f[units].is_finite() {
        return None;
    }
    let mut ch = vec![(0, 0); n];
    let mut s = units;
    for k in (0..n).rev() {
        let u = choice[k * w + s] as usize;
        ch[k] = (curves[k].1[u], u);
        s -= u;
    }
    if mem_of(tables, &ch) <= memory {
        return Some(ch);
    }
    pareto_total(tables, units, memory, limit)
}

#[derive(Debug, Clone, Copy)]
struct Label {
    cost: f64,
    mem: u64,
    prev: u32,
    u: u16,
    d: u16,
}

/// Exact `min_total_cost` with the memory constraint: per share count, Pareto sets of
/// (cost, memory) labels, task by task, pruned by [`Bounds`].
fn pareto_total(tables: &[Table], units: usize, memory: u64, limit: f64) -> Option<Choice> {
    let n = tables.len();
    let mut rest_min = vec![0u64; n + 1];
    for k in (0..n).rev() {
        rest_min[k] = rest_min[k + 1].saturating_add(tables[k].min_mem());
    }
    let opts = pareto_options(tables, limit);
    let bounds = Bounds::new(tables, units, memory, limit);
    let w = units + 1;
    let mut stages: Vec<Vec<Label>> = Vec::with_capacity(n + 1);
    let mut ranges: Vec<Vec<(u32, u32)>> = Vec::with_capacity(n + 1);
    stages.push(vec![Label {
        cost: 0.0,
        mem: 0,
        prev: 0,
        u: 0,
        d: 0,
    }]);
    let mut r0 = vec![(0u32, 0u32); w];
    r0[0] = (0, 1);
    ranges.push(r0);
    let mut buckets: Vec<Vec<Label>> = vec![Vec::new(); w];
    for k in 0..n {
        for b in buckets.iter_mut() {
            b.clear();
        }
        let next = Stage {
            k,
            table: &tables[k],
            options: &opts[k],
            units,
            memory,
            reserve: n - k - 1,
            rest_min: rest_min[k + 1],
        };
        next.extend(&stages[k], &ranges[k], &bounds, &mut buckets);
        let (stage, rg) = prune(&mut buckets);
        if stage.len() > LABEL_LIMIT {
            return None;
        }
        stages.push(stage);
        ranges.push(rg);
    }
    trace_back(&stages)
}

/// Per task and share count: the descendants worth trying, a Pareto set over (memory, cost)
/// (a descendant is kept only if it is cheaper than every one using less memory).
fn pareto_options(tables: &[Table], limit: f64) -> Vec<Vec<Vec<usize>>> {
    tables
        .iter()
        .map(|t| {
            (0..=t.ucap)
                .map(|u| {
                    if u == 0 {
                        return Vec::new();
                    }
                    let mut ds: Vec<usize> = t
                        .ds()
                        .filter(|&d| u <= t.ufull[d] || u == 1)
                        .filter(|&d| t.c(d, u) <= limit)
                        .collect();
                    ds.sort_by(|&a, &b| {
                        t.mem[a]
                            .cmp(&t.mem[b])
                            .then(t.c(a, u).total_cmp(&t.c(b, u)))
                    });
                    let mut keep = Vec::new();
                    let mut best = INF;
                    for d in ds {
                        let c = t.c(d, u);
                        if c < best {
                            best = c;
                            keep.push(d);
                        }
                    }
                    keep
                })
                .collect()
        })
        .collect()
}

/// Branch-and-bound bounds of [`pareto_total`] (exactness kept): an upper bound from the
/// greedy solver repaired to fit memory (and the memory-priced optimum), and per stage a lower
/// bound on the remaining tasks' cost for the units left. A label whose cost plus that bound
/// exceeds the upper bound cannot lead to an optimum.
struct Bounds {
    /// Remaining tasks' least cost for r units with memory relaxed.
    rest0: Vec<Vec<f64>>,
    /// The same with memory priced at `lambda` (a Lagrangian bound: cost >= rest_l - lambda *
    /// memory left), when the repair found a price.
    rest_l: Option<Vec<Vec<f64>>>,
    lambda: f64,
    memory: u64,
    /// The upper bound (with a relative slack for rounding).
    ub: f64,
}

impl Bounds {
    fn new(tables: &[Table], units: usize, memory: u64, limit: f64) -> Self {
        let n = tables.len();
        let cost_of = |ch: &[(usize, usize)]| -> f64 {
            let within = ch.iter().zip(tables).all(|(&(d, u), t)| t.c(d, u) <= limit);
            if within && mem_of(tables, ch) <= memory {
                ch.iter().zip(tables).map(|(&(d, u), t)| t.c(d, u)).sum()
            } else {
                INF
            }
        };
        let (mut greedy, _) = greedy_total(tables, units);
        let lambda = repair_memory(tables, &mut greedy, memory)
            .unwrap_or(0.0)
            .max(0.0);
        let mut ub = cost_of(&greedy);
        let (rest0, _) = rest_tables(tables, units, limit, 0.0);
        let rest_l = if lambda > 0.0 {
            let (rl, arg) = rest_tables(tables, units, limit, lambda);
            // The priced optimum is a candidate plan too.
            let mut ch = Vec::with_capacity(n);
            let mut r = units;
            for a in arg.iter().take(n) {
                let (u, d) = a[r];
                if u == 0 {
                    break;
                }
                ch.push((d as usize, u as usize));
                r -= u as usize;
            }
            if ch.len() == n {
                ub = ub.min(cost_of(&ch));
            }
            Some(rl)
        } else {
            None
        };
        Bounds {
            rest0,
            rest_l,
            lambda,
            memory,
            ub: ub + ub.abs() * 1e-12 + 1e-12,
        }
    }

    /// A lower bound on the cost of tasks `k..` with `r` units left and `m` bytes used.
    fn bound(&self, k: usize, r: usize, m: u64) -> f64 {
        let b0 = self.rest0[k][r];
        match &self.rest_l {
            Some(rl) => b0.max(rl[k][r] - self.lambda * self.memory.saturating_sub(m) as f64),
            None => b0,
        }
    }
}

/// Remaining tasks' least cost for r units, memory priced at `lam` per byte, and the
/// (units, descendant) of task k that achieves it.
fn rest_tables(tables: &[Table], units: usize, limit: f64, lam: f64) -> RestTables {
    let n = tables.len();
    let w = units + 1;
    let mut rest = vec![vec![0.0f64; w]; n + 1];
    let mut arg = vec![vec![(0u32, 0u32); w]; n];
    for k in (0..n).rev() {
        let t = &tables[k];
        let mut h = vec![INF; t.ucap + 1];
        let mut hd = vec![0usize; t.ucap + 1];
        for (u, (hu, hdu)) in h.iter_mut().zip(hd.iter_mut()).enumerate().skip(1) {
            for d in t.ds() {
                let c = t.c(d, u);
                let priced = c + lam * (t.mem[d] as f64);
                if c <= limit && priced < *hu {
                    *hu = priced;
                    *hdu = d;
                }
            }
        }
        let (next, cur) = {
            let (a, b) = rest.split_at_mut(k + 1);
            (&b[0], &mut a[k])
        };
        for r in 0..w {
            let mut best = INF;
            for u in 1..=t.ucap.min(r) {
                let v = next[r - u] + h[u];
                if v < best {
                    best = v;
                    arg[k][r] = (u as u32, hd[u] as u32);
                }
            }
            cur[r] = best;
        }
    }
    (rest, arg)
}

/// Task `k`'s stage of [`pareto_total`].
struct Stage<'a> {
    k: usize,
    table: &'a Table,
    /// [`pareto_options`] of this task.
    options: &'a [Vec<usize>],
    units: usize,
    memory: u64,
    /// Units the later tasks need at least (one each).
    reserve: usize,
    /// Memory the later tasks need at least.
    rest_min: u64,
}

impl Stage<'_> {
    /// Every label of the previous stage extended by each (units, descendant) of this task,
    /// into `buckets` by total units; labels over memory or the bound are not kept.
    fn extend(
        &self,
        prev: &[Label],
        ranges: &[(u32, u32)],
        bounds: &Bounds,
        buckets: &mut [Vec<Label>],
    ) {
        let t = self.table;
        for (s_prev, &(a, b)) in ranges.iter().enumerate() {
            let umax = t.ucap.min(self.units.saturating_sub(s_prev + self.reserve));
            for idx in a..b {
                let lab = prev[idx as usize];
                for u in 1..=umax {
                    for &d in &self.options[u] {
                        let m = lab.mem.saturating_add(t.mem[d]);
                        if m.saturating_add(self.rest_min) > self.memory {
                            continue;
                        }
                        let c = lab.cost + t.c(d, u);
                        if c + bounds.bound(self.k + 1, self.units - s_prev - u, m) > bounds.ub {
                            continue;
                        }
                        buckets[s_prev + u].push(Label {
                            cost: c,
                            mem: m,
                            prev: idx,
                            u: u as u16,
                            d: d as u16,
                        });
                    }
                }
            }
        }
    }
}

/// Keeps the Pareto labels of a stage, within each share count and against all smaller share
/// counts; returns them and each share count's index range.
fn prune(buckets: &mut [Vec<Label>]) -> (Vec<Label>, Vec<(u32, u32)>) {
    let mut front: Vec<(u64, f64)> = Vec::new();
    let mut stage = Vec::new();
    let mut rg = vec![(0u32, 0u32); buckets.len()];
    for (s, bucket) in buckets.iter_mut().enumerate() {
        bucket.sort_by(|a, b| a.mem.cmp(&b.mem).then(a.cost.total_cmp(&b.cost)));
        let start = stage.len() as u32;
        let mut best = INF;
        let mut kept: Vec<(u64, f64)> = Vec::new();
        for lab in bucket.iter() {
            if lab.cost >= best {
                continue;
            }
            best = lab.cost;
            // Dominated by a label with fewer units?
            let i = front.partition_point(|&(m, _)| m <= lab.mem);
            if i > 0 && front[i - 1].1 <= lab.cost {
                continue;
            }
            stage.push(*lab);
            kept.push((lab.mem, lab.cost));
        }
        rg[s] = (start, stage.len() as u32);
        if !kept.is_empty() {
            front = merge_front(&front, &kept);
        }
    }
    (stage, rg)
}

/// The cheapest label of the last stage, traced back to each task's (descendant, units).
fn trace_back(stages: &[Vec<Label>]) -> Option<Choice> {
    let n = stages.len() - 1;
    let last = &stages[n];
    let mut best: Option<usize> = None;
    for (i, lab) in last.iter().enumerate() {
        if best.is_none_or(|b| lab.cost < last[b].cost) {
            best = Some(i);
        }
    }
    let mut idx = best?;
    if !last[idx].cost.is_finite() {
        return None;
    }
    let mut ch = vec![(0, 0); n];
    for k in (0..n).rev() {
        let lab = stages[k + 1][idx];
        ch[k] = (lab.d as usize, lab.u as usize);
        idx = lab.prev as usize;
    }
    Some(ch)
}

fn merge_front(a: &[(u64, f64)], b: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut all: Vec<(u64, f64)> = a.iter().chain(b).copied().collect();
    all.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(all.len());
    for p in all {
        if out.last().is_none_or(|l| p.1 < l.1) {
            out.push(p);
        }
    }
    out
}

/// Smallest units with cost <= theta for descendant d, if any.
fn umin(t: &Table, d: usize, theta: f64) -> Option<usize> {
    if t.c(d, t.ucap) > theta {
        return None;
    }
    let (mut lo, mut hi) = (1usize, t.ucap);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if t.c(d, mid) <= theta {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

fn minmax_feasible(
    tables: &[Table],
    units: usize,
    memory: u64,
    mem_slack: bool,
    theta: f64,
) -> bool {
    if mem_slack {
        let mut total = 0usize;
        for t in tables {
            match t.ds().filter_map(|d| umin(t, d, theta)).min() {
                Some(u) => total += u,
                None => return false,
            }
        }
        return total <= units;
    }
    let w = units + 1;
    let mut f = vec![0u64; w];
    let mut g = vec![u64::MAX; w];
    for t in tables {
        let opts: Vec<(usize, u64)> = t
            .ds()
            .filter_map(|d| umin(t, d, theta).map(|u| (u, t.mem[d])))
            .collect();
        if opts.is_empty() {
            return false;
        }
        for s in 0..w {
            let mut best = u64::MAX;
            for &(u, m) in &opts {
                if u <= s && f[s - u] != u64::MAX {
                    best = best.min(f[s - u].saturating_add(m));
                }
            }
            g[s] = best;
        }
        std::mem::swap(&mut f, &mut g);
    }
    f[units] <= memory
}

fn exact_minmax(tables: &[Table], units: usize, memory: u64) -> Option<Choice> {
    let lo = tables
        .iter()
        .map(|t| t.ds().map(|d| t.c(d, t.ucap)).fold(INF, f64::min))
        .fold(0.0, f64::max);
    let mut cands: Vec<f64> = Vec::new();
    for t in tables {
        for d in t.ds() {
            for u in 1..=t.ucap.min(t.ufull[d]) {
                let c = t.c(d, u);
                if c >= lo {
                    cands.push(c);
                }
            }
        }
    }
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    let mem_slack = tables
        .iter()
        .map(|t| t.ds().map(|d| t.mem[d]).max().unwrap_or(0))
        .fold(0u64, u64::saturating_add)
        <= memory;
    let (mut a, mut b) = (0usize, cands.len());
    // Invariant: every candidate below `a` is infeasible; `b` is feasible or past the end.
    while a < b {
        let mid = (a + b) / 2;
        if minmax_feasible(tables, units, memory, mem_slack, cands[mid]) {
            b = mid;
        } else {
            a = mid + 1;
        }
    }
    let theta = *cands.get(a)?;
    let limit = theta + 1e-12 * theta.abs().max(1.0);
    exact_total(tables, units, memory, limit)
}

/// Lower convex envelope of `(u, h[u])`, u = 1..=ucap, as vertex indices.
fn lower_hull(h: &[f64]) -> Vec<usize> {
    let mut hull: Vec<usize> = Vec::new();
    for u in 1..h.len() {
        while hull.len() >= 2 {
            let o = hull[hull.len() - 2];
            let a = hull[hull.len() - 1];
            let cross = (a - o) as f64 * (h[u] - h[o]) - (h[a] - h[o]) * (u - o) as f64;
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(u);
    }
    hull
}

fn hull_gap(h: &[f64], hull: &[usize]) -> f64 {
    let mut gap: f64 = 0.0;
    for win in hull.windows(2) {
        let (a, b) = (win[0], win[1]);
        for u in a..=b {
            let y = h[a] + (h[b] - h[a]) * (u - a) as f64 / (b - a) as f64;
            gap = gap.max(h[u] - y);
        }
    }
    gap
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Seg {
    /// Negated slope (cost decrease per unit), larger first.
    gain: OrdF,
    task: std::cmp::Reverse<usize>,
    seg: usize,
}

/// Greedy `min_total_cost`. Returns the choice and `max_k delta_k`.
fn greedy_total(tables: &[Table], units: usize) -> (Choice, f64) {
    let curves: Vec<(Vec<f64>, Vec<usize>)> = tables.iter().map(|t| t.curve(INF)).collect();
    let hulls: Vec<Vec<usize>> = curves.iter().map(|(h, _)| lower_hull(h)).collect();
    let gap = curves
        .iter()
        .zip(&hulls)
        .map(|((h, _), hull)| hull_gap(h, hull))
        .fold(0.0, f64::max);
    let mut u: Vec<usize> = vec![1; tables.len()];
    let mut left = units.saturating_sub(tables.len());
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Seg>, k: usize, seg: usize| {
        let hull = &hulls[k];
        if seg + 1 < hull.len() {
            let (a, b) = (hull[seg], hull[seg + 1]);
            let h = &curves[k].0;
            let gain = (h[a] - h[b]) / (b - a) as f64;
            if gain > 0.0 {
                heap.push(Seg {
                    gain: OrdF(gain),
                    task: std::cmp::Reverse(k),
                    seg,
                });
            }
        }
    };
    for k in 0..tables.len() {
        push(&mut heap, k, 0);
    }
    while let Some(Seg { task, seg, .. }) = heap.pop() {
        let k = task.0;
        let (a, b) = (hulls[k][seg], hulls[k][seg + 1]);
        let len = b - a;
        if len <= left {
            u[k] = b;
            left -= len;
            push(&mut heap, k, seg + 1);
        } else {
            u[k] = a + left;
            break;
        }
    }
    let ch = u
        .iter()
        .zip(&curves)
        .map(|(&u, (_, hd))| (hd[u], u))
        .collect();
    (ch, gap)
}

fn next_drops(h: &[f64]) -> Vec<Option<usize>> {
    let n = h.len();
    let mut nd = vec![None; n];
    for u in (1..n.saturating_sub(1)).rev() {
        nd[u] = if h[u + 1] < h[u] {
            Some(u + 1)
        } else {
            nd[u + 1]
        };
    }
    nd
}

/// Greedy `min_max_cost`: water-filling, then leftovers by best gain per unit.
fn greedy_minmax(tables: &[Table], units: usize) -> Choice {
    let curves: Vec<(Vec<f64>, Vec<usize>)> = tables.iter().map(|t| t.curve(INF)).collect();
    let drops: Vec<Vec<Option<usize>>> = curves.iter().map(|(h, _)| next_drops(h)).collect();
    let n = tables.len();
    let mut u = vec![1usize; n];
    let mut left = units.saturating_sub(n);
    while let Some(k) = (0..n).max_by(|&a, &b| {
        curves[a].0[u[a]]
            .total_cmp(&curves[b].0[u[b]])
            .then(b.cmp(&a))
    }) {
        match drops[k][u[k]] {
            Some(nx) if nx - u[k] <= left => {
                left -= nx - u[k];
                u[k] = nx;
            }
            _ => break,
        }
    }
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for k in 0..n {
            if let Some(nx) = drops[k][u[k]] {
                let need = nx - u[k];
                if need <= left {
                    let h = &curves[k].0;
                    let gain = (h[u[k]] - h[nx]) / need as f64;
                    if best.is_none_or(|(g, _, _)| gain > g) {
                        best = Some((gain, k, nx));
                    }
                }
            }
        }
        let Some((_, k, nx)) = best else { break };
        left -= nx - u[k];
        u[k] = nx;
    }
    u.iter()
        .zip(&curves)
        .map(|(&u, (_, hd))| (hd[u], u))
        .collect()
}

/// Downgrades descendants (least cost increase per byte saved) until memory fits. Returns
/// the largest cost-per-byte ratio applied (`None`: nothing was downgraded), an estimate of
/// the memory constraint's Lagrange multiplier.
fn repair_memory(tables: &[Table], ch: &mut [(usize, usize)], memory: u64) -> Option<f64> {
    let mut worst: Option<f64> = None;
    loop {
        let used = mem_of(tables, ch);
        if used <= memory {
            return worst;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (k, t) in tables.iter().enumerate() {
            let (d, u) = ch[k];
            for d2 in t.ds() {
                if t.mem[d2] >= t.mem[d] {
                    continue;
                }
                let ratio = (t.c(d2, u) - t.c(d, u)) / (t.mem[d] - t.mem[d2]) as f64;
                if best.is_none_or(|(r, _, _)| ratio < r) {
                    best = Some((ratio, k, d2));
                }
            }
        }
        let Some((ratio, k, d2)) = best else {
            return worst;
        };
        ch[k].0 = d2;
        worst = Some(worst.map_or(ratio, |w| w.max(ratio)));
    }
}

/// The cost of running task `spec` on descendant `d` with `share` cores.
fn rung_cost(spec: &TaskSpec, env: &Env, d: usize, share: f64) -> f64 {
    let l = &spec.ladder;
    let r = &l.rungs()[d];
    task_cost(
        spec.priority,
        env.alpha,
        spec.target_fps,
        l.best_accuracy(),
        r.accuracy,
        r.latency_s,
        share,
    )
}

fn fixed_policy(tasks: &[TaskIn<'_>], env: &Env) -> Outcome {
    let n = tasks.len();
    let share = if n == 0 {
        0.0
    } else {
        (env.cores.max(0.0) / n as f64).min(1.0)
    };
    let mut notes = Vec::new();
    let assigns: Vec<Assign> = tasks
        .iter()
        .map(|t| {
            let l = &t.spec.ladder;
            let d = if env.objective == Objective::Smallest {
                0
            } else {
                l.largest()
            };
            let r = &l.rungs()[d];
            Assign {
                paused: None,
                d,
                share,
                cost: rung_cost(t.spec, env, d, share),
                switch_cost: 0.0,
                fps: expected_fps(t.spec.target_fps, r.latency_s, share),
                mem: l.memory_bytes(d, env.policy),
            }
        })
        .collect();
    let mem = assigns.iter().fold(0u64, |a, x| a.saturating_add(x.mem));
    if mem > env.memory {
        notes.push(format!(
            "the {} plan needs {:.1} MB, above the memory budget of {:.1} MB ({} does not adapt)",
            env.objective,
            mb(mem),
            mb(env.memory),
            env.objective
        ));
    }
    finish(assigns, SolverKind::Fixed, true, None, notes)
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn finish(
    assigns: Vec<Assign>,
    kind: SolverKind,
    exact: bool,
    gap_bound: Option<f64>,
    notes: Vec<String>,
) -> Outcome {
    let running = assigns.iter().filter(|a| a.paused.is_none());
    let (mut total, mut max, mut dtotal, mut dmax) = (0.0, 0.0f64, 0.0, 0.0f64);
    for a in running {
        total += a.cost;
        max = max.max(a.cost);
        dtotal += a.cost + a.switch_cost;
        dmax = dmax.max(a.cost + a.switch_cost);
    }
    Outcome {
        decision: match kind {
            _ if dmax.is_nan() => (INF, INF),
            _ => (dtotal, dmax),
        },
        assigns,
        kind,
        exact,
        gap_bound,
        notes,
        total,
        max,
    }
}

/// Solves one planning problem for the running tasks `tasks` (paused tasks come back with
/// `paused` set). `None` only when pinned descendants cannot fit the memory budget.
pub(crate) fn solve(tasks: &[TaskIn<'_>], env: &Env) -> Option<Outcome> {
    if env.objective.is_fixed() {
        return Some(fixed_policy(tasks, env));
    }
    let n = tasks.len();
    let u1 = units_per_core(env.step);
    let units = budget_units(env.cores, env.step, n, u1);
    let paused = pause_step(tasks, env, units);
    let run: Vec<usize> = (0..n).filter(|&i| paused[i].is_none()).collect();
    let mut tables: Vec<Table> = run
        .iter()
        .map(|&i| build_table(&tasks[i], env, u1))
        .collect();
    if !restrict_memory(&mut tables, env.memory) {
        return None;
    }
    let mut notes = Vec::new();
    let maxd = tables.iter().map(Table::nd).max().unwrap_or(0);
    let want_exact = match env.solver {
        SolverChoice::Exact => true,
        SolverChoice::Greedy => false,
        SolverChoice::Auto => run.len().saturating_mul(maxd).saturating_mul(u1) <= EXACT_LIMIT,
    };
    let mut kind = SolverKind::Greedy;
    let mut exact = false;
    let mut gap_bound = None;
    let mut choice: Option<Choice> = None;
    if tables.is_empty() {
        choice = Some(Vec::new());
        if want_exact {
            kind = SolverKind::Exact;
        }
        exact = true;
        gap_bound = Some(0.0);
    } else if want_exact {
        choice = match env.objective {
            Objective::MinMaxCost => exact_minmax(&tables, units, env.memory),
            _ => exact_total(&tables, units, env.memory, INF),
        };
        if choice.is_some() {
            kind = SolverKind::Exact;
            exact = true;
            gap_bound = Some(0.0);
        } else {
            notes.push(
                "the exact solver gave up on this memory-constrained instance; greedy used"
                    .to_string(),
            );
        }
    }
    let mut memory_repaired = false;
    let choice = match choice {
        Some(c) => c,
        None => {
            let (mut c, bound) = match env.objective {
                Objective::MinMaxCost => (greedy_minmax(&tables, units), 0.0),
                _ => greedy_total(&tables, units),
            };
            memory_repaired = repair_memory(&tables, &mut c, env.memory).is_some();
            if !memory_repaired {
                gap_bound = Some(bound);
            }
            c
        }
    };

    // Headroom for tasks that reach their target.
    let used: usize = choice.iter().map(|&(_, u)| u).sum();
    let mut left = units.saturating_sub(used);
    let mut extra = vec![0usize; choice.len()];
    let mut order: Vec<usize> = (0..choice.len()).collect();
    order.sort_by(|&a, &b| tables[b].w.total_cmp(&tables[a].w).then(a.cmp(&b)));
    for k in order {
        let (d, u) = choice[k];
        if u >= tables[k].ufull[d] {
            let want = ((u as f64 * env.headroom).ceil() as usize)
                .min(u1.saturating_sub(u))
                .min(left);
            extra[k] = want;
            left -= want;
        }
    }

    let mut assigns: Vec<Assign> = Vec::with_capacity(n);
    let mut slot = 0usize;
    for (i, t) in tasks.iter().enumerate() {
        let l = &t.spec.ladder;
        if let Some(reason) = paused[i] {
            let d = t.current.filter(|&c| c < l.len()).unwrap_or(0);
            assigns.push(Assign {
                paused: Some(reason),
                d,
                share: 0.0,
                cost: INF,
                switch_cost: 0.0,
                fps: 0.0,
                mem: 0,
            });
            continue;
        }
        let (d, u) = choice[slot];
        let tb = &tables[slot];
        let r = &l.rungs()[d];
        let share = u as f64 * env.step;
        let cost = rung_cost(t.spec, env, d, share);
        let switch_cost = tb.c(d, u) - cost;
        assigns.push(Assign {
            paused: None,
            d,
            share: (u + extra[slot]) as f64 * env.step,
            cost,
            switch_cost: if switch_cost > 1e-12 {
                switch_cost
            } else {
                0.0
            },
            fps: expected_fps(t.spec.target_fps, r.latency_s, share),
            mem: tb.mem[d],
        });
        slot += 1;
    }
    if memory_repaired {
        notes.push("the memory budget forced smaller descendants".to_string());
    }
    Some(finish(assigns, kind, exact, gap_bound, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_convex_curve_is_every_point() {
        let h = [INF, 10.0, 6.0, 3.0, 1.0, 0.0];
        assert_eq!(lower_hull(&h), vec![1, 2, 3, 4, 5]);
        assert_eq!(hull_gap(&h, &lower_hull(&h)), 0.0);
    }

    #[test]
    fn hull_skips_a_bump_and_measures_it() {
        // Flat then a drop: the envelope goes straight from 1 to 4.
        let h = [INF, 4.0, 4.0, 4.0, 1.0];
        let hull = lower_hull(&h);
        assert_eq!(hull, vec![1, 4]);
        // At u = 3 the line is at 2, the curve at 4.
        assert!((hull_gap(&h, &hull) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn next_drop_skips_plateaus() {
        let h = [INF, 5.0, 5.0, 3.0, 3.0, 3.0];
        let nd = next_drops(&h);
        assert_eq!(nd[1], Some(3));
        assert_eq!(nd[2], Some(3));
        assert_eq!(nd[3], None);
    }

    #[test]
    fn budget_units_cap_and_zero() {
        assert_eq!(budget_units(1.0, 0.01, 4, 100), 100);
        assert_eq!(budget_units(10.0, 0.01, 4, 100), 400);
        assert_eq!(budget_units(0.0, 0.01, 4, 100), 0);
        assert_eq!(budget_units(f64::NAN, 0.01, 4, 100), 0);
        assert_eq!(budget_units(0.3, 0.1, 4, 10), 3);
    }
}
