//! Unit tests of the manifest, the paths it records and the generation options.

use std::path::Path;

use crate::manifest::*;
use crate::write::relative;
use crate::GenerateOptions;

fn record(dir: &str) -> ModelRecord {
    ModelRecord {
        dir: dir.into(),
        weights: format!("{dir}/checkpoints/step-00000010/model.safetensors"),
        checksum: "xxh3:00000000000000000000000000000001".into(),
        parameters: 1234,
        data: TrainedOn {
            partition: Some("xxh3:p".into()),
            ..TrainedOn::default()
        },
        step: 10,
        steps: 10,
        finished: true,
        allow_unfinished: false,
    }
}

fn manifest() -> MixtureManifest {
    MixtureManifest {
        format: MIXTURE_FORMAT.into(),
        routing: Routing {
            method: "em".into(),
            routers: "routers".into(),
            fingerprint: "xxh3:r".into(),
            prefix: 32,
            trained_prefix: 256,
        },
        tokenizer: TokenizerRecord {
            file: "routers/tokenizer.json".into(),
            hash: "xxh3:t".into(),
        },
        partition: PartitionRecord {
            dir: "partition".into(),
            fingerprint: "xxh3:p".into(),
        },
        members: vec![
            Member {
                name: "expert-00".into(),
                score_offset: 0.0,
                router: Some(record("routers/router-00")),
                expert: record("experts/expert-00"),
            },
            Member {
                name: "expert-01".into(),
                score_offset: -0.25,
                router: Some(record("routers/router-01")),
                expert: record("experts/expert-01"),
            },
        ],
        dense: vec![NamedModel {
            name: "dense".into(),
            model: record("experts/dense"),
        }],
    }
}

#[test]
fn the_manifest_round_trips_exactly() {
    let m = manifest();
    let json = m.to_json();
    let back = MixtureManifest::from_json(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.to_json(), json);
    assert!(
        json.contains("\"format\": \"smalltalk-mixture/2\""),
        "{json}"
    );
}

#[test]
fn bad_manifests_are_refused_with_the_reason() {
    let mut m = manifest();
    m.members[1].name = "expert-00".into();
    let err = MixtureManifest::from_json(&m.to_json()).unwrap_err();
    assert!(err.contains("`expert-00` is listed twice"), "{err}");
    let mut m = manifest();
    m.format = "smalltalk-mixture/1".into();
    let err = MixtureManifest::from_json(&m.to_json()).unwrap_err();
    assert!(err.contains("smalltalk-mixture/1"), "{err}");
    let mut m = manifest();
    m.members.clear();
    assert!(MixtureManifest::from_json(&m.to_json()).is_err());
}

#[test]
fn a_missing_manifest_names_the_command_that_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = MixtureManifest::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("smalltalk mixture write --run"), "{err}");
    assert!(err.contains("mixture.json"), "{err}");
}

#[test]
fn paths_are_recorded_relative_to_the_manifest() {
    assert_eq!(
        relative(Path::new("/a/run"), Path::new("/a/run/routers")),
        "routers"
    );
    assert_eq!(
        relative(Path::new("/a/run/x"), Path::new("/a/run/routers")),
        "../routers"
    );
    assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
    assert_eq!(
        resolve(Path::new("/a/run"), "experts/expert-00"),
        Path::new("/a/run/experts/expert-00")
    );
}

#[test]
fn bad_generation_options_are_refused_naming_the_option() {
    let ok = GenerateOptions::default();
    ok.validate().unwrap();
    for (opts, says) in [
        (
            GenerateOptions {
                max_tokens: 0,
                ..ok.clone()
            },
            "max-tokens",
        ),
        (
            GenerateOptions {
                max_tokens: 2_000_000,
                ..ok.clone()
            },
            "max-tokens",
        ),
        (
            GenerateOptions {
                prefix: Some(1),
                ..ok.clone()
            },
            "routing prefix",
        ),
    ] {
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    let mut nan = ok.clone();
    nan.sampling.temperature = f64::NAN;
    assert!(nan
        .validate()
        .unwrap_err()
        .to_string()
        .contains("temperature"));
    let mut p = ok;
    p.sampling.top_p = 0.0;
    assert!(p.validate().unwrap_err().to_string().contains("top-p"));
}
