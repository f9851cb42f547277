//! ROS 2 parameter files: node sections, wildcards, nested maps as dotted names, overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use super::ConfigError;
use crate::rosargs::{NameContext, RosArgs};

/// A node's fully qualified name: namespace and base name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    /// Namespace, `/` or `/a/b` (no trailing slash).
    pub namespace: String,
    /// Base name, e.g. `nestdnn_node`.
    pub name: String,
}

impl Default for NodeName {
    fn default() -> Self {
        NodeName {
            namespace: "/".to_string(),
            name: "nestdnn_node".to_string(),
        }
    }
}

impl NodeName {
    /// A node `name` in namespace `namespace` (`""` or `/` for the root; a missing leading `/`
    /// is added).
    pub fn new(namespace: &str, name: &str) -> Self {
        let ns = namespace.trim_end_matches('/');
        let namespace = if ns.is_empty() {
            "/".to_string()
        } else if ns.starts_with('/') {
            ns.to_string()
        } else {
            format!("/{ns}")
        };
        NodeName {
            namespace,
            name: name.to_string(),
        }
    }

    /// Parses `/ns/name` (or `name` for the root namespace).
    pub fn parse(fqn: &str) -> Self {
        match fqn.rsplit_once('/') {
            Some((ns, name)) => NodeName::new(ns, name),
            None => NodeName::new("/", fqn),
        }
    }

    /// `/ns/name`.
    pub fn fully_qualified(&self) -> String {
        if self.namespace == "/" {
            format!("/{}", self.name)
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    fn segments(&self) -> Vec<String> {
        self.fully_qualified()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// How a node section key matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The key names this node (fully qualified, or its base name).
    Specific,
    /// A wildcard key (`/**`, `/ns/*`, ...).
    Wildcard,
}

fn glob(pat: &[&str], name: &[String]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((&"**", rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((p, rest)) => match name.split_first() {
            Some((n, nrest)) => (*p == "*" || p == n) && glob(rest, nrest),
            None => false,
        },
    }
}

/// Whether the section key `key` applies to `node`. A key without any `/` matches the node's
/// base name in any namespace (more lenient than rcl, which reads it as `/key`).
pub fn section_matches(key: &str, node: &NodeName) -> Option<Match> {
    if !key.contains('/') {
        return (key == node.name).then_some(Match::Specific);
    }
    let pat: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    if !glob(&pat, &node.segments()) {
        return None;
    }
    if pat.iter().any(|p| *p == "*" || *p == "**") {
        Some(Match::Wildcard)
    } else {
        Some(Match::Specific)
    }
}

/// Where a parameter value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A section naming this node.
    Section(String),
    /// A wildcard section: keys this node does not know are ignored (with a warning).
    Wildcard(String),
    /// A `-p key:=value` override.
    Override,
}

/// A flat set of parameters (`a.b.c` names) for one node, with where each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, (Value, Origin)>,
    file: Option<PathBuf>,
}

fn flatten(
    prefix: &str,
    v: &Value,
    out: &mut Vec<(String, Value)>,
    file: &str,
) -> Result<(), ConfigError> {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = match k {
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(ConfigError::Structure {
                            file: file.to_string(),
                            what: format!(
                                "parameter names must be strings, found {} under {prefix:?}",
                                describe(other)
                            ),
                        })
                    }
                };
                let name = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out, file)?;
            }
            Ok(())
        }
        Value::Tagged(t) => flatten(prefix, &t.value, out, file),
        Value::Sequence(s) => {
            if s.iter()
                .any(|x| matches!(x, Value::Mapping(_) | Value::Sequence(_)))
            {
                return Err(ConfigError::Structure {
                    file: file.to_string(),
                    what: format!(
                        "parameter {prefix:?}: lists may only hold plain values (ROS parameters cannot hold lists of maps or lists)"
                    ),
                });
            }
            out.push((prefix.to_string(), v.clone()));
            Ok(())
        }
        _ => {
            out.push((prefix.to_string(), v.clone()));
            Ok(())
        }
    }
}

/// A short description of a YAML value's type and content for error messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(s) => format!("a list of {} items", s.len()),
        Value::Mapping(_) => "a map".to_string(),
        Value::Tagged(t) => format!("tagged value {}", t.tag),
    }
}

