//! The keys and values a sequence has computed, kept so that decoding runs one new position per
//! step instead of the whole context ("No Need to Talk" §2.4: at inference only the chosen
//! expert runs, so its decoding cost is the mixture's).
//!
//! A [`KvCache`] belongs to one sequence: per layer, its rotated keys and its values
//! `[capacity, heads·head_dim]`, filled up to [`KvCache::len`] positions. Sequences of a batch
//! keep separate caches (a *ragged* batch): their new tokens are concatenated into one set of
//! rows for the projections and the MLP, and each sequence attends to its own cache. No padding
//! and no mask between sequences, so a sequence decodes to the same values alone or in a batch.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::block::block_forward;
use crate::error::{LmError, Result};
use crate::fused::{cache_write, cached_attention};
use crate::model::{ForwardOptions, Lm};
use crate::precision::cast_like;
use crate::rope::{rotate_half, Rope};

/// Capacity grows in steps of this many positions (and never past `max_seq_len`).
const GROWTH: usize = 64;

/// One layer's cached keys (after RoPE) and values, `[capacity, heads·head_dim]` each,
/// position-major (a new position is one contiguous row).
#[derive(Debug, Clone)]
struct LayerCache<B: Backend> {
    keys: Tensor<B, 2>,
    values: Tensor<B, 2>,
}

/// The keys and values of one sequence's positions `0..len`, for every layer of one model.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerCache<B>>>,
    len: usize,
    /// Positions the model can attend to (its `max_seq_len`).
    max_len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `layers` blocks and context `max_len`.
    pub fn new(layers: usize, max_len: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            len: 0,
            max_len,
        }
    }

    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions left before the context is full.
    pub fn room(&self) -> usize {
        self.max_len - self.len
    }

    /// Forget every position (the next token is position 0 again).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Mark `n` new positions as cached; called once per forward, after every layer wrote them.
    pub(crate) fn advance(&mut self, n: usize) {
        assert!(
            self.len + n <= self.max_len,
            "KV cache overflow: {} + {n} positions exceed the context of {}",
            self.len,
            self.max_len
        );
        self.len += n;
    }

    /// Attention of `n` new positions of this sequence in layer `layer`: `q`, `k`, `v: [n, d]`
    /// projections at positions `len..len + n` (`len` = [`KvCache::len`], not yet advanced),
    /// `q` and `k` rotated at those positions. Appends `k` and `v` to the cache and attends
    /// each new position to every cached one up to itself ([`cached_attention`]); `[n, d]`.
    pub(crate) fn attend(
        &mut self,
        layer: usize,
        (q, k, v): (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>),
        heads: usize,
    ) -> Tensor<B, 2> {
        let [n, _] = q.dims();
        let (start, end) = (self.len, self.len + n);
        assert!(end <= self.max_len, "KV cache overflow at position {end}");
        let room = |least: usize| (least.div_ceil(GROWTH) * GROWTH).min(self.max_len);
        let mut cache = match self.layers[layer].take() {
            None => LayerCache::empty(&k, room(end)),
            Some(c) if c.capacity() < end => {
                let wanted = room(end.max(2 * c.capacity()));
                c.grown(wanted)
            }
            Some(c) => c,
        };
        cache.keys = cache_write(cache.keys, k, start);
        cache.values = cache_write(cache.values, v, start);
        let out = cached_attention(q, cache.keys.clone(), cache.values.clone(), end, heads);
        self.layers[layer] = Some(cache);
        out
    }
}

impl<B: Backend> LayerCache<B> {
    /// Zero buffers of `capacity` rows as wide as `k: [n, d]`, in its dtype.
    fn empty(k: &Tensor<B, 2>, capacity: usize) -> Self {
        let [_, d] = k.dims();
        let zeros = || cast_like(Tensor::<B, 2>::zeros([capacity, d], &k.device()), k);
        LayerCache {
            keys: zeros(),
            values: zeros(),
        }
    }

    /// Positions the buffers hold.
    fn capacity(&self) -> usize {
        self.keys.dims()[0]
    }

    /// The same contents in buffers of `capacity` positions.
    fn grown(self, capacity: usize) -> Self {
        let extra = LayerCache::empty(&self.keys, capacity - self.capacity());
        LayerCache {
            keys: Tensor::cat(vec![self.keys, extra.keys], 0),
            values: Tensor::cat(vec![self.values, extra.values], 0),
        }
    }
}

