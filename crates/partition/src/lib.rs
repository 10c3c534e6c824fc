//! # smalltalk-partition
//!
//! Turns a score matrix (sequences × experts, log-likelihoods of each sequence's prefix under each
//! router) into an expert per sequence: plain argmax (inference), the paper's balanced greedy
//! assignment under equal capacities (EM and the final expert shards), and a random balanced
//! split (the EM start and a baseline).
//!
//! Depends on nothing but `thiserror`: no deep-learning dependency, so it can be reused and tested
//! on its own. The assignments arrive with the routers issue; this release only fixes the crate's
//! place in the workspace.
