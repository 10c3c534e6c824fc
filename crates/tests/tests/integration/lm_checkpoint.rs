//! Weight files: round trip, corruption and mismatch are refused with the right error.

use std::path::Path;

use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::train::Checkpoint;
use smalltalk_lm::{Lm, LmConfig, LmError, NoopObserver, Trainer, VecSource};

use crate::lm_util::{dev, quick_train, random_tokens, tiny, to_vec, AB, B};

fn logits(model: &Lm<B>, toks: &[u32]) -> Vec<f32> {
    let ids: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
    let n = ids.len();
    to_vec(model.forward(Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [1, n]),
        &dev(),
    )))
}

/// A minimal hand-written safetensors file (F32 tensors, no metadata).
fn write_raw_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend(json);
    file.extend(vec![0u8; offset]);
    std::fs::write(path, file).unwrap();
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    for tie in [true, false] {
        let cfg = LmConfig {
            tie_embeddings: tie,
            init_std: 0.1,
            ..tiny(64)
        };
        let model = Lm::<B>::new(&cfg, 21, &dev()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        model.save_safetensors(&path).unwrap();
        assert_eq!(Lm::<B>::config_of_file(&path).unwrap(), cfg);
        let loaded = Lm::<B>::from_safetensors(&cfg, &path, &dev()).unwrap();
        assert!(loaded.named_tensors() == model.named_tensors());
        let toks = random_tokens(5, 30, 64);
        assert_eq!(logits(&loaded, &toks), logits(&model, &toks));
        // No temporary files left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["model.safetensors".to_string()]);
    }
}

#[test]
fn trainer_checkpoint_loads_on_the_inference_backend() {
    let cfg = tiny(20);
    let source = VecSource::new(random_tokens(1, 4 * 9, 20), 9, None);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::<AB>::new(&cfg, quick_train(2, 2), dir.path(), &dev()).unwrap();
    t.run(&source, &mut NoopObserver).unwrap();
    let ckpt = Checkpoint::latest(&dir.path().join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(ckpt.state.step, 2);
    let inner = ckpt.load_model::<B>(&dev()).unwrap();
    let toks = random_tokens(2, 8, 20);
    assert_eq!(logits(&inner, &toks), logits(&t.valid_model(), &toks));
}

#[test]
fn corrupt_and_mismatched_files_are_refused() {
    let cfg = tiny(64);
    let model = Lm::<B>::new(&cfg, 21, &dev()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    model.save_safetensors(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let load = |p: &Path| {
        Lm::<B>::from_safetensors(&cfg, p, &dev())
            .map(|_| ())
            .unwrap_err()
    };

    // Truncated.
    let p = dir.path().join("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load(&p);
    assert!(
        matches!(&e, LmError::CorruptFile { path, .. } if path == &p),
        "{e}"
    );
    assert!(e.to_string().contains("truncated.safetensors"), "{e}");

    // Bit flip in the JSON header.
    let p = dir.path().join("header.safetensors");
    let mut b = bytes.clone();
    b[8] ^= 0x40;
    std::fs::write(&p, &b).unwrap();
    assert!(matches!(load(&p), LmError::CorruptFile { .. }));

    // Bit flip in the tensor data: caught by the checksum, naming the tensor.
    let p = dir.path().join("data.safetensors");
    let mut b = bytes.clone();
    let last = b.len() - 3;
    b[last] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    let e = load(&p);
    assert!(
        matches!(&e, LmError::ChecksumMismatch { name, .. } if !name.is_empty()),
        "{e}"
    );

    // A file saved for another config.
    let other = LmConfig {
        d_model: 48,
        n_heads: 4,
        ..cfg.clone()
    };
    let e = load_other(&other, &good);
    assert!(matches!(e, LmError::CheckpointMismatch { .. }), "{e}");

    // Wrong shape / missing / extra tensors (file without our metadata).
    let p = dir.path().join("raw.safetensors");
    write_raw_safetensors(&p, &[("embed_tokens.weight", vec![64, 31])]);
    let e = load(&p);
    assert!(
        matches!(&e, LmError::ShapeMismatch { name, expected, found, .. }
            if name == "embed_tokens.weight" && expected == &vec![64, 32] && found == &vec![64, 31]),
        "{e}"
    );
    write_raw_safetensors(&p, &[("embed_tokens.weight", vec![64, 32])]);
    assert!(
        matches!(load(&p), LmError::MissingTensor { name, .. } if name == "layers.0.input_layernorm.weight")
    );
    let mut all: Vec<(String, Vec<usize>)> = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape))
        .collect();
    all.push(("lm_head.weight".into(), vec![64, 32]));
    let refs: Vec<(&str, Vec<usize>)> = all.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    write_raw_safetensors(&p, &refs);
    assert!(matches!(load(&p), LmError::UnexpectedTensor { name, .. } if name == "lm_head.weight"));
    // Missing file.
    assert!(matches!(
        load(&dir.path().join("nope.safetensors")),
        LmError::Io { .. }
    ));
}

fn load_other(cfg: &LmConfig, path: &Path) -> LmError {
    Lm::<B>::from_safetensors(cfg, path, &dev())
        .map(|_| ())
        .unwrap_err()
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn lm_the_same_checkpoint_saved_twice_is_byte_identical() {
    let cfg = tiny(20);
    let source = VecSource::new(random_tokens(1, 4 * 9, 20), 9, None);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::<AB>::new(&cfg, quick_train(2, 2), dir.path(), &dev()).unwrap();
    t.run(&source, &mut NoopObserver).unwrap();
    let ckpt = Checkpoint::latest(&dir.path().join("checkpoints"))
        .unwrap()
        .unwrap();
    let model = ckpt.load_model::<AB>(&dev()).unwrap();
    let optimizer = ckpt.load_optimizer(&model).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        Checkpoint::save(out, &ckpt.state, &model, &optimizer, 2).unwrap();
    }
    let (fa, fb) = (files_under(&a), files_under(&b));
    let names: Vec<_> = fa
        .iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "step-00000002/model.safetensors",
            "step-00000002/optimizer.safetensors",
            "step-00000002/state.json"
        ]
    );
    assert!(fa == fb, "two saves of the same state differ");
    // ... and equal to what the trainer wrote.
    assert!(fa == files_under(&dir.path().join("checkpoints")));
    // Plain weight files too.
    let (p, q) = (
        dir.path().join("p.safetensors"),
        dir.path().join("q.safetensors"),
    );
    model.save_safetensors(&p).unwrap();
    model.save_safetensors(&q).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
}

