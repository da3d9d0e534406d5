//! The bodies this process applied over which cached versions, so that a
//! cache behind our own write is not taken for drift.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use kube::Resource;

/// Bodies the operator applied whose watch event may not have reached the
/// cache yet: child key -> (hash of the applied body, resource version the
/// cache showed when it was applied). An entry goes as soon as the cache
/// shows any other version, which the watch event of the write brings.
#[derive(Debug, Default)]
pub struct Written {
    entries: Mutex<HashMap<String, (String, Option<String>)>>,
}

impl Written {
    pub(super) fn key<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
        format!("{}/{namespace}/{name}", K::kind(&()))
    }

    /// Whether `hash` was applied over exactly the cached `version`, so the
    /// cache is behind our own write. Forgets the entry once the cache has
    /// moved on.
    pub(super) fn cache_is_behind(&self, key: &str, hash: &str, version: Option<&str>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((written, before)) if written == hash && before.as_deref() == version => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn record(&self, key: String, hash: String, before: Option<String>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (hash, before));
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    pub(super) fn forget(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;

    use super::*;

    #[test]
    fn a_cache_behind_our_own_write_is_recognised_until_it_moves_on() {
        let written = Written::default();
        let key = Written::key::<Deployment>("web", "hello");
        assert!(!written.cache_is_behind(&key, "h1", Some("10")));
        written.record(key.clone(), "h1".to_owned(), Some("10".to_owned()));
        // The cache still shows the version the body was applied over.
        assert!(written.cache_is_behind(&key, "h1", Some("10")));
        // Another desired body is no write of ours in flight.
        assert!(!written.cache_is_behind(&key, "h2", Some("10")));
        // Once the cache moved on, the entry is forgotten for good.
        written.record(key.clone(), "h1".to_owned(), Some("10".to_owned()));
        assert!(!written.cache_is_behind(&key, "h1", Some("11")));
        assert!(!written.cache_is_behind(&key, "h1", Some("10")));
    }
}
