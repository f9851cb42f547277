//! ROS 2 `.msg` definitions (the `ros2msg` text that rosbag2 stores in MCAP schemas and that
//! `rosidl` reads) and a schema-driven CDR checker.
//!
//! The checker walks a CDR payload with the schema before serde decodes it. That is what turns a
//! bad buffer into an error naming the field and byte offset where it went wrong, and what
//! refuses a bogus sequence length before anything is allocated for it. It also lets a test
//! prove that a [`super::RosMessage::DEFINITION`] text describes exactly the bytes the serde
//! type writes.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

/// A fixed-size primitive ROS type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primitive {
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// `byte`: one octet.
    Byte,
    /// `char`: one octet (ROS 2 maps it to uint8).
    Char,
    /// `int8`.
    Int8,
    /// `uint8`.
    UInt8,
    /// `int16`.
    Int16,
    /// `uint16`.
    UInt16,
    /// `int32`.
    Int32,
    /// `uint32`.
    UInt32,
    /// `int64`.
    Int64,
    /// `uint64`.
    UInt64,
    /// `float32`.
    Float32,
    /// `float64`.
    Float64,
}

impl Primitive {
    /// Size in bytes on the wire (also the CDR alignment).
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::Byte | Self::Char | Self::Int8 | Self::UInt8 => 1,
            Self::Int16 | Self::UInt16 => 2,
            Self::Int32 | Self::UInt32 | Self::Float32 => 4,
            Self::Int64 | Self::UInt64 | Self::Float64 => 8,
        }
    }

    /// The `.msg` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Byte => "byte",
            Self::Char => "char",
            Self::Int8 => "int8",
            Self::UInt8 => "uint8",
            Self::Int16 => "int16",
            Self::UInt16 => "uint16",
            Self::Int32 => "int32",
            Self::UInt32 => "uint32",
            Self::Int64 => "int64",
            Self::UInt64 => "uint64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "bool" => Self::Bool,
            "byte" => Self::Byte,
            "char" => Self::Char,
            "int8" => Self::Int8,
            "uint8" => Self::UInt8,
            "int16" => Self::Int16,
            "uint16" => Self::UInt16,
            "int32" => Self::Int32,
            "uint32" => Self::UInt32,
            "int64" => Self::Int64,
            "uint64" => Self::UInt64,
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            _ => return None,
        })
    }
}

/// The element type of a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// A fixed-size primitive.
    Primitive(Primitive),
    /// `string` or `string<=N` (N in bytes).
    String {
        /// Upper bound on the length in bytes, if any.
        bound: Option<usize>,
    },
    /// `wstring` or `wstring<=N`.
    WString {
        /// Upper bound on the length in characters, if any.
        bound: Option<usize>,
    },
    /// A nested message, by full name `pkg/msg/Type`.
    Msg(String),
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primitive(p) => f.write_str(p.name()),
            Self::String { bound: None } => f.write_str("string"),
            Self::String { bound: Some(n) } => write!(f, "string<={n}"),
            Self::WString { bound: None } => f.write_str("wstring"),
            Self::WString { bound: Some(n) } => write!(f, "wstring<={n}"),
            Self::Msg(m) => f.write_str(m),
        }
    }
}

/// How many elements a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// One value.
    Single,
    /// `T[N]`: exactly N, no length on the wire.
    Fixed(usize),
    /// `T[]`: a sequence with a u32 length.
    Unbounded,
    /// `T[<=N]`: a sequence of at most N.
    Bounded(usize),
}

/// One field of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// Field name.
    pub name: String,
    /// Element type.
    pub ty: ElemType,
    /// Single value, array or sequence.
    pub arity: Arity,
}

impl FieldDef {
    /// The type as written in a `.msg` file, with full message names (`pkg/msg/Type`).
    pub fn type_string(&self) -> String {
        match self.arity {
            Arity::Single => self.ty.to_string(),
            Arity::Fixed(n) => format!("{}[{n}]", self.ty),
            Arity::Unbounded => format!("{}[]", self.ty),
            Arity::Bounded(n) => format!("{}[<={n}]", self.ty),
        }
    }
}

/// A constant declared in a message (`uint8 OK=0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstantDef {
    /// Constant name.
    pub name: String,
    /// Its type.
    pub ty: ElemType,
    /// The value as written.
    pub value: String,
}

/// One message type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgDef {
    /// Full name `pkg/msg/Type`.
    pub name: String,
    /// Fields in wire order.
    pub fields: Vec<FieldDef>,
    /// Constants (not on the wire).
    pub constants: Vec<ConstantDef>,
}

