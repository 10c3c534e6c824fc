//! Comparing two output folders file by file, as the crash test needs: the same relative
//! paths, equal contents; `.lock` files skipped (they hold a PID); JSON and JSON-lines files
//! compared without their timing keys (`seconds`, `elapsed_s`, `tokens_per_s`, `eta_s`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Keys whose values are wall-clock measurements, removed from JSON before comparing.
const TIMING_KEYS: [&str; 4] = ["seconds", "elapsed_s", "tokens_per_s", "eta_s"];

/// Every path under `dir` (relative, `/`-separated; folders end with `/`), `.lock` files left
/// out.
fn listing(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let (mut found, mut stack) = (BTreeMap::new(), vec![dir.to_path_buf()]);
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            let rel = path.strip_prefix(dir)?.to_string_lossy().into_owned();
            if path.is_dir() {
                found.insert(format!("{rel}/"), path.clone());
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                found.insert(rel, path);
            }
        }
    }
    Ok(found)
}

/// The differences between the reference folder and a rerun's folder (`None`: none): every
/// leftover temporary and every path on one side only (at most 8 in all), then the first
/// differing file among those on both sides.
pub fn compare(reference: &Path, got: &Path) -> Result<Option<String>> {
    let (want, have) = (listing(reference)?, listing(got)?);
    let mut found: Vec<String> = Vec::new();
    for (side, list) in [("the reference", &want), ("the rerun's folder", &have)] {
        let temps = list.keys().filter(|p| p.contains(".tmp-"));
        found.extend(temps.map(|p| format!("{p}: leftover temporary in {side}")));
    }
    let only = |a: &BTreeMap<String, PathBuf>, b: &BTreeMap<String, PathBuf>, what: &str| {
        let only = a.keys().filter(|p| !b.contains_key(*p));
        only.map(|p| format!("{p}: {what}")).collect::<Vec<_>>()
    };
    found.extend(only(&want, &have, "missing after the crash and rerun"));
    found.extend(only(&have, &want, "not in the reference"));
    found.truncate(8);
    let listed = found.len();
    for (rel, path) in want.iter().filter(|(p, _)| !p.ends_with('/')) {
        if let Some(other) = have.get(rel) {
            if let Some(d) = file_difference(path, other)? {
                found.push(format!("{rel}: {d}"));
                break;
            }
        }
    }
    if listed > 0 && found.len() == listed {
        found.push("(every file on both sides is equal)".into());
    }
    Ok((!found.is_empty()).then(|| found.join("\n")))
}

/// How two files differ: JSON and JSON lines compared without their timing keys, other text
/// by line, anything else by byte.
fn file_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    let (x, y) = (fs::read(a)?, fs::read(b)?);
    if x == y {
        return Ok(None);
    }
    let (Ok(xs), Ok(ys)) = (std::str::from_utf8(&x), std::str::from_utf8(&y)) else {
        let at = x.iter().zip(&y).position(|(p, q)| p != q);
        let (at, lens) = (at.unwrap_or(x.len().min(y.len())), (x.len(), y.len()));
        return Ok(Some(format!(
            "bytes differ from offset {at} ({lens:?} bytes)"
        )));
    };
    let ext = a.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let normal = |text: &str| -> Vec<String> {
        let json = |t: &str| serde_json::from_str::<Value>(t).ok().map(strip);
        match (ext, json(text)) {
            ("json", Some(v)) => serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect(),
            ("jsonl", _) => text
                .lines()
                .map(|l| json(l).map_or(l.to_string(), |v| v.to_string()))
                .collect(),
            _ => text.lines().map(String::from).collect(),
        }
    };
    let (p, q) = (normal(xs), normal(ys));
    let Some(i) = (0..p.len().max(q.len())).find(|&i| p.get(i) != q.get(i)) else {
        return Ok(None);
    };
    let show = |l: Option<&String>| -> String {
        l.map_or("(no line)".into(), |l| l.chars().take(300).collect())
    };
    Ok(Some(format!(
        "first differing line {} ({} vs {} lines)\n  reference: {}\n  rerun:     {}",
        i + 1,
        p.len(),
        q.len(),
        show(p.get(i)),
        show(q.get(i))
    )))
}

/// `value` without the timing keys, at any depth.
fn strip(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !TIMING_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keys_and_locks_are_ignored_and_temporaries_extra_files_and_lines_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, secs, lock) in [(&a, 1.5, "1"), (&b, 2.5, "2")] {
            fs::create_dir_all(d.join("sub")).unwrap();
            let line = format!("{{\"step\":1,\"m\":{{\"elapsed_s\":{secs}}}}}\n");
            fs::write(d.join("sub/metrics.jsonl"), line.repeat(2)).unwrap();
            fs::write(
                d.join("s.json"),
                format!("{{\"seconds\": {secs}, \"n\": 3}}"),
            )
            .unwrap();
            fs::write(d.join(".lock"), lock).unwrap();
        }
        assert_eq!(compare(&a, &b).unwrap(), None);
        fs::write(b.join("s.json.tmp-1-0"), "").unwrap();
        let d = compare(&a, &b).unwrap().unwrap();
        assert!(d.starts_with("s.json.tmp-1-0: leftover temporary"), "{d}");
        assert!(d.ends_with("(every file on both sides is equal)"), "{d}");
        fs::remove_file(b.join("s.json.tmp-1-0")).unwrap();
        fs::write(b.join("sub/metrics.jsonl"), "{\"step\":1}\n{\"step\":2}\n").unwrap();
        let d = compare(&a, &b).unwrap().unwrap();
        assert!(
            d.starts_with("sub/metrics.jsonl: first differing line 1"),
            "{d}"
        );
    }
}