#[test]
fn lm_two_identical_training_runs_write_byte_identical_checkpoints() {
    let cfg = tiny(24);
    let source = VecSource::new(random_tokens(3, 6 * 9, 24), 9, None);
    let train = smalltalk_lm::TrainConfig {
        checkpoint_every: 2,
        keep_checkpoints: 3,
        micro_batch_size: 1,
        ..quick_train(5, 2)
    };
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut t = Trainer::<AB>::new(&cfg, train.clone(), dir.path(), &dev()).unwrap();
            t.run(&source, &mut NoopObserver).unwrap();
            let files = files_under(&dir.path().join("checkpoints"));
            assert_eq!(files.len(), 9, "three checkpoints of three files");
            files
        })
        .collect();
    for ((pa, a), (pb, b)) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(pa, pb);
        assert!(a == b, "{} differs between identical runs", pa.display());
    }
}

#[test]
fn lm_write_failures_are_io_errors_naming_the_file() {
    let cfg = tiny(20);
    let model = Lm::<B>::new(&cfg, 1, &dev()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist (a full disk reports the same way: the write fails).
    let path = dir.path().join("missing").join("model.safetensors");
    let err = model.save_safetensors(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, LmError::Io { path: p, .. } if p == &path),
        "{msg}"
    );
    assert!(
        msg.contains("model.safetensors") && !msg.contains("corrupt"),
        "{msg}"
    );
    assert!(!dir.path().join("missing").exists());
    // A checkpoints folder that cannot be created.
    let source = VecSource::new(random_tokens(1, 4 * 9, 20), 9, None);
    let run = dir.path().join("run");
    let mut t = Trainer::<AB>::new(&cfg, quick_train(1, 2), &run, &dev()).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("checkpoints"), b"not a folder").unwrap();
    let err = t.run(&source, &mut NoopObserver).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LmError::Io { .. }), "{msg}");
    assert!(
        msg.contains("checkpoints") && !msg.contains("corrupt"),
        "{msg}"
    );
}
