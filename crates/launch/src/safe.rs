//! What may reach a generated script. Every value from the flags, the config or a path that a
//! launcher writes into a batch script, a Job or `apply.sh` is either
//! - **validated** against what Slurm or Kubernetes accept (names, times, memory, namespaces,
//!   images, `#SBATCH` lines) and refused otherwise, naming the key; or
//! - **quoted** for the shell ([`shell_quote`]: POSIX single quotes, which neither `bash` nor
//!   `sh` expand), when it is an argument of a command (paths, the binary, the backend).
//!
//! `#SBATCH` lines are not shell (bash reads them as comments) but sbatch parses them up to the
//! first line that is not a comment, so a value there must hold no line break; the one path
//! written there (the log file, under the run folder) is double-quoted for sbatch, which takes
//! `"…"` as one argument, and must hold no `"`, `\` or `%` (sbatch's filename patterns).

use std::path::Path;

use crate::cluster::{ClusterConfig, Resources};
use crate::error::{LaunchError, Result};

/// `arg` quoted for a POSIX shell (bash or sh) when it needs it: safe characters are kept
/// as they are, anything else is single-quoted (a `'` becomes `'\''`), so the shell reads
/// exactly `arg` as one word and expands nothing in it. A NUL byte cannot be passed to a
/// program and is refused by [`check_path`] / [`check_arg`] first.
pub fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.into()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn refuse(key: &str, value: &str, rule: &str) -> LaunchError {
    LaunchError::Unsafe {
        key: key.into(),
        value: value.into(),
        rule: rule.into(),
    }
}

/// An argument that is quoted into a script: any text but a NUL byte.
pub fn check_arg(key: &str, value: &str) -> Result<()> {
    match value.contains('\0') {
        true => Err(refuse(
            key,
            value,
            "a NUL byte cannot be passed to a program",
        )),
        false => Ok(()),
    }
}

/// A path that is quoted into a script: valid UTF-8 (it is written as text) with no NUL byte.
pub fn check_path<'a>(key: &str, path: &'a Path) -> Result<&'a str> {
    let text = path.to_str().ok_or_else(|| {
        refuse(
            key,
            &path.to_string_lossy(),
            "the path is not valid UTF-8 and cannot be written into a script",
        )
    })?;
    check_arg(key, text)?;
    Ok(text)
}

/// The run folder of a Slurm run: it is written into `#SBATCH --output=` (double-quoted), so
/// no control characters (a line break would end the directive), no `"` or `\` (sbatch's
/// quoting) and no `%` (sbatch's filename patterns).
pub fn check_slurm_run(key: &str, path: &Path) -> Result<()> {
    let text = check_path(key, path)?;
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() || matches!(c, '"' | '\\' | '%'))
    {
        return Err(refuse(
            key,
            text,
            &format!(
                "the run folder is written into `#SBATCH --output=`, which cannot hold {c:?} \
                 (no control characters, `\"`, `\\` or `%`)"
            ),
        ));
    }
    Ok(())
}

fn non_empty_and(value: &str, max: usize, ok: impl Fn(char) -> bool) -> bool {
    !value.is_empty() && value.len() <= max && value.chars().all(ok)
}

fn slurm_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A Slurm partition: a name of letters, digits, `_`, `-`, `.`, or a comma-separated list
/// of them (sbatch takes the first that can run the job).
pub fn check_partition(key: &str, value: &str) -> Result<()> {
    let ok = value.len() <= 1024
        && value
            .split(',')
            .all(|name| non_empty_and(name, 256, slurm_name_char));
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Slurm partition is a name of ASCII letters, digits, `_`, `-` and `.` (or a \
             comma-separated list of them)",
        )),
    }
}

/// A Slurm account: letters, digits, `_`, `-`, `.`.
pub fn check_account(key: &str, value: &str) -> Result<()> {
    match non_empty_and(value, 256, slurm_name_char) {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Slurm account is a name of ASCII letters, digits, `_`, `-` and `.`",
        )),
    }
}

/// A Slurm time limit: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, or
/// `UNLIMITED` / `INFINITE`.
pub fn check_time(key: &str, value: &str) -> Result<()> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match value.to_ascii_lowercase().as_str() {
        "unlimited" | "infinite" => true,
        _ => {
            let (days, clock) = match value.split_once('-') {
                Some((d, rest)) => (Some(d), rest),
                None => (None, value),
            };
            let parts: Vec<&str> = clock.split(':').collect();
            // With or without days: one to three `:`-separated fields.
            days.is_none_or(digits) && parts.iter().all(|p| digits(p)) && parts.len() <= 3
        }
    };
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Slurm time limit is MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, UNLIMITED \
             or INFINITE",
        )),
    }
}

