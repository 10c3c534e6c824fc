//! Content checksums (xxh3-128) for shards and tokenizers, written as `xxh3:<32 hex digits>`.

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

/// A checksum computed while the bytes are written.
#[derive(Default, Clone)]
pub struct RunningChecksum(Xxh3);

impl RunningChecksum {
    /// Add bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything added, in the `xxh3:` form.
    pub fn finish(&self) -> String {
        format!("xxh3:{:032x}", self.0.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut r = RunningChecksum::default();
        for chunk in data.chunks(777) {
            r.update(chunk);
        }
        assert_eq!(r.finish(), hash_bytes(&data));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
    }
}
