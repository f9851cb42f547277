//! The documentation holds together: every relative Markdown link in `README.md` and
//! `docs/*.md` points at a file or folder that exists (relative to the linking file), every
//! `#fragment` into a Markdown file names one of its headings (GitHub's anchor rules), and the
//! README stays short (at most 16,000 bytes; the details live in `docs/`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

const README_MAX_BYTES: usize = 16_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The text outside fenced code blocks, with inline code spans blanked (links inside code are
/// not links).
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                out.push(' ');
            } else {
                out.push(if in_code { ' ' } else { c });
            }
        }
        out.push('\n');
    }
    out
}

/// Link targets `](target)` (without an optional `"title"`; `<...>` unwrapped), with their line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in prose(text).lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let raw = rest[..end].trim();
            let target = match raw.strip_prefix('<') {
                Some(r) => r.split('>').next().unwrap_or(""),
                None => raw.split_whitespace().next().unwrap_or(""),
            };
            found.push((n + 1, target.to_string()));
            rest = &rest[end..];
        }
    }
    found
}

/// GitHub's heading anchors: lower case; letters, digits, `-` and `_` kept, spaces to `-`,
/// everything else dropped; repeated headings get `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut name = slug.clone();
        let mut k = 0;
        while seen.contains(&name) {
            k += 1;
            name = format!("{slug}-{k}");
        }
        seen.insert(name);
    }
    seen
}

fn is_external(target: &str) -> bool {
    let t = target.to_ascii_lowercase();
    t.starts_with("http://") || t.starts_with("https://") || t.starts_with("mailto:")
}

#[test]
fn every_relative_link_resolves() {
    let root = repo_root();
    let files = markdown_files(&root);
    assert!(
        files.len() > 1,
        "expected README.md and pages in docs/, found {files:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, target) in links(&text) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            checked += 1;
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a file has a folder").join(path)
            };
            if !resolved.exists() {
                broken.push(format!(
                    "{rel}:{line}: {target} (no {})",
                    resolved.display()
                ));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if resolved.extension().is_some_and(|x| x == "md") {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&target_text).contains(fragment) {
                    broken.push(format!(
                        "{rel}:{line}: {target} (no heading with anchor #{fragment})"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no relative links found at all: is the scan broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn readme_stays_short() {
    let len = std::fs::metadata(repo_root().join("README.md"))
        .expect("README.md")
        .len() as usize;
    assert!(
        len <= README_MAX_BYTES,
        "README.md is {len} bytes (limit {README_MAX_BYTES}): move details into docs/ and link them"
    );
}

#[test]
fn the_link_scanner_sees_links_and_skips_code() {
    let md =
        "see [a](docs/a.md#x-y) and `[b](nope.md)`\n```\n[c](nope2.md)\n```\n[d](<e f.md> \"t\")";
    let l: Vec<String> = links(md).into_iter().map(|(_, t)| t).collect();
    assert_eq!(l, vec!["docs/a.md#x-y".to_string(), "e f.md".to_string()]);
    let a = anchors(
        "# Top\n## 8. Transports: pure-Rust DDS or r2r\n## Bag replay, `play` (main job)\n## Top\n",
    );
    assert!(a.contains("8-transports-pure-rust-dds-or-r2r"));
    assert!(a.contains("bag-replay-play-main-job"));
    assert!(a.contains("top-1"));
}
