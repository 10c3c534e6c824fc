//! # smalltalk-tests
//!
//! Cross-crate integration and end-to-end tests of SmallTalk, compiled into a single test binary
//! (`tests/integration/main.rs`) to keep build and link time low. The library itself is empty.
