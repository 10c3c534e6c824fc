//! Streaming corpus reader: plain-text files, folders of them, and JSON lines, optionally gzip-
//! or zstd-compressed.
//!
//! Format is chosen by file name: `*.jsonl`, `*.ndjson`, `*.json` (each optionally followed by
//! `.gz` or `.zst`) are JSON lines, one document per line, text in a configurable field; any other
//! file is plain text and is one document (decompressed first when it ends in `.gz`/`.zst`).
//! Folders are walked recursively in sorted order, so the document order is deterministic.
//! Memory stays bounded by one line (or one plain-text file) at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, IoContext, Result};

/// Which fields of a JSON-lines record hold the text, the id and the domain label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorpusFormat {
    /// Field holding the document text (default `text`).
    pub text_field: String,
    /// Field holding a stable document id (default `id`); when absent, `path:line` is used.
    pub id_field: String,
    /// Field holding a domain label (default `domain`); optional in the data.
    pub domain_field: String,
}

impl Default for CorpusFormat {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            id_field: "id".into(),
            domain_field: "domain".into(),
        }
    }
}

/// One document of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Stable id: the record's id field, or `path:line` / the file path.
    pub id: String,
    /// The text.
    pub text: String,
    /// Domain label when the record has one.
    pub domain: Option<String>,
    /// The record's other fields (JSON lines only), kept as metadata for reports.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The input files behind a list of corpus paths (files, or folders walked recursively).
pub fn corpus_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        collect_files(input, &mut files)?;
    }
    Ok(files)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).at(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .at(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .at(path)?;
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden {
            collect_files(&entry, out)?;
        }
    }
    Ok(())
}

/// Whether a file name denotes JSON lines (after stripping a compression suffix).
pub fn is_json_lines(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json")
}

/// Open a file, decompressing by suffix; `consumed` counts the raw bytes read from disk.
fn open_decoded(path: &Path, consumed: Arc<AtomicU64>) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).at(path)?;
    let raw = CountingReader {
        inner: file,
        consumed,
    };
    let name = path.to_string_lossy().to_lowercase();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 16,
            raw,
        )))
    } else if name.ends_with(".zst") {
        let decoder =
            ruzstd::decoding::StreamingDecoder::new(BufReader::with_capacity(1 << 16, raw))
                .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
        Box::new(decoder)
    } else {
        Box::new(raw)
    })
}

struct CountingReader<R> {
    inner: R,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A streaming iterator over the documents of a corpus.
///
/// Yields `Err` (and then stops) at the first bad record, naming its file and line.
pub struct CorpusReader {
    files: std::vec::IntoIter<PathBuf>,
    format: CorpusFormat,
    current: Option<(PathBuf, Box<dyn BufRead + Send>, u64)>,
    consumed: Arc<AtomicU64>,
    total_bytes: u64,
    failed: bool,
    line_buf: Vec<u8>,
}

impl CorpusReader {
    /// Read the documents of `inputs` (files or folders) with the given field names.
    pub fn open(inputs: &[PathBuf], format: CorpusFormat) -> Result<Self> {
        let files = corpus_files(inputs)?;
        let mut total_bytes = 0;
        for file in &files {
            total_bytes += std::fs::metadata(file).at(file)?.len();
        }
        Ok(Self {
            files: files.into_iter(),
            format,
            current: None,
            consumed: Arc::new(AtomicU64::new(0)),
            total_bytes,
            failed: false,
            line_buf: Vec::new(),
        })
    }

    /// The texts of every document of `path` (JSON lines with `text`, or one plain-text
    /// document); an empty corpus is an error naming the file.
    pub fn texts(path: &Path) -> Result<Vec<String>> {
        let reader = Self::open(&[path.to_path_buf()], CorpusFormat::default())?;
        let texts = reader
            .map(|d| d.map(|d| d.text))
            .collect::<Result<Vec<_>>>()?;
        if texts.is_empty() {
            return Err(DataError::EmptyCorpus {
                paths: vec![path.to_path_buf()],
            });
        }
        Ok(texts)
    }

    /// Raw (possibly compressed) bytes read from disk so far: a progress measure whose total is
    /// the sum of the input files' sizes.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// The input files' total size in bytes: what [`CorpusReader::bytes_consumed`] reaches at
    /// the end.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// A handle on the byte counter that another thread (a progress bar) can poll.
    pub fn consumed_counter(&self) -> Arc<AtomicU64> {
        self.consumed.clone()
    }

    fn next_document(&mut self) -> Result<Option<Document>> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.next() else {
                    return Ok(None);
                };
                let reader = open_decoded(&path, self.consumed.clone())?;
                if !is_json_lines(&path) {
                    return read_text_file(&path, reader).map(Some);
                }
                self.current = Some((path, Box::new(BufReader::with_capacity(1 << 16, reader)), 0));
            }
            let (path, reader, line) = self.current.as_mut().expect("current file");
            self.line_buf.clear();
            let n = reader
                .read_until(b'\n', &mut self.line_buf)
                .at(path.as_path())?;
            if n == 0 {
                self.current = None;
                continue;
            }
            *line += 1;
            if self.line_buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return parse_record(path, *line, &self.line_buf, &self.format).map(Some);
        }
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_document().transpose();
        if matches!(item, Some(Err(_))) {
            self.failed = true;
        }
        item
    }
}

fn read_text_file(path: &Path, mut reader: Box<dyn Read + Send>) -> Result<Document> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).at(path)?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
        path: path.into(),
        line: line_of(e.as_bytes(), e.utf8_error().valid_up_to()),
        byte: e.utf8_error().valid_up_to(),
    })?;
    Ok(Document {
        id: path.display().to_string(),
        text,
        domain: None,
        fields: Default::default(),
    })
}

fn line_of(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64
}

fn parse_record(path: &Path, line: u64, bytes: &[u8], format: &CorpusFormat) -> Result<Document> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
        path: path.into(),
        line,
        byte: e.valid_up_to(),
    })?;
    let json_error = |message: String| DataError::Json {
        path: path.into(),
        line,
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| json_error(e.to_string()))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(json_error("expected a JSON object per line".into()));
    };
    let Some(serde_json::Value::String(text)) = fields.remove(&format.text_field) else {
        return Err(DataError::MissingField {
            path: path.into(),
            line,
            field: format.text_field.clone(),
        });
    };
    let id = match fields.get(&format.id_field) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => format!("{}:{line}", path.display()),
    };
    let domain = match fields.get(&format.domain_field) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(Document {
        id,
        text,
        domain,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_detection_strips_compression() {
        assert!(is_json_lines(Path::new("a/b.jsonl.gz")));
        assert!(is_json_lines(Path::new("b.NDJSON.zst")));
        assert!(!is_json_lines(Path::new("b.txt.gz")));
        assert!(!is_json_lines(Path::new("jsonl")));
    }

    #[test]
    fn line_numbers_are_one_based() {
        assert_eq!(line_of(b"ab\ncd\n", 0), 1);
        assert_eq!(line_of(b"ab\ncd\n", 4), 2);
    }
}
