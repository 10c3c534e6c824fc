//! Hostile values in every field that reaches a generated script (issue 32, "generated
//! scripts"): each is either refused naming its key, or written so that `bash -n` / `sh -n`
//! passes, the `#SBATCH` header is one sbatch argument per line, and running the scripts with
//! stub `srun`, `scontrol`, `sbatch`, `squeue`, `kubectl` and `smalltalk` on the PATH gives
//! those programs exactly the intended arguments and runs nothing else (a canary `PWNED`
//! never appears).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::StageName;
use crate::slurm::STOPPED_STATUS;
use crate::LaunchRequest;

const HOSTILE: &[&str] = &[
    "gpu\ntouch PWNED",
    "x\rtouch PWNED",
    "a;touch PWNED",
    "a && touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a'b\"c'$(touch PWNED)'",
    "a\\\"; touch PWNED; #",
    "my run",
    "日本語 ü",
    "%j%x",
    "--qos=high\n#SBATCH --exclusive",
    "#SBATCH --qos=x\ntouch PWNED",
    "",
];

/// Where a hostile value goes.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// `--partition` / `--time`.
    Flag(&'static str),
    /// A string key of `[cluster]`.
    Cluster(&'static str),
    /// A string key of `[cluster.stage.experts]`.
    Stage(&'static str),
    /// One line of `[cluster] extra`.
    Extra,
    /// The run folder's name.
    Run,
    /// A folder in the config's path.
    ConfigPath,
    /// A corpus file name.
    Corpus,
    /// A folder in the binary's path.
    Bin,
    /// The backend word.
    Backend,
}

const FIELDS: &[Field] = &[
    Field::Flag("partition"),
    Field::Flag("time"),
    Field::Cluster("partition"),
    Field::Cluster("account"),
    Field::Cluster("memory"),
    Field::Cluster("time"),
    Field::Cluster("image"),
    Field::Cluster("volume_claim"),
    Field::Cluster("mount"),
    Field::Cluster("namespace"),
    Field::Stage("partition"),
    Field::Stage("memory"),
    Field::Stage("time"),
    Field::Extra,
    Field::Run,
    Field::ConfigPath,
    Field::Corpus,
    Field::Bin,
    Field::Backend,
];

impl Field {
    /// The key an error about this field must name.
    fn key(self) -> String {
        match self {
            Field::Flag(f) => format!("--{f}"),
            Field::Cluster(k) => format!("[cluster] {k}"),
            Field::Stage(k) => format!("[cluster.stage.experts] {k}"),
            Field::Extra => "[cluster] extra[0]".into(),
            Field::Run => "RUN".into(),
            Field::ConfigPath => "--config".into(),
            Field::Corpus => "--corpus".into(),
            Field::Bin => "--bin".into(),
            Field::Backend => "--backend".into(),
        }
    }
}

/// One case's folder: the request, the stubs on the PATH and the stub log.
struct Case {
    root: PathBuf,
    request: LaunchRequest,
    bin: PathBuf,
    stubs: PathBuf,
    log: PathBuf,
    work: PathBuf,
}

const STUB: &str = "#!/bin/sh\n{ printf '%s\\0' \"$(basename \"$0\")\" \"$@\"; printf '\\036\\0'; } >> \"$STUB_LOG\"\n";

fn write_stub(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, STUB).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn case(root: &Path, field: Field, value: &str) -> Case {
    let stubs = root.join("stubs");
    for name in ["srun", "scontrol", "sbatch", "squeue", "kubectl"] {
        write_stub(&stubs.join(name));
    }
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cluster = toml::Table::new();
    let mut request = LaunchRequest {
        run: root.join("run"),
        config: root.join("cfg/run.toml"),
        corpus: vec![root.join("c.jsonl")],
        experts: 2,
        backend: "flex".into(),
        ..Default::default()
    };
    let mut bin = root.join("bin/smalltalk");
    match field {
        Field::Flag("partition") => request.partition = Some(value.into()),
        Field::Flag(_) => request.time = Some(value.into()),
        Field::Cluster(k) => {
            cluster.insert(k.into(), value.into());
        }
        Field::Stage(k) => {
            let own = toml::Table::from_iter([(k.to_string(), toml::Value::from(value))]);
            let stage = toml::Table::from_iter([("experts".to_string(), own.into())]);
            cluster.insert("stage".into(), stage.into());
        }
        Field::Extra => {
            cluster.insert("extra".into(), vec![toml::Value::from(value)].into());
        }
        Field::Run => request.run = root.join(format!("r{value}")),
        Field::ConfigPath => request.config = root.join(format!("cfg{value}/run.toml")),
        Field::Corpus => request.corpus.push(root.join(format!("{value}.jsonl"))),
        Field::Bin => bin = root.join(format!("bin{value}/smalltalk")),
        Field::Backend => request.backend = value.into(),
    }
    write_stub(&bin);
    let config = toml::Table::from_iter([("cluster".to_string(), cluster.into())]);
    std::fs::create_dir_all(request.config.parent().unwrap()).unwrap();
    std::fs::write(&request.config, toml::to_string(&config).unwrap()).unwrap();
    Case {
        log: root.join("stub.log"),
        root: root.into(),
        request,
        bin,
        stubs,
        work,
    }
}

impl Case {
    /// Run `program args` in the work folder with the stubs first on the PATH.
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = format!("{}:/usr/bin:/bin", self.stubs.display());
        let out = Command::new(program)
            .args(args)
            .current_dir(&self.work)
            .env("PATH", path)
            .env("STUB_LOG", &self.log)
            .env_remove("SLURM_JOB_ID")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The calls the stubs recorded since the last take: program name, then arguments.
    fn take_calls(&self) -> Vec<Vec<String>> {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        let text = String::from_utf8(bytes).unwrap();
        let mut calls = vec![Vec::new()];
        for word in text.split_terminator('\0') {
            match word {
                "\u{1e}" => calls.push(Vec::new()),
                w => calls.last_mut().unwrap().push(w.to_string()),
            }
        }
        calls.pop();
        calls
    }

    fn assert_no_canary(&self, what: &str) {
        fn walk(dir: &Path, what: &str) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                assert!(
                    e.file_name() != "PWNED",
                    "{what}: PWNED in {}",
                    dir.display()
                );
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), what);
                }
            }
        }
        walk(&self.root, what);
    }
}

