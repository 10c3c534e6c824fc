//! Content checksums: xxh3-128, written as `xxh3:<32 hex digits>` in every manifest.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{IoContext, Result};

/// Checksum of a byte slice.
pub fn hash_bytes(bytes: &[u8]) -> String {
    format!("xxh3:{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Checksum of a file's content, streamed.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("xxh3:{:032x}", hasher.digest128()))
}

/// A checksum computed while the bytes are written, in the same `xxh3:` form.
#[derive(Default, Clone)]
pub struct RunningChecksum(Xxh3);

impl RunningChecksum {
    /// Add bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything added so far.
    pub fn finish(&self) -> String {
        format!("xxh3:{:032x}", self.0.digest128())
    }
}

/// A fingerprint of several named parts (each hashed with its name, in order): what identifies
/// a stage's output for the stages that read it.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::new();
    for (name, value) in parts {
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    hash_bytes(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_bytes_agree_and_the_format_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let h = hash_bytes(&bytes);
        assert_eq!(hash_file(&path).unwrap(), h);
        assert!(h.starts_with("xxh3:") && h.len() == 5 + 32, "{h}");
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
        assert_ne!(fingerprint([("a", "bc")]), fingerprint([("ab", "c")]));
    }

    #[test]
    fn running_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut r = RunningChecksum::default();
        for chunk in data.chunks(777) {
            r.update(chunk);
        }
        assert_eq!(r.finish(), hash_bytes(&data));
    }
}