/// A `.msg` text that could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("message definition of {type_name}, line {line} `{text}`: {reason}")]
pub struct SchemaError {
    /// The type whose text failed.
    pub type_name: String,
    /// 1-based line within that type's text.
    pub line: usize,
    /// The offending line.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Splits `pkg/msg/Type`, `pkg/Type` into `(pkg, Type)`.
fn split_name(full: &str) -> Option<(&str, &str)> {
    let mut parts = full.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(t), None, None) if !p.is_empty() && !t.is_empty() => Some((p, t)),
        (Some(p), Some("msg"), Some(t), None) if !p.is_empty() && !t.is_empty() => Some((p, t)),
        _ => None,
    }
}

/// Normalises a type name to `pkg/msg/Type` (`pkg/Type` and `pkg/msg/Type` accepted).
pub fn normalize_type_name(name: &str) -> Option<String> {
    split_name(name).map(|(p, t)| format!("{p}/msg/{t}"))
}

fn strip_comment(line: &str) -> &str {
    // A '#' inside a quoted string default/constant is not a comment.
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_bound(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("`{s}` is not a valid bound"))
}

fn parse_elem(package: &str, s: &str) -> Result<ElemType, String> {
    if let Some(p) = Primitive::from_name(s) {
        return Ok(ElemType::Primitive(p));
    }
    for (kw, wide) in [("string", false), ("wstring", true)] {
        if let Some(rest) = s.strip_prefix(kw) {
            let bound = if rest.is_empty() {
                None
            } else if let Some(b) = rest.strip_prefix("<=") {
                Some(parse_bound(b)?)
            } else {
                continue;
            };
            return Ok(if wide {
                ElemType::WString { bound }
            } else {
                ElemType::String { bound }
            });
        }
    }
    let full = match s {
        "time" => "builtin_interfaces/msg/Time".to_owned(),
        "duration" => "builtin_interfaces/msg/Duration".to_owned(),
        "Header" => "std_msgs/msg/Header".to_owned(),
        _ if s.contains('/') => {
            normalize_type_name(s).ok_or_else(|| format!("`{s}` is not a valid type name"))?
        }
        _ => format!("{package}/msg/{s}"),
    };
    let valid = full
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/');
    if !valid {
        return Err(format!("`{s}` is not a valid type name"));
    }
    Ok(ElemType::Msg(full))
}

fn parse_type(package: &str, s: &str) -> Result<(ElemType, Arity), String> {
    let Some(open) = s.find('[') else {
        return Ok((parse_elem(package, s)?, Arity::Single));
    };
    let Some(inner) = s[open + 1..].strip_suffix(']') else {
        return Err(format!("`{s}`: unterminated array brackets"));
    };
    let arity = if inner.is_empty() {
        Arity::Unbounded
    } else if let Some(b) = inner.strip_prefix("<=") {
        Arity::Bounded(parse_bound(b)?)
    } else {
        Arity::Fixed(parse_bound(inner)?)
    };
    Ok((parse_elem(package, &s[..open])?, arity))
}

fn valid_field_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses the text of one `.msg` file for the type `full_name` (`pkg/msg/Type`).
///
/// # Errors
/// [`SchemaError`] naming the line for a malformed type, name, bound or constant.
pub fn parse_msg(full_name: &str, text: &str) -> Result<MsgDef, SchemaError> {
    let err = |line: usize, t: &str, reason: String| SchemaError {
        type_name: full_name.to_owned(),
        line,
        text: t.trim().to_owned(),
        reason,
    };
    let name = normalize_type_name(full_name)
        .ok_or_else(|| err(0, full_name, "not a `pkg/msg/Type` name".into()))?;
    let package = name.split('/').next().unwrap_or_default().to_owned();
    let mut def = MsgDef {
        name,
        fields: Vec::new(),
        constants: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let (ty, rest) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(i + 1, raw, "expected `type name`".into()))?;
        let rest = rest.trim();
        let (elem, arity) = parse_type(&package, ty).map_err(|r| err(i + 1, raw, r))?;
        // Constant: NAME=value (the '=' may have spaces around it).
        if let Some((cname, value)) = rest.split_once('=') {
            let cname = cname.trim();
            let is_const = !cname.contains(char::is_whitespace)
                && cname
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_const {
                if arity != Arity::Single || matches!(elem, ElemType::Msg(_)) {
                    return Err(err(
                        i + 1,
                        raw,
                        "constants must be primitives or strings".into(),
                    ));
                }
                def.constants.push(ConstantDef {
                    name: cname.to_owned(),
                    ty: elem,
                    value: value.trim().to_owned(),
                });
                continue;
            }
        }
        // Field: name [default value]
        let fname = rest.split_whitespace().next().unwrap_or_default();
        if !valid_field_name(fname) {
            return Err(err(
                i + 1,
                raw,
                format!("`{fname}` is not a valid field name"),
            ));
        }
        if def.fields.iter().any(|f| f.name == fname) {
            return Err(err(i + 1, raw, format!("field `{fname}` declared twice")));
        }
        def.fields.push(FieldDef {
            name: fname.to_owned(),
            ty: elem,
            arity,
        });
    }
    Ok(def)
}

