//! The safetensors files themselves: byte-reproducible atomic writes and checked reads.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use smalltalk_stage::checksum::hash_bytes;

use super::HostTensor;
use crate::error::{LmError, Result};

/// Write named tensors (plus string metadata) as a safetensors file, atomically.
///
/// The bytes depend only on the content: tensors are laid out in name order and the JSON
/// header is written with every object's keys sorted (the safetensors crate keeps metadata in
/// a `HashMap`, whose order changes from run to run), padded with spaces to a multiple of 8
/// bytes as the format requires. Write failures (a full disk, a missing folder) are
/// [`LmError::Io`] errors naming `path`.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let header = safetensors_header(tensors, metadata)?;
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    write_file_with(path, |file| {
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        let mut buf = Vec::new();
        for (_, t) in order {
            buf.clear();
            buf.extend(t.values.iter().flat_map(|v| v.to_le_bytes()));
            file.write_all(&buf)?;
        }
        Ok(())
    })
}

/// The padded JSON header of a safetensors file holding `tensors` (F32, in name order) with
/// `metadata` plus an xxh3 checksum of every tensor, keys sorted.
fn safetensors_header(
    tensors: &[(String, HostTensor)],
    mut metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0;
    for (name, t) in order {
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(LmError::InvalidConfig(format!(
                "tensor `{name}` has shape {:?} but {} values",
                t.shape,
                t.values.len()
            )));
        }
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        metadata.insert(format!("xxh3.{name}"), hash_bytes(&bytes));
        let info = TensorInfo {
            dtype: Dtype::F32,
            shape: t.shape.clone(),
            data_offsets: (offset, offset + bytes.len()),
        };
        offset += bytes.len();
        infos.push((name.clone(), info));
    }
    let metadata = Metadata::new(Some(metadata.into_iter().collect()), infos)
        .map_err(|e| LmError::InvalidConfig(format!("safetensors header: {e}")))?;
    let value = serde_json::to_value(&metadata).expect("safetensors metadata serialises");
    let mut header = String::new();
    canonical_json(&value, &mut header);
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    Ok(header)
}

/// Compact JSON with every object's keys sorted, so equal values give equal bytes.
pub(crate) fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Write `path` atomically through a buffered writer; any failure is an [`LmError::Io`]
/// naming `path` (not the temporary file), and `path` is left as it was.
pub(crate) fn write_file_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let io = |e| LmError::io(path, e);
    smalltalk_stage::atomic::write_with(path, |tmp| {
        let mut file = BufWriter::new(File::create(tmp).map_err(io)?);
        write(&mut file).map_err(io)?;
        file.into_inner().map_err(|e| io(e.into_error()))?;
        Ok(())
    })
    .map_err(|e| match e {
        LmError::Stage(stage) => LmError::from_stage(stage),
        other => other,
    })
}

/// Write `bytes` to `path` atomically (see [`write_file_with`]).
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_with(path, |file| file.write_all(bytes))
}

/// Read every tensor of a safetensors file (verifying checksums when present) and its metadata.
pub(crate) fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
    let corrupt = |message: String| LmError::CorruptFile {
        path: path.into(),
        message,
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        if let Some(expected) = metadata.get(&format!("xxh3.{name}")) {
            if !checksum_matches(expected, view.data()) {
                return Err(LmError::ChecksumMismatch {
                    path: path.into(),
                    name,
                });
            }
        }
        let values =
            decode(view.dtype(), view.data()).ok_or_else(|| LmError::UnsupportedDtype {
                path: path.into(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok((out, metadata))
}

fn decode(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    use burn::tensor::{bf16, f16};
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Whether `expected` is the checksum of `data`: `xxh3:<32 hex>` (xxh3-128, the format of
/// every SmallTalk manifest), or the bare 16-hex-digit xxh3-64 of checkpoints written before.
fn checksum_matches(expected: &str, data: &[u8]) -> bool {
    if expected.starts_with("xxh3:") {
        expected == hash_bytes(data)
    } else {
        *expected == format!("{:016x}", xxhash_rust::xxh3::xxh3_64(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<(String, HostTensor)> {
        ["b.weight", "a.weight", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let shape = vec![i + 1, 3];
                let values = (0..3 * (i + 1))
                    .map(|v| v as f32 * 0.5 - i as f32)
                    .collect();
                (name.to_string(), HostTensor { shape, values })
            })
            .collect()
    }

    #[test]
    fn files_are_byte_reproducible_and_valid_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let metadata: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect();
        let mut files = Vec::new();
        for i in 0..5 {
            let path = dir.path().join(format!("f{i}.safetensors"));
            write_safetensors(&path, &tensors(), metadata.clone()).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let bytes = &files[0];
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "the header is padded to 8 bytes");
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(
            header.starts_with("{\"__metadata__\":{\"key0\":\"value 0\",\"key1\":"),
            "{header}"
        );
        // The safetensors crate reads it back: tensors, shapes, values and metadata.
        let file = SafeTensors::deserialize(bytes).unwrap();
        assert_eq!(file.len(), 3);
        let (read, meta) = read_safetensors(&dir.path().join("f0.safetensors")).unwrap();
        for (name, t) in tensors() {
            assert_eq!(read[&name], t, "{name}");
            assert_eq!(file.tensor(&name).unwrap().shape(), t.shape.as_slice());
        }
        assert_eq!(meta["key7"], "value 7");
        assert!(meta.contains_key("xxh3.a.weight"));
        // Nothing else is left in the folder (temporaries are renamed or removed).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":"s\"q"}]},"a":null}"#).unwrap();
        let mut out = String::new();
        canonical_json(&v, &mut out);
        assert_eq!(out, r#"{"a":null,"b":{"a":[{"x":"s\"q","y":2}],"z":1}}"#);
    }
}
