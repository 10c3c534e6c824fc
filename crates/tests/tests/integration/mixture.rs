//! The mixture as one object (`smalltalk-mixture`): `mixture.json` round-trips; every piece
//! that does not belong is refused naming the member, the file and both values — by `check`,
//! by the loaded `Mixture` (and its generation), by eval, and when writing the manifest; a
//! one-expert cache answers for every expert; four threads answer as one.

use std::path::{Path, PathBuf};

use smalltalk_data::Split;
use smalltalk_eval::{eval_run, EvalData, EvalOptions};
use smalltalk_lm::SamplingOptions;
use smalltalk_mixture::{
    build_manifest, check, write_run_manifest, CacheLimits, GenerateOptions, Mixture,
    MixtureManifest, MixtureSources, OpenOptions, WriteOptions,
};
use smalltalk_stage::checksum::hash_file;
use smalltalk_stage::RunLayout;
use smalltalk_tests::domain_text;

use crate::lm_util::B;
use crate::pipeline_api::tiny_run;
use crate::reliability::copy_dir;

/// A copy of the shared run (the fixture itself is never changed).
fn copy_of_run(tmp: &Path) -> RunLayout {
    let to = tmp.join("run");
    copy_dir(tiny_run().layout.root(), &to);
    RunLayout::new(to)
}

fn manifest_of(run: &RunLayout) -> MixtureManifest {
    MixtureManifest::load(run.root()).unwrap().0
}

fn open(run: &RunLayout, allow_unfinished: bool) -> Result<Mixture<B>, String> {
    let options = OpenOptions {
        allow_unfinished,
        ..OpenOptions::default()
    };
    Mixture::<B>::open(run.root(), &options, &Default::default()).map_err(|e| e.to_string())
}

fn eval(run: &RunLayout, allow_unfinished: bool) -> Result<smalltalk_eval::EvalReport, String> {
    let options = EvalOptions {
        prefixes: vec![4],
        seed: 0,
        allow_unfinished,
    };
    let data = run.data();
    let data = EvalData::at(&data, Split::Validation);
    eval_run::<B>(run.root(), &data, &options, &Default::default()).map_err(|e| e.to_string())
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        prefix: Some(8),
        max_tokens,
        sampling: SamplingOptions {
            temperature: 0.0,
            ..SamplingOptions::default()
        },
    }
}

/// Prompts of both domains (the tiny routers send each domain to its own expert).
fn prompts() -> Vec<String> {
    (0..6).map(|i| domain_text(i % 2, 500 + i)).collect()
}

/// Generate for every prompt; the error text of the first failure.
fn generate_all(mixture: &Mixture<B>) -> Result<Vec<(String, Vec<u32>)>, String> {
    prompts()
        .iter()
        .map(|p| {
            let g = mixture
                .generate(p, &greedy(4), |_| {})
                .map_err(|e| e.to_string())?;
            Ok((g.routing.member, g.tokens))
        })
        .collect()
}

/// Every reader refuses the run, each error holding every one of `says`.
fn refused_everywhere(run: &RunLayout, says: &[&str]) {
    let has_all = |what: &str, err: String| {
        for s in says {
            assert!(err.contains(s), "{what}: `{s}` not in: {err}");
        }
    };
    has_all("check", check(run.root(), false).unwrap_err().to_string());
    let loaded = open(run, false).and_then(|m| generate_all(&m).map(|_| ()));
    has_all("Mixture (open + generate)", loaded.unwrap_err());
    has_all("eval", eval(run, false).unwrap_err());
}