/// A full (concatenated) message definition: the root type and every type it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Full name of the root type.
    pub root: String,
    /// Every type by full name, root included.
    pub types: HashMap<String, MsgDef>,
}

/// The separator line rosbag2 puts between the types of a concatenated definition.
pub const SEPARATOR: &str =
    "================================================================================";

impl Schema {
    /// Parses a concatenated `ros2msg` definition as rosbag2 stores it: the root type's text,
    /// then for each dependency a line of 80 `=`, a `MSG: pkg/Type` line and that type's text.
    /// `builtin_interfaces/msg/Time` and `Duration` are known without being listed.
    ///
    /// # Errors
    /// [`SchemaError`] for a malformed text, or a referenced type that is not defined.
    pub fn parse(root: &str, text: &str) -> Result<Self, SchemaError> {
        let root_name = normalize_type_name(root).ok_or_else(|| SchemaError {
            type_name: root.to_owned(),
            line: 0,
            text: root.to_owned(),
            reason: "not a `pkg/msg/Type` name".into(),
        })?;
        let mut sections: Vec<(String, String)> = vec![(root_name.clone(), String::new())];
        for line in text.lines() {
            if line.trim() == SEPARATOR {
                sections.push((String::new(), String::new()));
                continue;
            }
            let Some(last) = sections.last_mut() else {
                continue;
            };
            if last.0.is_empty() {
                if let Some(n) = line.trim().strip_prefix("MSG:") {
                    last.0 = normalize_type_name(n.trim()).ok_or_else(|| SchemaError {
                        type_name: root_name.clone(),
                        line: 0,
                        text: line.to_owned(),
                        reason: "bad `MSG:` type name".into(),
                    })?;
                    continue;
                }
                if line.trim().is_empty() {
                    continue;
                }
                return Err(SchemaError {
                    type_name: root_name.clone(),
                    line: 0,
                    text: line.to_owned(),
                    reason: "a section after a separator must start with `MSG: pkg/Type`".into(),
                });
            }
            last.1.push_str(line);
            last.1.push('\n');
        }
        let mut types = HashMap::new();
        for (name, body) in &sections {
            let def = parse_msg(name, body)?;
            types.insert(def.name.clone(), def);
        }
        for (name, fields) in [
            ("builtin_interfaces/msg/Time", "int32 sec\nuint32 nanosec\n"),
            (
                "builtin_interfaces/msg/Duration",
                "int32 sec\nuint32 nanosec\n",
            ),
        ] {
            if !types.contains_key(name) {
                types.insert(name.to_owned(), parse_msg(name, fields)?);
            }
        }
        let schema = Self {
            root: root_name,
            types,
        };
        for def in schema.types.values() {
            for f in &def.fields {
                if let ElemType::Msg(m) = &f.ty {
                    if !schema.types.contains_key(m) {
                        return Err(SchemaError {
                            type_name: def.name.clone(),
                            line: 0,
                            text: format!("{} {}", f.type_string(), f.name),
                            reason: format!("type {m} is used but not defined"),
                        });
                    }
                }
            }
        }
        Ok(schema)
    }

    /// The root type.
    pub fn root_def(&self) -> Option<&MsgDef> {
        self.types.get(&self.root)
    }

    /// Checks that `payload` (CDR *without* the 4-byte encapsulation header) holds one value of
    /// the root type, and returns how many bytes it uses. `base` is added to reported offsets
    /// (4 when the payload came after an encapsulation header).
    ///
    /// # Errors
    /// [`CdrFault`] naming the field path and the byte offset of the first problem.
    pub fn check_cdr(
        &self,
        payload: &[u8],
        little_endian: bool,
        base: usize,
    ) -> Result<usize, CdrFault> {
        let mut w = Walker {
            schema: self,
            buf: payload,
            pos: 0,
            le: little_endian,
            path: Vec::new(),
            base,
            depth: 0,
        };
        w.msg(&self.root)?;
        Ok(w.pos)
    }