/// One `#SBATCH` line as sbatch reads it (its `_get_argument`: whitespace ends the argument
/// unless quoted, `"…"` and `'…'` quote, `\` escapes, an unquoted `#` starts a comment): the
/// argument and whether anything but a comment follows it.
fn sbatch_argument(line: &str) -> (String, bool) {
    let line = line.trim_start();
    let mut arg = String::new();
    let (mut quote, mut escape) = (None, false);
    let mut rest = "";
    for (i, c) in line.char_indices() {
        if escape {
            escape = false;
        } else if c == '\\' {
            escape = true;
            continue;
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
                continue;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
            continue;
        } else if c == '#' {
            break;
        } else if c.is_whitespace() {
            rest = &line[i..];
            break;
        }
        arg.push(c);
    }
    let trailing = rest.trim_start();
    (arg, !trailing.is_empty() && !trailing.starts_with('#'))
}

fn check_slurm(case: &Case, label: &str) {
    let Ok(submitted) = case.request.slurm(&case.bin, true).map_err(|e| {
        let err = e.to_string();
        assert!(
            err.starts_with(&format!("{} = ", label_key(label))),
            "{label}: {err}"
        );
    }) else {
        return;
    };
    let (spec, _) = case.request.resolve().unwrap();
    assert_eq!(submitted.len(), StageName::ALL.len(), "{label}");
    let bin = case.bin.to_str().unwrap();
    for (_, script) in &submitted {
        let path = script.path.to_str().unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), script.text);
        case.run("bash", &["-n", path]);
        // The header: `#!`, then only `#SBATCH` lines, each exactly one sbatch argument.
        let mut lines = script.text.lines();
        assert_eq!(lines.next(), Some("#!/bin/bash"), "{label}");
        let header: Vec<&str> = lines.take_while(|l| l.starts_with("#SBATCH")).collect();
        let mut args = Vec::new();
        for l in &header {
            let (arg, more) = sbatch_argument(l.strip_prefix("#SBATCH").unwrap());
            assert!(!more, "{label}: two arguments in {l:?}");
            args.push(arg);
        }
        let after = script.text.lines().nth(header.len() + 1).unwrap();
        assert!(
            after.starts_with(&format!("# {}: written by", script.stage)),
            "{label}: the header ends early at {after:?}\n{}",
            script.text
        );
        let output = spec
            .run
            .join("slurm/logs")
            .join(crate::status::log_pattern(script.stage));
        assert!(
            args.contains(&format!("--output={}", output.display())),
            "{label}: {args:?}"
        );
        // Run it: every step reaches srun with exactly its words, and nothing else runs.
        case.run("bash", &[path]);
        let calls = case.take_calls();
        let stage = spec.stage(script.stage);
        let expected: Vec<Vec<String>> = stage
            .commands
            .iter()
            .map(|c| {
                let mut v = vec!["srun".to_string(), "--ntasks=1".into(), bin.into()];
                v.extend(c.iter().cloned());
                v
            })
            .collect();
        assert_eq!(calls, expected, "{label}: {}", script.text);
    }
    case.assert_no_canary(label);
}