impl Params {
    /// Reads a params file and collects the sections that apply to `node`, in file order
    /// (later sections override earlier ones).
    ///
    /// # Errors
    /// [`ConfigError::Io`], [`ConfigError::Yaml`], [`ConfigError::Structure`],
    /// [`ConfigError::NoSection`] if no section applies to the node.
    pub fn from_file(path: &Path, node: &NodeName) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut p = Self::from_yaml_str(&text, node, &path.display().to_string())?;
        p.file = Some(path.to_path_buf());
        Ok(p)
    }

    /// As [`Params::from_file`] for YAML text; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`Params::from_file`] without the I/O error.
    pub fn from_yaml_str(text: &str, node: &NodeName, origin: &str) -> Result<Self, ConfigError> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            file: origin.to_string(),
            source: e,
        })?;
        let Value::Mapping(top) = doc else {
            return Err(ConfigError::Structure {
                file: origin.to_string(),
                what: format!(
                    "the top level must be a map of node names (e.g. `nestdnn_node:` or `/**:`), found {}",
                    describe(&doc)
                ),
            });
        };
        let mut values = BTreeMap::new();
        let mut found = Vec::new();
        let mut any = false;
        for (k, section) in &top {
            let Value::String(key) = k else {
                return Err(ConfigError::Structure {
                    file: origin.to_string(),
                    what: format!("node names must be strings, found {}", describe(k)),
                });
            };
            found.push(key.clone());
            let Some(m) = section_matches(key, node) else {
                continue;
            };
            let params = match section {
                Value::Mapping(s) => {
                    for sk in s.keys() {
                        if sk.as_str() != Some("ros__parameters") {
                            return Err(ConfigError::Structure {
                                file: origin.to_string(),
                                what: format!(
                                    "section {key:?}: only `ros__parameters` may appear under a node name, found {}",
                                    describe(sk)
                                ),
                            });
                        }
                    }
                    s.get("ros__parameters")
                }
                _ => None,
            };
            let Some(params) = params else {
                return Err(ConfigError::Structure {
                    file: origin.to_string(),
                    what: format!("section {key:?} must be a map with a `ros__parameters` map"),
                });
            };
            if !matches!(params, Value::Mapping(_)) {
                return Err(ConfigError::Structure {
                    file: origin.to_string(),
                    what: format!(
                        "{key}.ros__parameters must be a map, found {}",
                        describe(params)
                    ),
                });
            }
            let mut flat = Vec::new();
            flatten("", params, &mut flat, origin)?;
            let o = match m {
                Match::Specific => Origin::Section(key.clone()),
                Match::Wildcard => Origin::Wildcard(key.clone()),
            };
            for (name, v) in flat {
                values.insert(name, (v, o.clone()));
            }
            any = true;
        }
        if !any {
            return Err(ConfigError::NoSection {
                file: origin.to_string(),
                node: node.fully_qualified(),
                found,
            });
        }
        Ok(Params { values, file: None })
    }

    /// An empty set (every parameter at its default; `tasks` must then be set by overrides).
    pub fn empty() -> Self {
        Params::default()
    }

    /// The params file these came from, if any (relative model paths resolve against it).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Sets the params file used for resolving relative paths.
    pub fn set_file(&mut self, file: Option<PathBuf>) {
        self.file = file;
    }

    /// Applies a `-p key:=value` override (value already parsed as YAML, as ROS does).
    /// A map value sets each nested key (`-p scheduler:="{alpha: 0.2}"`).
    ///
    /// # Errors
    /// [`ConfigError::BadOverride`] for an empty or malformed key, or a list of maps.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), ConfigError> {
        let ok = !key.is_empty()
            && key
                .split('.')
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !ok {
            return Err(ConfigError::BadOverride {
                arg: format!("{key}:={value:?}"),
                what: "parameter names are dot-separated words of letters, digits and `_`"
                    .to_string(),
            });
        }
        let mut flat = Vec::new();
        flatten(key, &value, &mut flat, "-p override").map_err(|e| ConfigError::BadOverride {
            arg: key.to_string(),
            what: e.to_string(),
        })?;
        for (k, v) in flat {
            self.values.insert(k, (v, Origin::Override));
        }
        Ok(())
    }

    /// Applies overrides in order: `(key, value)` pairs as the ROS argument parser produces
    /// them.
    ///
    /// # Errors
    /// As [`Params::set`].
    pub fn apply_overrides<I>(&mut self, overrides: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, Value)>,
    {
        for (k, v) in overrides {
            self.set(&k, v)?;
        }
        Ok(())
    }

    /// Parses `text` as a YAML value the way `-p key:=text` does (`3` is an integer, `3.0` a
    /// double, `true` a bool, `[a, b]` a list, anything else a string) and sets it.
    ///
    /// # Errors
    /// As [`Params::set`].
    pub fn set_from_str(&mut self, key: &str, text: &str) -> Result<(), ConfigError> {
        let v =
            serde_yaml::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()));
        let v = if v.is_null()
            && !text.trim().is_empty()
            && text.trim() != "null"
            && text.trim() != "~"
        {
            Value::String(text.to_string())
        } else {
            v
        };
        self.set(key, v)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).map(|(v, _)| v)
    }

    /// Every `(key, value, origin)`, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value, &Origin)> {
        self.values.iter().map(|(k, (v, o))| (k.as_str(), v, o))
    }
}

