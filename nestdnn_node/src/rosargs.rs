//! The ROS 2 command line: what `ros2 run` / `ros2 launch` pass to a node, and ROS names.
//!
//! A launched node gets `<exe> [args] --ros-args -r __node:=NAME -r __ns:=/NS --params-file
//! FILE -p key:=value -r from:=to --log-level LEVEL [--]`. The pure-Rust DDS stack handles none
//! of this, so [`RosArgs::parse`] does (with the long forms `--remap`, `--param`, `--enclave`,
//! node-prefixed rules `node:from:=to`, several `--ros-args` sections, and the `--` end marker),
//! and [`NameContext`] resolves and remaps topic names the way rcl does (relative names,
//! absolute names, `~` private names, namespaces). [`domain_id_from_env`] reads
//! `ROS_DOMAIN_ID`.

use std::path::PathBuf;

use crate::interface::{LogLevel, UnknownLogLevel};

/// Errors of the ROS command line and of ROS names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RosArgsError {
    /// A flag that needs a value was last on the line.
    #[error("{flag} needs a value")]
    MissingValue {
        /// The flag.
        flag: String,
    },
    /// An argument inside `--ros-args` is not a known ROS flag.
    #[error("unknown ROS argument {0:?}")]
    UnknownArgument(String),
    /// A remap or parameter rule is not `[node:]from:=to`.
    #[error("malformed rule {rule:?}: {detail}")]
    BadRule {
        /// The rule as given.
        rule: String,
        /// What was wrong.
        detail: String,
    },
    /// A log level that ROS does not know.
    #[error(transparent)]
    BadLogLevel(#[from] UnknownLogLevel),
    /// An invalid node name, namespace or topic name.
    #[error("invalid ROS name {name:?}: {detail}")]
    BadName {
        /// The name.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// `ROS_DOMAIN_ID` is not a number in 0..=232.
    #[error("invalid ROS_DOMAIN_ID {0:?} (expected an integer 0..=232)")]
    BadDomainId(String),
}

/// A `-r [node:]from:=to` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remap {
    /// Node the rule is limited to (`node:` prefix), if any.
    pub node: Option<String>,
    /// Name to match (as written; resolved against the node's namespace when applied).
    pub from: String,
    /// Replacement name.
    pub to: String,
}

/// A `-p [node:]name:=value` override; `value` is YAML text (`3`, `true`, `[a, b]`, `x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamOverride {
    /// Node the rule is limited to, if any.
    pub node: Option<String>,
    /// Parameter name (dotted for nested keys).
    pub name: String,
    /// Value as YAML text.
    pub value: String,
}

/// A parsed command line: the node's own arguments and the ROS ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosArgs {
    /// Arguments outside `--ros-args` sections, in order (without the program name).
    pub user_args: Vec<String>,
    /// `-r __node:=NAME` (or `__name`), the last one that applies to this node.
    pub node_name: Option<String>,
    /// `-r __ns:=/NS`.
    pub namespace: Option<String>,
    /// Topic remaps, in order (the first matching rule wins, as in rcl).
    pub remaps: Vec<Remap>,
    /// `--params-file` files, in order (later files override earlier ones).
    pub params_files: Vec<PathBuf>,
    /// `-p` overrides, in order (they override params files).
    pub params: Vec<ParamOverride>,
    /// `--log-level LEVEL` (default logger).
    pub log_level: Option<LogLevel>,
    /// `--log-level name:=LEVEL` for named loggers.
    pub logger_levels: Vec<(String, LogLevel)>,
    /// `-e` / `--enclave` (accepted, unused: no security here).
    pub enclave: Option<String>,
}

fn split_rule(rule: &str) -> Result<(Option<String>, String, String), RosArgsError> {
    let bad = |d: &str| RosArgsError::BadRule {
        rule: rule.to_string(),
        detail: d.to_string(),
    };
    let (lhs, rhs) = rule.split_once(":=").ok_or_else(|| bad("no ':='"))?;
    // A node prefix is `name:` before the match part; `~` and `/` never start a node name.
    let (node, from) = match lhs.split_once(':') {
        Some((n, f)) => (Some(n.to_string()), f.to_string()),
        None => (None, lhs.to_string()),
    };
    if from.is_empty() {
        return Err(bad("empty left side"));
    }
    if node.as_deref() == Some("") {
        return Err(bad("empty node prefix"));
    }
    Ok((node, from, rhs.to_string()))
}