/// One sequence's share of a cached forward pass: its cache and the tokens that follow what the
/// cache holds.
pub struct CachedInput<'a, B: Backend> {
    /// The sequence's cache; advanced by `tokens.len()` positions.
    pub cache: &'a mut KvCache<B>,
    /// New tokens (at least one), at positions `cache.len()..`.
    pub tokens: &'a [u32],
}

impl<B: Backend> Lm<B> {
    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.config.n_layers, self.config.max_seq_len)
    }

    /// Run each sequence's new tokens through the model, reading and extending its cache
    /// (a prompt's prefill and one token per decoding step alike): the next-token logits at each
    /// sequence's last new position, `[sequences, vocab]`, in the parameters' dtype. The same
    /// block computation as [`Lm::forward_hidden_with`] ([`block_forward`]), attending to the
    /// cache instead of whole rows. Errors: no sequence, a sequence without new tokens, more
    /// tokens than its cache has room for, a token id out of the vocabulary.
    pub fn forward_cached(
        &self,
        inputs: &mut [CachedInput<'_, B>],
        options: ForwardOptions,
    ) -> Result<Tensor<B, 2>> {
        if inputs.is_empty() {
            return Err(LmError::Data("a cached forward of no sequence".into()));
        }
        let mut ids = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let n = input.tokens.len();
            if n == 0 || n > input.cache.room() {
                return Err(LmError::Data(format!(
                    "sequence {i}: {n} new tokens after {} cached positions (context {})",
                    input.cache.len(),
                    self.config.max_seq_len
                )));
            }
            self.check_tokens(input.tokens)?;
            ids.extend(input.tokens.iter().map(|&t| t as i32));
        }
        let device = self.device();
        let rows = ids.len();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, rows]), &device);
        let heads = self.config.n_heads;
        let rope = RowRope::new(&self.rope, inputs);
        let mut x = self.embed_tokens.forward(tokens);
        for (l, layer) in self.layers.iter().enumerate() {
            x = block_forward(layer, x, options.precision, |q, k, v| {
                let (q, k) = rope.rotate(q, k, heads);
                let mut first = 0;
                let outs = inputs
                    .iter_mut()
                    .map(|input| {
                        let n = input.tokens.len();
                        let rows = |t: &Tensor<B, 2>| t.clone().narrow(0, first, n);
                        let out = input.cache.attend(l, (rows(&q), rows(&k), rows(&v)), heads);
                        first += n;
                        out
                    })
                    .collect();
                Tensor::cat(outs, 0)
            });
        }
        let mut last = Vec::with_capacity(inputs.len());
        let mut end = 0;
        for input in inputs.iter_mut() {
            end += input.tokens.len();
            last.push(end as i32 - 1);
            input.cache.advance(input.tokens.len());
        }
        let n = last.len();
        let last = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [n]), &device);
        Ok(self.head(self.norm.forward(x.select(0, last))))
    }
}

/// The RoPE tables of every row of a ragged batch (row `i` of sequence `s` at position
/// `cache_s.len() + i`), gathered once per forward pass and shared by the layers; stored twice
/// over (`[2·rows, head_dim]`) so that queries and keys rotate in one pass.
struct RowRope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> RowRope<B> {
    fn new(rope: &Rope<B>, inputs: &[CachedInput<'_, B>]) -> Self {
        let positions: Vec<i32> = inputs
            .iter()
            .flat_map(|input| {
                let start = input.cache.len();
                (start..start + input.tokens.len()).map(|p| p as i32)
            })
            .collect();
        let rows = positions.len();
        let twice = [positions.clone(), positions].concat();
        let positions =
            Tensor::<B, 1, Int>::from_data(TensorData::new(twice, [2 * rows]), &rope.cos.device());
        RowRope {
            cos: rope.cos.clone().select(0, positions.clone()),
            sin: rope.sin.clone().select(0, positions),
        }
    }

    /// `q` and `k: [rows, d]` rotated at their rows' positions, in one pass over `[q; k]`.
    fn rotate(
        &self,
        q: Tensor<B, 2>,
        k: Tensor<B, 2>,
        heads: usize,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [rows, d] = q.dims();
        let (cos, sin) = (
            cast_like(self.cos.clone(), &q),
            cast_like(self.sin.clone(), &q),
        );
        let qk = Tensor::cat(vec![q, k], 0).reshape([1, 2 * rows, heads, d / heads]);
        let qk = rotate_half(qk, cos, sin).reshape([2 * rows, d]);
        (qk.clone().narrow(0, 0, rows), qk.narrow(0, rows, rows))
    }
}