impl From<&NameContext> for NodeName {
    fn from(n: &NameContext) -> Self {
        NodeName::new(&n.namespace, &n.node)
    }
}

impl Params {
    /// The parameters of `node` from its ROS command line, the way rcl reads them: every
    /// `--params-file` in order (the sections that apply to the node; later files override
    /// earlier ones), then the `-p` overrides meant for this node. Relative paths resolve
    /// against the first file with a section for the node. Every binary and bag replay read
    /// their parameters through this.
    ///
    /// # Errors
    /// As [`Params::from_file`] for each file, except that a file without a section for the
    /// node is skipped (launch adds such files); [`ConfigError::NoSection`] only when no file
    /// has one. [`ConfigError::BadOverride`] for a malformed `-p`.
    pub fn from_ros_args(args: &RosArgs, node: &NodeName) -> Result<Self, ConfigError> {
        let mut out = Params::empty();
        let mut first_miss = None;
        for file in &args.params_files {
            match Params::from_file(file, node) {
                Ok(p) => {
                    if out.file.is_none() {
                        out.file = p.file.clone();
                    }
                    out.values.extend(p.values);
                }
                Err(e @ ConfigError::NoSection { .. }) => {
                    first_miss.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if out.file.is_none() {
            if let Some(e) = first_miss {
                return Err(e);
            }
        }
        for (name, text) in args.params_for(&node.name) {
            out.set_from_str(name, text)?;
        }
        Ok(out)
    }
}

pub(crate) fn type_err(key: &str, expected: &'static str, v: &Value) -> ConfigError {
    ConfigError::Type {
        key: key.to_string(),
        expected,
        found: describe(v),
    }
}

pub(crate) fn range(key: &str, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
    ConfigError::Range {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

impl Params {
    /// A duration in seconds in [0, 3600]; 0 means off (`None`).
    ///
    /// # Errors
    /// As [`Params::f64`].
    pub fn period(
        &self,
        key: &str,
        default: Option<Duration>,
    ) -> Result<Option<Duration>, ConfigError> {
        let x = self.f64(
            key,
            default.map_or(0.0, |t| t.as_secs_f64()),
            0.0,
            3600.0,
            false,
        )?;
        Ok((x > 0.0).then(|| Duration::from_secs_f64(x)))
    }

    /// A number in `[lo, hi]` (`(lo, hi]` with `lo_open`); `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`], [`ConfigError::Range`].
    pub fn f64(
        &self,
        key: &str,
        default: f64,
        lo: f64,
        hi: f64,
        lo_open: bool,
    ) -> Result<f64, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let x = match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| type_err(key, "a number", v))?,
            _ => return Err(type_err(key, "a number", v)),
        };
        let ok = x.is_finite() && (if lo_open { x > lo } else { x >= lo }) && x <= hi;
        if !ok {
            let allowed = format!("{}{lo}, {hi}]", if lo_open { "in (" } else { "in [" });
            return Err(range(key, x, &allowed));
        }
        Ok(x)
    }

    /// An integer in `[lo, hi]`; `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`], [`ConfigError::Range`].
    pub fn int(&self, key: &str, default: i64, lo: i64, hi: i64) -> Result<i64, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let x = match v {
            Value::Number(n) => n.as_i64().ok_or_else(|| type_err(key, "an integer", v))?,
            _ => return Err(type_err(key, "an integer", v)),
        };
        if !(lo..=hi).contains(&x) {
            return Err(range(key, x, &format!("in [{lo}, {hi}]")));
        }
        Ok(x)
    }

    /// A boolean; `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`].
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(type_err(key, "true or false", v)),
        }
    }

    /// A string; `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`].
    pub fn string(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(type_err(key, "a string", v)),
        }
    }

    /// One of `words` (a string naming a value); `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`], [`ConfigError::Range`] naming the allowed words.
    pub fn word<T: Copy>(
        &self,
        key: &str,
        default: T,
        words: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let Value::String(s) = v else {
            return Err(type_err(key, "a string", v));
        };
        words
            .iter()
            .find(|(w, _)| w == s)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let list: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                range(
                    key,
                    format!("{s:?}"),
                    &format!("one of {}", list.join(", ")),
                )
            })
    }

    /// A list of strings; `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Type`].
    pub fn strings(&self, key: &str, default: &[&str]) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default.iter().map(|s| s.to_string()).collect());
        };
        let list = v.as_sequence().and_then(|s| {
            s.iter()
                .map(|e| e.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        list.ok_or_else(|| type_err(key, "a list of strings", v))
    }
}