impl RosArgs {
    /// Parses `args` (without the program name) for a node whose default name is
    /// `default_node`: node-prefixed rules for other nodes are kept in [`RosArgs::remaps`] /
    /// [`RosArgs::params`] but `__node`/`__ns` rules for other nodes are ignored.
    ///
    /// # Errors
    /// [`RosArgsError`] on an unknown flag inside `--ros-args`, a missing value, a malformed
    /// rule or log level, or an invalid node name / namespace.
    pub fn parse<I, S>(args: I, default_node: &str) -> Result<RosArgs, RosArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = RosArgs::default();
        let mut it = args.into_iter().map(Into::into);
        let mut in_ros = false;
        while let Some(a) = it.next() {
            if !in_ros {
                if a == "--ros-args" {
                    in_ros = true;
                } else {
                    out.user_args.push(a);
                }
                continue;
            }
            let mut value = |flag: &str| {
                it.next().ok_or_else(|| RosArgsError::MissingValue {
                    flag: flag.to_string(),
                })
            };
            match a.as_str() {
                "--" => in_ros = false,
                "--ros-args" => {}
                "-r" | "--remap" => {
                    let rule = value(&a)?;
                    out.add_remap(&rule, default_node)?;
                }
                "-p" | "--param" => {
                    let rule = value(&a)?;
                    let (node, name, value) = split_rule(&rule)?;
                    out.params.push(ParamOverride { node, name, value });
                }
                "--params-file" => out.params_files.push(PathBuf::from(value(&a)?)),
                "--log-level" => {
                    let v = value(&a)?;
                    match v.split_once(":=") {
                        Some((logger, level)) => out
                            .logger_levels
                            .push((logger.to_string(), LogLevel::parse(level)?)),
                        None => out.log_level = Some(LogLevel::parse(&v)?),
                    }
                }
                "-e" | "--enclave" => out.enclave = Some(value(&a)?),
                "--log-config-file" => {
                    value(&a)?;
                }
                "--enable-rosout-logs"
                | "--disable-rosout-logs"
                | "--enable-stdout-logs"
                | "--disable-stdout-logs"
                | "--enable-external-lib-logs"
                | "--disable-external-lib-logs" => {}
                _ => return Err(RosArgsError::UnknownArgument(a)),
            }
        }
        if let Some(n) = &out.node_name {
            validate_node_name(n)?;
        }
        if let Some(ns) = &out.namespace {
            validate_namespace(ns)?;
        }
        Ok(out)
    }

    fn add_remap(&mut self, rule: &str, default_node: &str) -> Result<(), RosArgsError> {
        let (node, from, to) = split_rule(rule)?;
        let for_us = node.as_deref().is_none_or(|n| n == default_node);
        match from.as_str() {
            "__node" | "__name" => {
                if for_us {
                    self.node_name = Some(to);
                }
            }
            "__ns" => {
                if for_us {
                    self.namespace = Some(to);
                }
            }
            _ => self.remaps.push(Remap { node, from, to }),
        }
        Ok(())
    }

    /// The name context of the node: name (`__node` or `default_node`), namespace (`__ns` or
    /// `/`), and the remap rules that apply to it.
    ///
    /// # Errors
    /// [`RosArgsError::BadName`] when `default_node` is not a valid node name.
    pub fn name_context(&self, default_node: &str) -> Result<NameContext, RosArgsError> {
        let original = default_node.to_string();
        let node = self.node_name.clone().unwrap_or_else(|| original.clone());
        validate_node_name(&node)?;
        let namespace = normalise_namespace(self.namespace.as_deref().unwrap_or("/"));
        let mut ctx = NameContext {
            node,
            namespace,
            remaps: Vec::new(),
        };
        for r in &self.remaps {
            // rcl matches a node prefix against the node's name after remapping; accept the
            // original name as well (launch files write rules for the executable's node).
            let applies = r
                .node
                .as_deref()
                .is_none_or(|n| n == ctx.node || n == original);
            if applies {
                let from = ctx.resolve(&r.from)?;
                let to = ctx.resolve(&r.to)?;
                ctx.remaps.push((from, to));
            }
        }
        Ok(ctx)
    }

    /// Parameter overrides that apply to node `node` (unprefixed or prefixed with its name),
    /// as `(name, yaml value)` pairs in order.
    pub fn params_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.params
            .iter()
            .filter(move |p| p.node.as_deref().is_none_or(|n| n == node))
            .map(|p| (p.name.as_str(), p.value.as_str()))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn bad_name(name: &str, detail: &str) -> RosArgsError {
    RosArgsError::BadName {
        name: name.to_string(),
        detail: detail.to_string(),
    }
}

