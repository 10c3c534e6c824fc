//! # smalltalk-router
//!
//! The E small router LMs of SmallTalk and their hard-EM training: start from a random equal
//! split, train each router on the prefixes of its part, score a fresh chunk with every router,
//! reassign with the balanced assignment of `smalltalk-partition`, repeat.
//!
//! Depends on `smalltalk-data` (shards), `smalltalk-lm` (the decoder model, trainer and scoring)
//! and `smalltalk-partition` (assignments). Implementation arrives with the routers issue.
