//! # smalltalk-expert
//!
//! Trains one expert LM on one shard of the partitioned corpus, from scratch and with no
//! communication with the other experts (each expert is an independent job), and the dense
//! baseline on all the data.
//!
//! Depends on `smalltalk-data` (shards and shard indices) and `smalltalk-lm` (model, trainer).
//! Implementation arrives with the experts issue.
