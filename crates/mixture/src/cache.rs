//! The experts a loaded mixture holds: loaded on first use (paper §2.4: a text needs only its
//! expert), kept in a cache bounded by a count and/or bytes, least recently used evicted.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::Lm;

use crate::error::Result;

/// Bounds of the expert cache; `None` is unbounded. At least the expert in use stays, even
/// when it alone is over the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheLimits {
    /// Experts held at most.
    pub max_experts: Option<usize>,
    /// Bytes of weights (f32 parameters) held at most.
    pub max_bytes: Option<u64>,
}

/// What the cache did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CacheStats {
    /// Requests the cache answered.
    pub hits: u64,
    /// Experts read from disk.
    pub loads: u64,
    /// Experts dropped to stay within the limits.
    pub evictions: u64,
    /// Experts held now.
    pub resident: usize,
    /// Bytes of weights held now.
    pub bytes: u64,
}

struct Entry<B: Backend> {
    name: String,
    model: Arc<Lm<B>>,
    bytes: u64,
    used: u64,
}

struct State<B: Backend> {
    entries: Vec<Entry<B>>,
    tick: u64,
    stats: CacheStats,
}

/// An LRU cache of experts shared by threads (one lock; loads happen outside it).
pub(crate) struct ExpertCache<B: Backend> {
    limits: CacheLimits,
    state: Mutex<State<B>>,
}

impl<B: Backend> ExpertCache<B> {
    pub fn new(limits: CacheLimits) -> Self {
        ExpertCache {
            limits,
            state: Mutex::new(State {
                entries: Vec::new(),
                tick: 0,
                stats: CacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<B>> {
        // A thread that panicked while holding the lock left consistent entries behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The expert `name`, from the cache or `load`ed (then cached); whether it was loaded.
    pub fn get_or_load(
        &self,
        name: &str,
        load: impl FnOnce() -> Result<Lm<B>>,
    ) -> Result<(Arc<Lm<B>>, bool)> {
        {
            let mut s = self.lock();
            s.tick += 1;
            let tick = s.tick;
            if let Some(e) = s.entries.iter_mut().find(|e| e.name == name) {
                e.used = tick;
                let model = e.model.clone();
                s.stats.hits += 1;
                return Ok((model, false));
            }
        }
        let model = Arc::new(load()?);
        let bytes = model.num_params() as u64 * 4;
        let mut s = self.lock();
        s.stats.loads += 1;
        s.tick += 1;
        let tick = s.tick;
        if let Some(e) = s.entries.iter_mut().find(|e| e.name == name) {
            // Another thread loaded it meanwhile: keep one copy.
            e.used = tick;
            return Ok((e.model.clone(), true));
        }
        s.entries.push(Entry {
            name: name.into(),
            model: model.clone(),
            bytes,
            used: tick,
        });
        self.evict(&mut s, name);
        Ok((model, true))
    }

    /// Drop the least recently used experts but `keep` until within the limits.
    fn evict(&self, s: &mut State<B>, keep: &str) {
        loop {
            let bytes: u64 = s.entries.iter().map(|e| e.bytes).sum();
            let over_count = self.limits.max_experts.is_some_and(|m| s.entries.len() > m);
            let over_bytes = self.limits.max_bytes.is_some_and(|m| bytes > m);
            if !(over_count || over_bytes) {
                break;
            }
            let victim = s
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.name != keep)
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    s.entries.remove(i);
                    s.stats.evictions += 1;
                }
                None => break,
            }
        }
    }

    /// The counters and what is held now.
    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            resident: s.entries.len(),
            bytes: s.entries.iter().map(|e| e.bytes).sum(),
            ..s.stats
        }
    }
}