/// Slurm `--mem`: a whole number with an optional unit `K`, `M`, `G` or `T`.
pub fn check_slurm_memory(key: &str, value: &str) -> Result<()> {
    let number = value.trim_end_matches(|c: char| "KMGTkmgt".contains(c));
    let ok = value.len() - number.len() <= 1
        && !number.is_empty()
        && number.len() <= 18
        && number.bytes().all(|b| b.is_ascii_digit());
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "Slurm memory is a whole number with an optional unit K, M, G or T (e.g. 64G)",
        )),
    }
}

/// A Kubernetes memory quantity: a number with an optional suffix (`Ki`, `Mi`, `Gi`, `Ti`,
/// `Pi`, `Ei`, `k`, `M`, `G`, `T`, `P`, `E`), e.g. `64Gi`.
pub fn check_k8s_memory(key: &str, value: &str) -> Result<()> {
    let number = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ]
    .iter()
    .find_map(|s| value.strip_suffix(s))
    .unwrap_or(value);
    let (whole, frac) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
    match digits(whole) && digits(frac) {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Kubernetes memory quantity is a number with an optional suffix Ki, Mi, Gi, Ti, \
             Pi, Ei, k, M, G, T, P or E (e.g. 64Gi)",
        )),
    }
}

/// A free-form line of `[cluster] extra`: exactly one `#SBATCH` directive on one line,
/// `#SBATCH --option[=value]` or `#SBATCH -o[ value]`, the value one word of printable ASCII
/// with no quotes, `\` or `#` (sbatch's own quoting and comments).
pub fn check_sbatch_line(key: &str, line: &str) -> Result<()> {
    let value_ok = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '#'))
    };
    let option_ok = |rest: &str| -> bool {
        if let Some(long) = rest.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            non_empty_and(name, 64, |c| c.is_ascii_alphanumeric() || c == '-')
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.is_none_or(value_ok)
        } else if let Some(short) = rest.strip_prefix('-') {
            let mut chars = short.chars();
            let letter_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
            let value = chars.as_str();
            let value = value.strip_prefix(' ').unwrap_or(value);
            letter_ok && (value.is_empty() || value_ok(value))
        } else {
            false
        }
    };
    match line.strip_prefix("#SBATCH ").is_some_and(option_ok) {
        true => Ok(()),
        false => Err(refuse(
            key,
            line,
            "each line must be exactly one directive: `#SBATCH --option[=value]` or `#SBATCH \
             -o [value]`, on one line, the value one word of printable ASCII without quotes, \
             `\\` or `#`",
        )),
    }
}

/// A DNS-1123 label (Kubernetes namespaces): lowercase letters, digits and `-`, starting and
/// ending with a letter or digit, at most 63 characters.
pub fn check_dns_label(key: &str, value: &str) -> Result<()> {
    let ok = non_empty_and(value, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    }) && !value.starts_with('-')
        && !value.ends_with('-');
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Kubernetes name (DNS-1123 label): lowercase letters, digits and `-`, starting \
             and ending with a letter or digit, at most 63 characters",
        )),
    }
}

/// A DNS-1123 subdomain (Kubernetes object names such as a PersistentVolumeClaim): labels of
/// lowercase letters, digits and `-` joined by `.`, at most 253 characters.
pub fn check_dns_subdomain(key: &str, value: &str) -> Result<()> {
    let ok = value.len() <= 253
        && value.split('.').all(|l| {
            non_empty_and(l, 63, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            }) && !l.starts_with('-')
                && !l.ends_with('-')
        });
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a Kubernetes object name (DNS-1123 subdomain): lowercase letters, digits, `-` \
             and `.`, at most 253 characters",
        )),
    }
}

/// A container image reference: `[registry/]path[:tag][@digest]` of ASCII letters, digits,
/// `.`, `_`, `-`, `/`, `:`, `@`, starting with a letter or digit.
pub fn check_image(key: &str, value: &str) -> Result<()> {
    let ok = non_empty_and(value, 512, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')
    }) && value.starts_with(|c: char| c.is_ascii_alphanumeric());
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a container image is `[registry/]name[:tag][@digest]` of ASCII letters, digits, \
             `.`, `_`, `-`, `/`, `:` and `@`",
        )),
    }
}

/// A container mount path: absolute, no `:` (Kubernetes refuses it), no control characters.
pub fn check_mount(key: &str, value: &str) -> Result<()> {
    let ok = value.starts_with('/') && !value.chars().any(|c| c.is_control() || c == ':');
    match ok {
        true => Ok(()),
        false => Err(refuse(
            key,
            value,
            "a mount path is absolute, without `:` or control characters",
        )),
    }
}

