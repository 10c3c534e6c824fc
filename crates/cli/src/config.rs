//! Flag parsing shared by the commands (the TOML config itself is
//! [`smalltalk_report::RunConfig`]).

/// Parse a flag value by the serde name of a library enum (`bf16`, `train`, ...); the error
/// lists the names it accepts.
pub fn from_name<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|e| e.to_string())
}