/// Checks a node name: one token of `[A-Za-z0-9_]`, not starting with a digit.
///
/// # Errors
/// [`RosArgsError::BadName`].
pub fn validate_node_name(name: &str) -> Result<(), RosArgsError> {
    if is_token(name) {
        Ok(())
    } else {
        Err(bad_name(
            name,
            "a node name is one token of [A-Za-z0-9_] not starting with a digit",
        ))
    }
}

/// Checks a namespace: `/` or `/a/b` (tokens as in node names); a missing leading `/` is
/// accepted (rcl adds it).
///
/// # Errors
/// [`RosArgsError::BadName`].
pub fn validate_namespace(ns: &str) -> Result<(), RosArgsError> {
    let n = normalise_namespace(ns);
    if n == "/" || n[1..].split('/').all(is_token) {
        Ok(())
    } else {
        Err(bad_name(ns, "a namespace is '/' or '/token/token...'"))
    }
}

fn normalise_namespace(ns: &str) -> String {
    let t = ns.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        format!("/{t}")
    }
}

/// The naming context of one node: resolves relative and private names and applies remaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameContext {
    /// Node name after `__node` remapping.
    pub node: String,
    /// Namespace (`/` or `/a/b`).
    pub namespace: String,
    /// Fully resolved `(from, to)` pairs that apply to this node, first match wins.
    pub remaps: Vec<(String, String)>,
}

impl NameContext {
    /// A context without remaps.
    ///
    /// # Errors
    /// [`RosArgsError::BadName`] for an invalid node name or namespace.
    pub fn new(node: &str, namespace: &str) -> Result<NameContext, RosArgsError> {
        validate_node_name(node)?;
        validate_namespace(namespace)?;
        Ok(NameContext {
            node: node.to_string(),
            namespace: normalise_namespace(namespace),
            remaps: Vec::new(),
        })
    }

    /// Fully-qualified name of the node (`/ns/node`).
    pub fn fully_qualified_node(&self) -> String {
        join(&self.namespace, &self.node)
    }

    /// Expands a topic name: `/abs` stays, `rel` -> `/ns/rel`, `~` -> `/ns/node`,
    /// `~/x` -> `/ns/node/x`. No remapping.
    ///
    /// # Errors
    /// [`RosArgsError::BadName`] for an empty name, empty or invalid tokens, or a
    /// trailing `/`.
    pub fn resolve(&self, name: &str) -> Result<String, RosArgsError> {
        let full = if name == "~" {
            self.fully_qualified_node()
        } else if let Some(rest) = name.strip_prefix("~/") {
            join(&self.fully_qualified_node(), rest)
        } else if name.starts_with('/') {
            name.to_string()
        } else {
            join(&self.namespace, name)
        };
        if full.len() < 2 || full.ends_with('/') || !full[1..].split('/').all(is_token) {
            return Err(bad_name(
                name,
                "topic names are '/'-separated tokens of [A-Za-z0-9_]",
            ));
        }
        Ok(full)
    }

    /// Resolves `name` and applies the first matching remap rule.
    ///
    /// # Errors
    /// As [`NameContext::resolve`].
    pub fn topic(&self, name: &str) -> Result<String, RosArgsError> {
        let full = self.resolve(name)?;
        Ok(self
            .remaps
            .iter()
            .find(|(from, _)| *from == full)
            .map(|(_, to)| to.clone())
            .unwrap_or(full))
    }
}

impl NameContext {
    /// The topic an `image_transport` subscriber of base topic `base` subscribes for the
    /// transport `suffix` (e.g. `compressed`), as `image_transport` names it: the base is
    /// resolved and remapped first, the suffix appended, and the result remapped again. So
    /// both a remap of the camera's base topic (`-r camera/image_raw:=/cam0/image`: subscribes
    /// `/cam0/image/compressed`) and one of the full transport topic
    /// (`-r camera/image_raw/compressed:=/cam0/jpeg`) apply to a compressed task.
    ///
    /// # Errors
    /// As [`NameContext::resolve`], also for an invalid `suffix`.
    pub fn image_transport_topic(&self, base: &str, suffix: &str) -> Result<String, RosArgsError> {
        let base = self.topic(base)?;
        self.topic(&format!("{base}/{suffix}"))
    }
}