    fn min_size(&self, ty: &ElemType, depth: usize) -> usize {
        match ty {
            ElemType::Primitive(p) => p.size(),
            ElemType::String { .. } => 5,
            ElemType::WString { .. } => 4,
            ElemType::Msg(m) => {
                if depth > 32 {
                    return 0;
                }
                match self.types.get(m) {
                    Some(def) if def.fields.is_empty() => 1,
                    Some(def) => def
                        .fields
                        .iter()
                        .map(|f| match f.arity {
                            Arity::Single => self.min_size(&f.ty, depth + 1),
                            Arity::Fixed(n) => n.saturating_mul(self.min_size(&f.ty, depth + 1)),
                            Arity::Unbounded | Arity::Bounded(_) => 4,
                        })
                        .fold(0usize, usize::saturating_add),
                    None => 0,
                }
            }
        }
    }
}

/// What is wrong at the point where a CDR payload stops matching its schema.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Problem {
    /// The buffer ends inside a value.
    #[error("buffer ends: {needed} bytes needed, {left} left")]
    ShortBuffer {
        /// Bytes the value needs (padding included).
        needed: usize,
        /// Bytes left in the buffer.
        left: usize,
    },
    /// A sequence or string length that cannot fit in what is left of the buffer.
    #[error("length {count} needs at least {min_bytes} bytes but only {left} are left")]
    LengthTooLarge {
        /// The length read from the wire.
        count: u64,
        /// Minimum bytes that many elements need.
        min_bytes: u64,
        /// Bytes left in the buffer.
        left: usize,
    },
    /// A string without terminating NUL, or not UTF-8.
    #[error("bad string: {0}")]
    BadString(String),
    /// A bool that is neither 0 nor 1.
    #[error("bool byte is {0}, not 0 or 1")]
    BadBool(u8),
    /// A bounded string or sequence longer than its bound.
    #[error("length {len} exceeds the bound {bound}")]
    BoundExceeded {
        /// Length on the wire.
        len: u64,
        /// The declared bound.
        bound: usize,
    },
    /// The schema names a type it does not define (or nests too deeply).
    #[error("schema problem: {0}")]
    Schema(String),
}

/// Where and why a CDR payload does not match its schema.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("field `{field}` at byte {offset}: {problem}")]
pub struct CdrFault {
    /// Field path such as `results[2].class_id` (empty for the message itself).
    pub field: String,
    /// Byte offset in the buffer (encapsulation header included when `base` was 4).
    pub offset: usize,
    /// What is wrong.
    pub problem: Problem,
}

enum Seg<'a> {
    Field(&'a str),
    Index(u64),
}

struct Walker<'s, 'b> {
    schema: &'s Schema,
    buf: &'b [u8],
    pos: usize,
    le: bool,
    path: Vec<Seg<'s>>,
    base: usize,
    depth: usize,
}