/// The one weights file of `member`'s expert.
fn expert_weights(run: &RunLayout, member: &str) -> PathBuf {
    let m = manifest_of(run);
    smalltalk_mixture::manifest::resolve(run.root(), &m.member(member).unwrap().expert.weights)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn the_manifest_round_trips_and_describes_the_run() {
    let run = &tiny_run().layout;
    let text = std::fs::read_to_string(run.mixture()).unwrap();
    let m = MixtureManifest::from_json(&text).unwrap();
    assert_eq!(
        m.to_json(),
        text,
        "the manifest does not round-trip exactly"
    );
    assert_eq!(m.names(), ["expert-00", "expert-01"]);
    assert_eq!(m.routing.method, "em");
    assert_eq!(m.tokenizer.file, "routers/tokenizer.json");
    assert_eq!(
        m.tokenizer.hash,
        hash_file(&run.routers().join("tokenizer.json")).unwrap()
    );
    let dense: Vec<&str> = m.dense.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(dense, ["dense", "dense-steps"]);
    for member in &m.members {
        let e = &member.expert;
        assert!(e.finished && e.step == e.steps && e.step > 0, "{member:?}");
        assert_eq!(e.dir, format!("experts/{}", member.name));
        assert_eq!(e.checksum, hash_file(&run.root().join(&e.weights)).unwrap());
        assert_eq!(
            e.data.partition.as_deref(),
            Some(m.partition.fingerprint.as_str())
        );
        let r = member.router.as_ref().unwrap();
        assert_eq!(
            r.data.routers.as_deref(),
            Some(m.routing.fingerprint.as_str())
        );
        assert!(r.parameters > 0 && e.parameters > r.parameters / 100);
        assert_eq!(member.score_offset, 0.0);
    }
    // Writing again gives the same manifest (the pipeline rewrites it on every run).
    let again = build_manifest(
        &MixtureSources::of_run(run),
        &run.mixture(),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(again, m);
    let report = check(run.root(), false).unwrap();
    assert_eq!((report.members, report.dense), (2, 2));
    assert!(report.checksums >= 1 + 2 * 3 + 2, "{report:?}");
}

#[test]
fn a_tampered_weights_file_is_refused_with_both_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let weights = expert_weights(&run, "expert-01");
    let recorded = manifest_of(&run).members[1].expert.checksum.clone();
    let mut bytes = std::fs::read(&weights).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let actual = hash_file(&weights).unwrap();
    let file = weights.display().to_string();
    refused_everywhere(&run, &["expert-01", &file, "checksum", &recorded, &actual]);
    // The routers and the untouched expert still serve; only expert-01 is refused.
    let mixture = open(&run, false).unwrap();
    assert!(mixture.expert("expert-00").is_ok());
    let err = mixture.expert("expert-01").unwrap_err().to_string();
    assert!(err.contains(&actual), "{err}");
}

#[test]
fn a_missing_member_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let weights = expert_weights(&run, "expert-00");
    std::fs::remove_file(&weights).unwrap();
    refused_everywhere(
        &run,
        &["expert-00", &weights.display().to_string(), "missing"],
    );
}

#[test]
fn a_member_of_another_tokenizer_or_partition_is_refused_with_both_values() {
    for (input, member) in [("tokenizer", "expert-01"), ("partition", "expert-00")] {
        let tmp = tempfile::tempdir().unwrap();
        let run = copy_of_run(tmp.path());
        let stage = run.experts().join(member).join("stage.json");
        let other = "xxh3:0123456789abcdef0123456789abcdef";
        let mut recorded = String::new();
        edit_json(&stage, |v| {
            recorded = v["inputs"][input].as_str().unwrap().to_string();
            v["inputs"][input] = other.into();
        });
        let file = stage.display().to_string();
        let says = [member, file.as_str(), input, recorded.as_str(), other];
        refused_everywhere(&run, &says);
        // Writing the manifest refuses it too.
        let err = write_run_manifest(&run, &WriteOptions::default())
            .unwrap_err()
            .to_string();
        for s in says {
            assert!(err.contains(s), "write: `{s}` not in: {err}");
        }
    }
}

#[test]
fn a_routers_tokenizer_that_differs_from_the_record_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let tok = run.routers().join("tokenizer.json");
    let recorded = manifest_of(&run).tokenizer.hash;
    let mut text = std::fs::read_to_string(&tok).unwrap();
    text.push('\n');
    std::fs::write(&tok, text).unwrap();
    let actual = hash_file(&tok).unwrap();
    let file = tok.display().to_string();
    refused_everywhere(&run, &["routers", &file, "tokenizer", &recorded, &actual]);
}

#[test]
fn an_unfinished_expert_is_refused_unless_accepted_and_then_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let weights = expert_weights(&run, "expert-01");
    let step = manifest_of(&run).members[1].expert.step;
    // Its schedule asked for 10 more steps than it ran (as a SIGTERM checkpoint leaves it).
    edit_json(&weights.with_file_name("state.json"), |v| {
        let total = v["train"]["total_steps"].as_u64().unwrap();
        v["train"]["total_steps"] = (total + 10).into();
    });
    let steps = step + 10;
    let file = weights.display().to_string();
    let of = format!("at step {step} of the {steps}");
    refused_everywhere(&run, &["expert-01", &file, &of, "--allow-unfinished"]);
    let err = write_run_manifest(&run, &WriteOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expert-01") && err.contains(&of), "{err}");
    // Accepted explicitly: recorded per member, readers still need to be asked.
    let allow = WriteOptions {
        allow_unfinished: true,
        ..WriteOptions::default()
    };
    let m = write_run_manifest(&run, &allow).unwrap();
    let e = &m.members[1].expert;
    assert!(!e.finished && e.allow_unfinished && (e.step, e.steps) == (step, steps));
    assert!(m.members[0].expert.finished && !m.members[0].expert.allow_unfinished);
    let report = check(run.root(), false).unwrap();
    assert_eq!(report.unfinished, ["expert-01"]);
    assert!(open(&run, false).unwrap_err().contains("unfinished"));
    assert!(eval(&run, false).unwrap_err().contains("expert-01"));
    assert!(generate_all(&open(&run, true).unwrap()).is_ok());
    let report = eval(&run, true).unwrap();
    assert_eq!(
        report.unfinished,
        [format!("expert-01 (step {step} of {steps})")]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["unfinished"][0],
        format!("expert-01 (step {step} of {steps})")
    );
}

