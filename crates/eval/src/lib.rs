//! # smalltalk-eval
//!
//! Using a trained mixture: evaluating it, routing texts with it, generating with it.
//!
//! - [`evaluate()`] / [`aggregate`]: routed evaluation (paper §3.1–3.4) — every held-out row goes
//!   to the expert whose router scores its first M̂ tokens highest; the mixture against the
//!   dense baseline, random and oracle routing, per-expert segments, load, purity, a prefix
//!   sweep. [`aggregate`] is a pure function of the models' numbers.
//! - [`eval_run`]: the eval stage — opens the mixture of a `mixture.json` (every member
//!   verified; see `smalltalk-mixture`) and evaluates a dataset split or a text file.
//! - [`TextRouter`]: the routers of a folder with their tokenizer: route a text (routing
//!   quality without experts). Generation lives in `smalltalk_mixture::Mixture`; its options
//!   and result are re-exported here.
//!
//! Depends on `smalltalk-mixture` (the loaded mixture), `smalltalk-router` (loading routers),
//! `smalltalk-routing` (the routing path), `smalltalk-lm`, `smalltalk-data` and
//! `smalltalk-stage`.

pub mod describe;
pub mod error;
pub mod evaluate;
pub mod models;
pub mod routing_quality;
pub mod stage;
pub mod text_router;

pub use error::{EvalError, Result};
pub use evaluate::{
    aggregate, evaluate, DomainResult, EvalInputs, EvalReport, Models, PrefixResult, Segment,
};
pub use models::{latest_model, recorded_tokenizer};
pub use routing_quality::{routing_quality, RoutingAtPrefix, RoutingQuality};
pub use smalltalk_mixture::{GenerateOptions, Generation};
pub use stage::{eval_run, EvalData, EvalOptions};
pub use text_router::TextRouter;
