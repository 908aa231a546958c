use std::collections::HashMap;

/// A snapshot of the environment the service was started with. Services read
/// their settings from it rather than from the process, so tests can start
/// them with any environment without touching process-wide state.
#[derive(Clone, Debug, Default)]
pub struct Env(HashMap<String, String>);

// === impl Env ===

impl Env {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value, or `default` when the variable is unset. An empty value
    /// counts as set, as it does for the upstream apps.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}