#[test]
fn a_run_without_a_manifest_names_the_command_that_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    std::fs::remove_file(run.mixture()).unwrap();
    let err = open(&run, false).unwrap_err();
    assert!(err.contains("smalltalk mixture write --run"), "{err}");
    assert!(eval(&run, false)
        .unwrap_err()
        .contains("smalltalk mixture write"));
}

#[test]
fn a_one_expert_cache_answers_for_every_expert() {
    let run = &tiny_run().layout;
    let unbounded = open(run, false).unwrap();
    let one = OpenOptions {
        cache: CacheLimits {
            max_experts: Some(1),
            max_bytes: None,
        },
        ..OpenOptions::default()
    };
    let small = Mixture::<B>::open(run.root(), &one, &Default::default()).unwrap();
    let want = generate_all(&unbounded).unwrap();
    let got = generate_all(&small).unwrap();
    assert_eq!(got, want, "a bounded cache changed an answer");
    let members: std::collections::BTreeSet<&str> = want.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(members.len(), 2, "the prompts reach every expert: {want:?}");
    let (s, u) = (small.cache_stats(), unbounded.cache_stats());
    assert_eq!((u.loads, u.evictions, u.resident), (2, 0, 2), "{u:?}");
    assert!(s.evictions > 0 && s.loads > 2 && s.resident == 1, "{s:?}");
    assert_eq!(s.loads + s.hits, u.loads + u.hits);
}

#[test]
fn four_threads_sharing_one_mixture_answer_as_one_thread() {
    fn shared<T: Send + Sync>() {}
    shared::<Mixture<B>>();
    let run = &tiny_run().layout;
    let mixture = open(run, false).unwrap();
    let alone = generate_all(&mixture).unwrap();
    let answers: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| generate_all(&mixture).unwrap()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for a in answers {
        assert_eq!(a, alone);
    }
    // A batch groups the prompts by expert and gives each prompt its own answer.
    let prompts = prompts();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut pieces = vec![String::new(); refs.len()];
    let batch = mixture
        .generate_batch(&refs, &greedy(4), |i, p| pieces[i].push_str(p))
        .unwrap();
    for ((g, (member, tokens)), piece) in batch.iter().zip(&alone).zip(&pieces) {
        assert_eq!((&g.routing.member, &g.tokens), (member, tokens));
        assert_eq!(&g.completion, piece);
    }
}

#[test]
fn score_offsets_move_the_routing_and_bad_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_run(tmp.path());
    let mut m = manifest_of(&run);
    let text = domain_text(0, 900);
    let base = open(&run, false).unwrap().route(&text, Some(8)).unwrap();
    let other = 1 - base.index;
    m.members[other].score_offset = 1e4;
    m.save(&run.mixture()).unwrap();
    let mixture = open(&run, false).unwrap();
    let moved = mixture.route(&text, Some(8)).unwrap();
    assert_eq!(moved.index, other);
    let diff = moved.scores[other].score - base.scores[other].score;
    assert!((diff - 1e4).abs() < 1.0, "{diff}");
    // The mixture's log-likelihood of a text is its chosen expert's.
    let scored = mixture.score(&[text.as_str()]).unwrap();
    assert_eq!(scored[0].routing.member, moved.member);
    assert!(scored[0].logprob < 0.0 && scored[0].targets > 0);

    let err =
        |p: &str, o: GenerateOptions| mixture.generate(p, &o, |_| {}).unwrap_err().to_string();
    assert!(err("", greedy(4)).contains("empty"));
    let long = (0..3000)
        .map(|i| domain_text(i % 2, i))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err(&long, greedy(4)).contains("context"),
        "{}",
        err(&long, greedy(4))
    );
    assert!(err(&text, greedy(0)).contains("max-tokens"));
    assert!(err(&text, greedy(5_000_000)).contains("max-tokens"));
    let mut nan = greedy(4);
    nan.sampling.temperature = f64::NAN;
    assert!(err(&text, nan).contains("temperature"));
}
