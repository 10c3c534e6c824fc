//! The keys and values a sequence has computed, kept so that decoding runs one new position per
//! step instead of the whole context ("No Need to Talk" §2.4: at inference only the chosen
//! expert runs, so its decoding cost is the mixture's).
//!
//! A [`KvCache`] belongs to one sequence: per layer, its rotated keys and its values
//! `[heads, capacity, head_dim]`, filled up to [`KvCache::len`] positions. Sequences of a batch
//! keep separate caches (a *ragged* batch): their new tokens are concatenated into one set of
//! rows for the projections and the MLP, and each sequence attends to its own cache. No padding
//! and no mask between sequences, so a sequence decodes to the same values alone or in a batch.

use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::block::block_forward;
use crate::error::{LmError, Result};
use crate::fused::attention::future_mask;
use crate::model::{ForwardOptions, Lm};
use crate::precision::cast_like;
use crate::rope::{rotate_half, Rope};

/// Capacity grows in steps of this many positions (and never past `max_seq_len`).
const GROWTH: usize = 64;

/// One layer's cached keys (after RoPE) and values, `[heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
struct LayerCache<B: Backend> {
    keys: Tensor<B, 3>,
    values: Tensor<B, 3>,
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
    /// unrotated projections at positions `len..len + n` (`len` = [`KvCache::len`], not yet
    /// advanced). Rotates `q` and `k` at their positions, appends `k` and `v` to the cache,
    /// and attends each new position to every cached one up to itself; `[n, d]`.
    pub(crate) fn attend(
        &mut self,
        layer: usize,
        (q, k, v): (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>),
        rope: &Rope<B>,
        heads: usize,
    ) -> Tensor<B, 2> {
        let [n, d] = q.dims();
        let head_dim = d / heads;
        let (start, end) = (self.len, self.len + n);
        assert!(end <= self.max_len, "KV cache overflow at position {end}");
        let cos = cast_like(rope.cos.clone().narrow(0, start, n), &q);
        let sin = cast_like(rope.sin.clone().narrow(0, start, n), &q);
        // [n, d] → [1, n, heads, head_dim] (rotate) → [heads, n, head_dim]
        let split = |x: Tensor<B, 2>| x.reshape([1, n, heads, head_dim]);
        let to_heads = |x: Tensor<B, 4>| x.swap_dims(1, 2).reshape([heads, n, head_dim]);
        let q = to_heads(rotate_half(split(q), cos.clone(), sin.clone()));
        let k = to_heads(rotate_half(split(k), cos, sin));
        let v = to_heads(split(v));

        let room = |least: usize| (least.div_ceil(GROWTH) * GROWTH).min(self.max_len);
        let mut cache = match self.layers[layer].take() {
            None => LayerCache::empty(&k, room(end)),
            Some(c) if c.capacity() < end => {
                let wanted = room(end.max(2 * c.capacity()));
                c.grown(wanted)
            }
            Some(c) => c,
        };
        let range = [0..heads, start..end, 0..head_dim];
        cache.keys = cache.keys.slice_assign(range.clone(), k);
        cache.values = cache.values.slice_assign(range, v);
        let keys = cache.keys.clone().narrow(1, 0, end);
        let values = cache.values.clone().narrow(1, 0, end);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut scores = q.matmul(keys.swap_dims(1, 2)).mul_scalar(scale);
        if n > 1 {
            let mask = future_mask::<B>(start, n, end, &scores.device())
                .reshape([1, n, end])
                .expand([heads, n, end]);
            scores = scores.mask_fill(mask, f64::NEG_INFINITY);
        }
        let out = softmax(scores, 2).matmul(values);
        self.layers[layer] = Some(cache);
        out.swap_dims(0, 1).reshape([n, d])
    }
}

impl<B: Backend> LayerCache<B> {
    /// Zero buffers shaped like `k: [heads, n, head_dim]` with room for `capacity` positions.
    fn empty(k: &Tensor<B, 3>, capacity: usize) -> Self {
        let [heads, _, head_dim] = k.dims();
        let zeros = cast_like(
            Tensor::<B, 3>::zeros([heads, capacity, head_dim], &k.device()),
            k,
        );
        LayerCache {
            keys: zeros.clone(),
            values: zeros,
        }
    }

    /// Positions the buffers hold.
    fn capacity(&self) -> usize {
        self.keys.dims()[1]
    }

    /// The same contents in buffers of `capacity` positions.
    fn grown(self, capacity: usize) -> Self {
        let extra = LayerCache::empty(&self.keys, capacity - self.capacity());
        LayerCache {
            keys: Tensor::cat(vec![self.keys, extra.keys], 1),
            values: Tensor::cat(vec![self.values, extra.values], 1),
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
        let mut x = self.embed_tokens.forward(tokens);
        for (l, layer) in self.layers.iter().enumerate() {
            x = block_forward(layer, x, options.precision, |q, k, v| {
                let mut first = 0;
                let outs = inputs
                    .iter_mut()
                    .map(|input| {
                        let n = input.tokens.len();
                        let rows = |t: &Tensor<B, 2>| t.clone().narrow(0, first, n);
                        let out = input.cache.attend(
                            l,
                            (rows(&q), rows(&k), rows(&v)),
                            &self.rope,
                            heads,
                        );
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
