//! Output files that never cost the user data: an output may not be, or lie inside, an input
//! ([`check_outputs`], before any work is done, which also proves each output's folder
//! writable), and every file is written atomically ([`write_atomic`]: a temporary file beside
//! the target, synced, then renamed onto it), so a failed or interrupted write leaves the
//! target as it was and no partial file behind.

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an output path cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output is an input, or lies inside an input folder.
    #[error("{what} {output} would overwrite the input {input}: choose a path outside the inputs")]
    OverwritesInput {
        /// Which output (`--out`, `--report`, ...).
        what: String,
        /// The output path as given.
        output: PathBuf,
        /// The input it collides with.
        input: PathBuf,
    },
    /// Two outputs name the same file.
    #[error("{what} and {other} both name {output}: give each output its own path")]
    SameOutput {
        /// One output.
        what: String,
        /// The other.
        other: String,
        /// The path.
        output: PathBuf,
    },
    /// The output exists and is a folder.
    #[error("{what} {output} is a folder: name a file")]
    IsDir {
        /// Which output.
        what: String,
        /// The path.
        output: PathBuf,
    },
    /// The output's folder cannot be created or written.
    #[error("{what} {output}: cannot write there: {source}")]
    NotWritable {
        /// Which output.
        what: String,
        /// The path.
        output: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `p` made absolute and free of `.`/`..`, with symbolic links resolved as far as the path
/// exists (so `out/../bag.mcap` and a link to an input are recognised).
pub fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // Resolve links on the longest existing prefix.
    let mut rest = Vec::new();
    let mut base = clean.clone();
    loop {
        if let Ok(real) = base.canonicalize() {
            let mut out = real;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent.to_path_buf();
            }
            _ => return clean,
        }
    }
}

/// Checks, before any work, that no output is or lies inside an input, that no two outputs
/// share a path, and that each output's folder exists (it is created) and takes a new file.
/// `inputs` are files or folders; those that do not exist are ignored. Each output is
/// `(what, path)`, `what` naming it in errors (e.g. `--report`).
///
/// # Errors
/// [`OutputError`] naming the output and what to do.
pub fn check_outputs(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<(), OutputError> {
    let inputs: Vec<(PathBuf, &Path)> = inputs
        .iter()
        .filter(|p| p.exists())
        .map(|p| (normalize(p), *p))
        .collect();
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for (what, out) in outputs {
        let o = normalize(out);
        for (i, given) in &inputs {
            if o == *i || (i.is_dir() && o.starts_with(i)) {
                return Err(OutputError::OverwritesInput {
                    what: what.to_string(),
                    output: out.to_path_buf(),
                    input: given.to_path_buf(),
                });
            }
        }
        if let Some((_, other)) = seen.iter().find(|(p, _)| *p == o) {
            return Err(OutputError::SameOutput {
                what: other.to_string(),
                other: what.to_string(),
                output: out.to_path_buf(),
            });
        }
        seen.push((o.clone(), what));
        if o.is_dir() {
            return Err(OutputError::IsDir {
                what: what.to_string(),
                output: out.to_path_buf(),
            });
        }
        let not_writable = |source| OutputError::NotWritable {
            what: what.to_string(),
            output: out.to_path_buf(),
            source,
        };
        let dir = o.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(not_writable)?;
        let probe = temp_path(&o);
        // Replacing the output needs only its folder (the file is renamed onto it).
        File::create(&probe).map_err(not_writable)?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// A temporary path beside `target`, unique in this process: `.<name>.tmp-<pid>-<n>`.
pub fn temp_path(target: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    match target.parent() {
        Some(d) => d.join(tmp),
        None => PathBuf::from(tmp),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, renamed onto it.
/// On any failure the temporary file is removed and `path` is left as it was. Creates the
/// parent folder.
///
/// # Errors
/// The I/O error, with the path in its message.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_may_not_be_or_lie_inside_inputs() {
        let d = tempfile::tempdir().unwrap();
        let bag = d.path().join("bag");
        std::fs::create_dir(&bag).unwrap();
        let file = bag.join("x.mcap");
        std::fs::write(&file, b"data").unwrap();
        let inputs = [bag.as_path()];
        let e = check_outputs(&inputs, &[("--out", &file)]).unwrap_err();
        assert!(matches!(e, OutputError::OverwritesInput { .. }), "{e}");
        let inside = bag.join("new.json");
        assert!(check_outputs(&inputs, &[("--report", &inside)]).is_err());
        let dotted = d.path().join("other/../bag/x.mcap");
        assert!(check_outputs(&[file.as_path()], &[("--plot", &dotted)]).is_err());
        // A link to the input is the input.
        let link = d.path().join("link.mcap");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_outputs(&[file.as_path()], &[("--out", &link)]).is_err());
        let ok = d.path().join("out/report.json");
        check_outputs(&inputs, &[("--report", &ok)]).unwrap();
        assert!(ok.parent().unwrap().is_dir(), "the folder is made");
        assert!(!ok.exists(), "no file is left by the check");
        let e = check_outputs(&inputs, &[("--report", &ok), ("--plot", &ok)]).unwrap_err();
        assert!(matches!(e, OutputError::SameOutput { .. }), "{e}");
        assert!(std::fs::read_dir(d.path().join("out"))
            .unwrap()
            .next()
            .is_none());
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    }

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // A target that cannot be replaced (a folder) fails and leaves no temporary file.
        let dir = d.path().join("sub");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), b"k").unwrap();
        assert!(write_atomic(&dir, b"x").is_err());
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