impl Resources {
    fn check_slurm(&self, table: &str) -> Result<()> {
        if let Some(p) = &self.partition {
            check_partition(&format!("{table} partition"), p)?;
        }
        if let Some(t) = &self.time {
            check_time(&format!("{table} time"), t)?;
        }
        if let Some(m) = &self.memory {
            check_slurm_memory(&format!("{table} memory"), m)?;
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// Every `[cluster]` value a Slurm batch script holds, checked; the error names the key.
    pub fn check_slurm(&self) -> Result<()> {
        Resources {
            partition: self.partition.clone(),
            time: self.time.clone(),
            memory: self.memory.clone(),
            ..Default::default()
        }
        .check_slurm("[cluster]")?;
        if let Some(a) = &self.account {
            check_account("[cluster] account", a)?;
        }
        for (i, line) in self.extra.iter().enumerate() {
            check_sbatch_line(&format!("[cluster] extra[{i}]"), line)?;
        }
        for (name, r) in &self.stage {
            r.check_slurm(&format!("[cluster.stage.{name}]"))?;
        }
        Ok(())
    }

    /// Every `[cluster]` value a Kubernetes Job or `apply.sh` holds, checked; the error names
    /// the key.
    pub fn check_k8s(&self) -> Result<()> {
        check_image("[cluster] image", &self.image)?;
        check_dns_subdomain("[cluster] volume_claim", &self.volume_claim)?;
        check_mount("[cluster] mount", &self.mount)?;
        check_dns_label("[cluster] namespace", &self.namespace)?;
        if self.backoff_limit < 0 {
            return Err(refuse(
                "[cluster] backoff_limit",
                &self.backoff_limit.to_string(),
                "must be 0 or more",
            ));
        }
        if let Some(m) = &self.memory {
            check_k8s_memory("[cluster] memory", m)?;
        }
        for (name, r) in &self.stage {
            if let Some(m) = &r.memory {
                check_k8s_memory(&format!("[cluster.stage.{name}] memory"), m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_pass_and_their_lookalikes_are_refused() {
        for t in [
            "30",
            "30:00",
            "2:00:00",
            "1-0",
            "1-12:00",
            "7-00:00:00",
            "UNLIMITED",
        ] {
            check_time("t", t).unwrap();
        }
        for t in ["", "1:2:3:4", "1-", "-1", "a", "1 h", "2:00:00\n", "1-2-3"] {
            assert!(check_time("t", t).is_err(), "{t:?}");
        }
        for m in ["64G", "4000", "512m", "0"] {
            check_slurm_memory("m", m).unwrap();
        }
        for m in ["", "G", "64GB", "64 G", "-1", "1.5G"] {
            assert!(check_slurm_memory("m", m).is_err(), "{m:?}");
        }
        for m in ["64Gi", "64G", "1.5Gi", "1024"] {
            check_k8s_memory("m", m).unwrap();
        }
        for m in ["", "Gi", "64gb", "1.Gi", "64Gi;"] {
            assert!(check_k8s_memory("m", m).is_err(), "{m:?}");
        }
        for p in ["gpu", "gpu,cpu", "a100_80g.x"] {
            check_partition("p", p).unwrap();
        }
        for p in ["", "gpu,", "gpu cpu", "gp$u"] {
            assert!(check_partition("p", p).is_err(), "{p:?}");
        }
        for l in [
            "#SBATCH --qos=high",
            "#SBATCH --exclusive",
            "#SBATCH --constraint=a100&nvlink",
            "#SBATCH -C a100",
            "#SBATCH -N2",
        ] {
            check_sbatch_line("x", l).unwrap();
        }
        for l in [
            "",
            "--qos=high",
            "#SBATCH",
            "#SBATCH  --qos=high",
            "#SBATCH --qos=high --exclusive",
            "#SBATCH --qos=high\n#SBATCH --exclusive",
            "#SBATCH --qos=\"a b\"",
            "#SBATCH --qos=high # note",
            "#SBATCH --comment=é",
            "touch PWNED",
        ] {
            assert!(check_sbatch_line("x", l).is_err(), "{l:?}");
        }
        check_dns_label("n", "team-a").unwrap();
        for n in ["", "Team", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label("n", n).is_err(), "{n:?}");
        }
        check_dns_subdomain("n", "smalltalk-runs.v1").unwrap();
        assert!(check_dns_subdomain("n", "a..b").is_err());
        check_image("i", "ghcr.io/you/smalltalk:latest@sha256:0af").unwrap();
        assert!(check_image("i", "-x").is_err() && check_image("i", "a b").is_err());
        check_mount("m", "/runs").unwrap();
        assert!(check_mount("m", "runs").is_err() && check_mount("m", "/a:b").is_err());
    }

    #[test]
    fn the_error_names_the_key_and_shows_the_value_escaped() {
        let err = check_partition("--partition", "gpu\ntouch PWNED")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--partition"), "{err}");
        assert!(err.contains(r"gpu\ntouch PWNED"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    /// What bash reads from a quoted word: the same text, one word, nothing expanded.
    #[test]
    fn quoted_words_read_back_as_themselves_in_bash() {
        let words = [
            "plain",
            "my run",
            "it's",
            "",
            "a\nb",
            "$(touch PWNED)",
            "`touch PWNED`",
            "a;touch PWNED",
            "\"'\\$HOME",
            "日本語 ü",
            "-n",
            "*",
        ];
        let script: String = words
            .iter()
            .map(|w| format!("printf '%s\\0' {}\n", shell_quote(w)))
            .collect();
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success());
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, words);
    }
}