fn join(ns: &str, rest: &str) -> String {
    if ns == "/" {
        format!("/{rest}")
    } else {
        format!("{ns}/{rest}")
    }
}

/// Splits a fully-qualified topic name into `(namespace, base)` as DDS names need it
/// (`/a/b/c` -> `("/a/b", "c")`, `/c` -> `("/", "c")`).
pub fn split_topic(full: &str) -> (&str, &str) {
    match full.rfind('/') {
        Some(0) | None => ("/", full.trim_start_matches('/')),
        Some(i) => (&full[..i], &full[i + 1..]),
    }
}

/// The DDS domain id from `ROS_DOMAIN_ID` (unset or empty: 0).
///
/// # Errors
/// [`RosArgsError::BadDomainId`] for anything but an integer 0..=232.
pub fn domain_id_from_env() -> Result<u16, RosArgsError> {
    parse_domain_id(std::env::var("ROS_DOMAIN_ID").ok().as_deref())
}

/// Parses a `ROS_DOMAIN_ID` value (`None` or blank: 0).
///
/// # Errors
/// [`RosArgsError::BadDomainId`] for anything but an integer 0..=232.
pub fn parse_domain_id(v: Option<&str>) -> Result<u16, RosArgsError> {
    match v.map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|d| *d <= 232)
            .ok_or_else(|| RosArgsError::BadDomainId(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RosArgs, RosArgsError> {
        RosArgs::parse(s.split_whitespace(), "nestdnn_node")
    }

    #[test]
    fn launch_command_line() {
        let a = parse(
            "--trace x.yaml --ros-args -r __node:=perception -r __ns:=/robot1 --params-file /p.yaml \
             -p default_budget.cpu_cores:=1.5 -r /camera/front:=/cam0/image_raw --log-level WARN \
             --enable-rosout-logs -- tail",
        )
        .unwrap();
        assert_eq!(a.user_args, ["--trace", "x.yaml", "tail"]);
        assert_eq!(a.node_name.as_deref(), Some("perception"));
        assert_eq!(a.namespace.as_deref(), Some("/robot1"));
        assert_eq!(a.params_files, [PathBuf::from("/p.yaml")]);
        assert_eq!(a.params[0].name, "default_budget.cpu_cores");
        assert_eq!(a.params[0].value, "1.5");
        assert_eq!(a.log_level, Some(LogLevel::Warn));
        assert_eq!(a.remaps.len(), 1);
    }

    #[test]
    fn long_forms_prefixes_and_sections() {
        let a = parse(
            "--ros-args --remap other:__node:=x --remap nestdnn_node:__ns:=/a --param nestdnn_node:p:=1 \
             -e /enc --log-level rcl:=debug --ros-args -r img:=/cam/img",
        )
        .unwrap();
        assert_eq!(a.node_name, None, "rule for another node ignored");
        assert_eq!(a.namespace.as_deref(), Some("/a"));
        assert_eq!(
            a.params_for("nestdnn_node").collect::<Vec<_>>(),
            [("p", "1")]
        );
        assert_eq!(a.params_for("other").count(), 0);
        assert_eq!(a.enclave.as_deref(), Some("/enc"));
        assert_eq!(a.logger_levels, [("rcl".to_string(), LogLevel::Debug)]);
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            parse("--ros-args -r"),
            Err(RosArgsError::MissingValue { flag: "-r".into() })
        );
        assert!(matches!(
            parse("--ros-args --bogus"),
            Err(RosArgsError::UnknownArgument(_))
        ));
        assert!(matches!(
            parse("--ros-args -r a=b"),
            Err(RosArgsError::BadRule { .. })
        ));
        assert!(matches!(
            parse("--ros-args -p :=1"),
            Err(RosArgsError::BadRule { .. })
        ));
        assert!(matches!(
            parse("--ros-args --log-level loud"),
            Err(RosArgsError::BadLogLevel(_))
        ));
        assert!(matches!(
            parse("--ros-args -r __node:=9x"),
            Err(RosArgsError::BadName { .. })
        ));
        assert!(matches!(
            parse("--ros-args -r __ns:=/a//b"),
            Err(RosArgsError::BadName { .. })
        ));
        // outside --ros-args anything goes
        assert!(parse("--bogus -r").is_ok());
    }

    #[test]
    fn name_resolution_and_remaps() {
        let a = parse(
            "--ros-args -r __ns:=/robot -r __node:=perc -r camera/image:=/cam0/image_raw \
             -r ~/out:=results -r perc:diag:=/diagnostics_x -r nestdnn_node:a:=b -r other:c:=d",
        )
        .unwrap();
        let ctx = a.name_context("nestdnn_node").unwrap();
        assert_eq!(ctx.fully_qualified_node(), "/robot/perc");
        assert_eq!(ctx.resolve("x").unwrap(), "/robot/x");
        assert_eq!(ctx.resolve("/x/y").unwrap(), "/x/y");
        assert_eq!(ctx.resolve("~").unwrap(), "/robot/perc");
        assert_eq!(ctx.resolve("~/x").unwrap(), "/robot/perc/x");
        assert_eq!(ctx.topic("camera/image").unwrap(), "/cam0/image_raw");
        assert_eq!(ctx.topic("/robot/camera/image").unwrap(), "/cam0/image_raw");
        assert_eq!(ctx.topic("~/out").unwrap(), "/robot/results");
        assert_eq!(ctx.topic("diag").unwrap(), "/diagnostics_x");
        assert_eq!(
            ctx.topic("a").unwrap(),
            "/robot/b",
            "original node name prefix"
        );
        assert_eq!(
            ctx.topic("c").unwrap(),
            "/robot/c",
            "other node's rule ignored"
        );
        for bad in ["", "a//b", "a/", "1a", "a b", "/"] {
            assert!(ctx.resolve(bad).is_err(), "{bad:?}");
        }
        let root = NameContext::new("n", "").unwrap();
        assert_eq!(root.resolve("x").unwrap(), "/x");
        assert_eq!(NameContext::new("n", "ns/").unwrap().namespace, "/ns");
        assert_eq!(split_topic("/a/b/c"), ("/a/b", "c"));

        // image_transport: a remap of the base topic moves its /compressed subtopic along; a
        // remap of the full transport topic wins over it; unmapped names resolve as usual.
        let it = parse(
            "--ros-args -r __ns:=/robot -r cam/image_raw:=/cam0/image              -r front/image_raw/compressed:=/front/jpeg -r ~/img:=/abs/img",
        )
        .unwrap()
        .name_context("nestdnn_node")
        .unwrap();
        assert_eq!(
            it.image_transport_topic("cam/image_raw", "compressed")
                .unwrap(),
            "/cam0/image/compressed"
        );
        assert_eq!(
            it.image_transport_topic("/robot/cam/image_raw", "compressed")
                .unwrap(),
            "/cam0/image/compressed"
        );
        assert_eq!(
            it.image_transport_topic("front/image_raw", "compressed")
                .unwrap(),
            "/front/jpeg"
        );
        assert_eq!(
            it.image_transport_topic("~/img", "compressed").unwrap(),
            "/abs/img/compressed"
        );
        assert_eq!(
            it.image_transport_topic("other/image_raw", "compressed")
                .unwrap(),
            "/robot/other/image_raw/compressed"
        );
        assert!(it
            .image_transport_topic("cam/image_raw", "bad name")
            .is_err());
        assert_eq!(split_topic("/c"), ("/", "c"));
    }

    #[test]
    fn domain_id() {
        assert_eq!(parse_domain_id(None), Ok(0));
        assert_eq!(parse_domain_id(Some("")), Ok(0));
        assert_eq!(parse_domain_id(Some(" 42 ")), Ok(42));
        assert!(parse_domain_id(Some("233")).is_err());
        assert!(parse_domain_id(Some("-1")).is_err());
        assert!(parse_domain_id(Some("x")).is_err());
    }

    #[test]
    fn log_levels() {
        assert_eq!(
            LogLevel::parse("FATAL").unwrap().to_filter(),
            log::LevelFilter::Error
        );
        assert_eq!(
            LogLevel::parse("Debug").unwrap().to_filter(),
            log::LevelFilter::Debug
        );
    }
}
