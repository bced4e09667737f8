//! Which upstream address each proxied session reached, by its cancel key,
//! so that a CancelRequest goes to the same server as the session it
//! cancels, even when the endpoint's DNS now points elsewhere (Aurora).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::pg_wire::CancelKey;

/// Shared by the sessions of one database. At most one entry per live session.
#[derive(Debug, Clone, Default)]
pub struct CancelMap(Arc<Mutex<HashMap<CancelKey, SocketAddr>>>);

impl CancelMap {
    pub fn insert(&self, key: CancelKey, addr: SocketAddr) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, addr);
        }
    }

    pub fn remove(&self, key: &CancelKey) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }

    pub fn get(&self, key: &CancelKey) -> Option<SocketAddr> {
        self.0.lock().ok().and_then(|m| m.get(key).copied())
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_the_session_address() {
        let m = CancelMap::default();
        let k = CancelKey {
            pid: 1,
            secret: vec![1, 2, 3, 4],
        };
        let addr: SocketAddr = "10.0.0.7:5432".parse().unwrap();
        m.insert(k.clone(), addr);
        assert_eq!(m.get(&k), Some(addr));
        let other = CancelKey {
            pid: 1,
            secret: vec![1, 2, 3, 5],
        };
        assert_eq!(m.get(&other), None, "the secret must match too");
        m.remove(&k);
        assert!(m.is_empty());
    }
}