fn check_k8s(case: &Case, label: &str) {
    let bin = case.bin.to_str().unwrap();
    let Ok(files) = case.request.k8s(bin).map_err(|e| {
        let err = e.to_string();
        assert!(
            err.starts_with(&format!("{} = ", label_key(label))),
            "{label}: {err}"
        );
    }) else {
        return;
    };
    let (spec, cluster) = case.request.resolve().unwrap();
    let apply = files.last().unwrap().to_str().unwrap();
    case.run("sh", &["-n", apply]);
    case.run("sh", &[apply]);
    let mut expected = Vec::new();
    for (file, stage) in files.iter().zip(spec.stages()) {
        let job: crate::k8s::Job =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = job.metadata.name.clone().unwrap();
        assert!(
            crate::safe::check_dns_subdomain("job", &name).is_ok(),
            "{name}"
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some(&*cluster.namespace));
        let file = file.file_name().unwrap().to_str().unwrap();
        expected.push(vec![
            "kubectl".into(),
            "apply".into(),
            "-f".into(),
            file.into(),
        ]);
        expected.push(
            [
                "kubectl",
                "wait",
                "--for=condition=complete",
                "--timeout=-1s",
                "-n",
                &cluster.namespace,
                &format!("job/{name}"),
            ]
            .map(String::from)
            .to_vec(),
        );
        // The container's command, run by sh: the binary gets exactly the stage's words.
        let calls_before = case.take_calls();
        let script = crate::k8s::container_script(&job).unwrap();
        case.run("sh", &["-n", "-c", &script]);
        case.run("sh", &["-c", &script]);
        let calls = case.take_calls();
        let words: Vec<Vec<String>> = stage
            .commands
            .iter()
            .map(|c| {
                let mut v = vec!["smalltalk".to_string()];
                v.extend(c.iter().cloned());
                v
            })
            .collect();
        assert_eq!(calls, words, "{label}: {script}");
        let log = case.log.clone();
        restore(&log, &calls_before);
    }
    assert_eq!(case.take_calls(), expected, "{label}");
    assert_eq!(
        serde_json::to_value(&*crate::k8s::jobs(&spec, &cluster, bin))
            .unwrap()
            .as_array()
            .unwrap()[3]["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"][0],
        STOPPED_STATUS
    );
    case.assert_no_canary(label);
}

/// Put recorded calls back into the stub log (the k8s check reads the container calls in
/// between the `kubectl` ones).
fn restore(log: &Path, calls: &[Vec<String>]) {
    let mut bytes = Vec::new();
    for c in calls {
        for w in c {
            bytes.extend_from_slice(w.as_bytes());
            bytes.push(0);
        }
        bytes.extend_from_slice(b"\x1e\0");
    }
    std::fs::write(log, bytes).unwrap();
}

fn label_key(label: &str) -> &str {
    label.split(" = ").next().unwrap()
}

#[test]
fn hostile_values_in_every_field_are_refused_naming_the_key_or_run_as_plain_words() {
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for &field in FIELDS {
        for value in HOSTILE {
            let label = format!("{} = {value:?}", field.key());
            for launcher in ["slurm", "k8s"] {
                let dir = tempfile::tempdir().unwrap();
                let c = case(dir.path(), field, value);
                let before = std::fs::read_dir(dir.path()).unwrap().count();
                match launcher {
                    "slurm" => check_slurm(&c, &label),
                    _ => check_k8s(&c, &label),
                }
                // A refused case writes nothing: no run folder appears.
                if !c.request.run.exists() {
                    *refused
                        .entry(format!("{launcher} {}", field.key()))
                        .or_default() += 1;
                    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
                }
            }
        }
    }
    // Names, times, memory, lines and namespaces are refused; paths and words are quoted.
    for key in [
        "slurm --partition",
        "slurm [cluster] extra[0]",
        "slurm [cluster.stage.experts] time",
        "k8s [cluster] namespace",
        "k8s [cluster] image",
    ] {
        assert_eq!(refused.get(key), Some(&HOSTILE.len()), "{key}: {refused:?}");
    }
    for key in ["slurm --corpus", "slurm --bin", "k8s RUN", "k8s --config"] {
        assert_eq!(refused.get(key), None, "{key}: {refused:?}");
    }
}

#[test]
fn a_run_folder_with_a_space_is_one_quoted_log_path() {
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), Field::Run, " with space");
    let scripts = c.request.slurm(&c.bin, true).unwrap();
    let run = c.request.resolve().unwrap().0.run;
    let text = &scripts[0].1.text;
    let want = format!(
        "#SBATCH --output=\"{}/slurm/logs/data-%j.out\"\n",
        run.display()
    );
    assert!(text.contains(&want), "{text}");
    assert!(
        text.contains("#SBATCH --job-name=smalltalk-r_with_space-data\n"),
        "{text}"
    );
    // The reproduction: a newline in --partition is refused, naming the flag.
    let mut request = c.request.clone();
    request.partition = Some("gpu\ntouch PWNED".into());
    let err = request.slurm(&c.bin, true).unwrap_err().to_string();
    assert!(
        err.starts_with("--partition = \"gpu\\ntouch PWNED\""),
        "{err}"
    );
}