impl<'s> Walker<'s, '_> {
    fn fault(&self, offset: usize, problem: Problem) -> CdrFault {
        let mut field = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(n) => {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(n);
                }
                Seg::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        CdrFault {
            field,
            offset: offset + self.base,
            problem,
        }
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn align(&mut self, n: usize) -> Result<(), CdrFault> {
        let pad = (n - self.pos % n) % n;
        if pad > self.left() {
            return Err(self.fault(
                self.pos,
                Problem::ShortBuffer {
                    needed: pad,
                    left: self.left(),
                },
            ));
        }
        self.pos += pad;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CdrFault> {
        if n > self.left() {
            return Err(self.fault(
                self.pos,
                Problem::ShortBuffer {
                    needed: n,
                    left: self.left(),
                },
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, CdrFault> {
        self.align(4)?;
        let le = self.le;
        let b = self.take(4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    fn msg(&mut self, name: &str) -> Result<(), CdrFault> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.fault(self.pos, Problem::Schema("types nest too deeply".into())));
        }
        let schema = self.schema;
        let Some(def) = schema.types.get(name) else {
            return Err(self.fault(
                self.pos,
                Problem::Schema(format!("type {name} is undefined")),
            ));
        };
        if def.fields.is_empty() {
            // rosidl gives an empty message one placeholder uint8.
            self.take(1)?;
        }
        for f in &def.fields {
            self.path.push(Seg::Field(&f.name));
            self.field(f)?;
            self.path.pop();
        }
        self.depth -= 1;
        Ok(())
    }

    fn field(&mut self, f: &'s FieldDef) -> Result<(), CdrFault> {
        let count = match f.arity {
            Arity::Single => return self.elem(&f.ty),
            Arity::Fixed(n) => n as u64,
            Arity::Unbounded | Arity::Bounded(_) => {
                self.align(4)?;
                let at = self.pos;
                let n = u64::from(self.u32()?);
                if let Arity::Bounded(bound) = f.arity {
                    if n > bound as u64 {
                        return Err(self.fault(at, Problem::BoundExceeded { len: n, bound }));
                    }
                }
                let min = self.schema.min_size(&f.ty, 0) as u64;
                let min_bytes = n.saturating_mul(min);
                if min_bytes > self.left() as u64 {
                    return Err(self.fault(
                        at,
                        Problem::LengthTooLarge {
                            count: n,
                            min_bytes,
                            left: self.left(),
                        },
                    ));
                }
                n
            }
        };
        if let ElemType::Primitive(p) = f.ty {
            if p != Primitive::Bool {
                if count == 0 {
                    return Ok(());
                }
                self.align(p.size())?;
                let bytes = (count as usize).saturating_mul(p.size());
                self.take(bytes)?;
                return Ok(());
            }
        }
        for i in 0..count {
            self.path.push(Seg::Index(i));
            self.elem(&f.ty)?;
            self.path.pop();
        }
        Ok(())
    }

    fn elem(&mut self, ty: &'s ElemType) -> Result<(), CdrFault> {
        match ty {
            ElemType::Primitive(Primitive::Bool) => {
                let at = self.pos;
                let b = self.take(1)?[0];
                if b > 1 {
                    return Err(self.fault(at, Problem::BadBool(b)));
                }
                Ok(())
            }
            ElemType::Primitive(p) => {
                self.align(p.size())?;
                self.take(p.size())?;
                Ok(())
            }
            ElemType::String { bound } => {
                self.align(4)?;
                let at = self.pos;
                let n = self.u32()? as usize;
                if n > self.left() {
                    return Err(self.fault(
                        at,
                        Problem::LengthTooLarge {
                            count: n as u64,
                            min_bytes: n as u64,
                            left: self.left(),
                        },
                    ));
                }
                if n == 0 {
                    return Err(self.fault(
                        at,
                        Problem::BadString("length 0: no terminating NUL".into()),
                    ));
                }
                if let Some(bound) = bound {
                    if n - 1 > *bound {
                        return Err(self.fault(
                            at,
                            Problem::BoundExceeded {
                                len: (n - 1) as u64,
                                bound: *bound,
                            },
                        ));
                    }
                }
                let bytes = self.take(n)?;
                let (last, body) = bytes.split_last().unwrap_or((&0, &[]));
                if *last != 0 {
                    return Err(self.fault(at, Problem::BadString("no terminating NUL".into())));
                }
                if let Err(e) = std::str::from_utf8(body) {
                    return Err(self.fault(at, Problem::BadString(format!("not UTF-8: {e}"))));
                }
                Ok(())
            }
            ElemType::WString { bound } => {
                self.align(4)?;
                let at = self.pos;
                let n = u64::from(self.u32()?);
                if let Some(bound) = bound {
                    if n > *bound as u64 {
                        return Err(self.fault(
                            at,
                            Problem::BoundExceeded {
                                len: n,
                                bound: *bound,
                            },
                        ));
                    }
                }
                let bytes = n.saturating_mul(2);
                if bytes > self.left() as u64 {
                    return Err(self.fault(
                        at,
                        Problem::LengthTooLarge {
                            count: n,
                            min_bytes: bytes,
                            left: self.left(),
                        },
                    ));
                }
                self.take(bytes as usize)?;
                Ok(())
            }
            ElemType::Msg(m) => self.msg(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_constants_arrays_and_comments() {
        let d = parse_msg(
            "pkg/msg/T",
            "# comment\nuint8 A=1  # const\nstring S = \"a#b\"\nint32[3] fixed\n\
             float64[] seq\nstring<=5[<=2] names\nHeader header\ntime t\nOther o 1\n",
        )
        .unwrap();
        assert_eq!(d.constants.len(), 2);
        assert_eq!(d.constants[1].value, "\"a#b\"");
        let types: Vec<String> = d.fields.iter().map(|f| f.type_string()).collect();
        assert_eq!(
            types,
            [
                "int32[3]",
                "float64[]",
                "string<=5[<=2]",
                "std_msgs/msg/Header",
                "builtin_interfaces/msg/Time",
                "pkg/msg/Other"
            ]
        );
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse_msg("p/msg/T", "uint8\n").is_err());
        assert!(parse_msg("p/msg/T", "uint8 9bad\n").is_err());
        assert!(parse_msg("p/msg/T", "int32[x] a\n").is_err());
        assert!(parse_msg("p/msg/T", "int32 a\nint32 a\n").is_err());
        assert!(Schema::parse("p/msg/T", "q/Missing m\n").is_err());
    }
}
