//! A token source per database: the current token and its expiry, kept in
//! memory. The refresh loop replaces it; the outputs (files, proxy) read it.

use std::sync::Arc;
use std::time::SystemTime;

use rds_iam_common::Endpoint;
use tokio::sync::watch;

use crate::token::Token;

/// A signed token and when it stops being accepted.
#[derive(Debug, Clone)]
pub struct Current {
    pub token: Token,
    /// The earlier of the signed lifetime and the credentials' expiry.
    pub expires_at: SystemTime,
}

impl Current {
    /// Time left at `now` (zero once expired).
    pub fn life(&self, now: SystemTime) -> std::time::Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// One database and its current token.
#[derive(Debug)]
pub struct TokenSource {
    pub endpoint: Endpoint,
    tx: watch::Sender<Option<Arc<Current>>>,
}

impl TokenSource {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            tx: watch::Sender::new(None),
        }
    }

    /// Replaces the current token.
    pub fn set(&self, current: Current) {
        self.tx.send_replace(Some(Arc::new(current)));
    }

    /// Forgets the current token (it was never written).
    pub fn clear(&self) {
        self.tx.send_replace(None);
    }

    /// The current token, if there is one (it may have expired).
    pub fn current(&self) -> Option<Arc<Current>> {
        self.tx.borrow().clone()
    }

    /// The current token only while it has life left at `now`.
    pub fn valid(&self, now: SystemTime) -> Option<Arc<Current>> {
        self.current().filter(|c| c.expires_at > now)
    }

    /// Wakes on every replacement.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Current>>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rds_iam_common::{DbName, Engine, SslMode};
    use std::time::Duration;

    #[test]
    fn keeps_the_last_token_and_judges_its_life() {
        let s = TokenSource::new(Endpoint {
            name: DbName::default_db(),
            engine: Engine::Postgres,
            host: "h".into(),
            port: 5432,
            user: "u".into(),
            database: None,
            region: "us-east-1".into(),
            sslmode: SslMode::Require,
            access: Default::default(),
        });
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert!(s.current().is_none());
        let rx = s.subscribe();
        s.set(Current {
            token: Token::new("t1".into()),
            expires_at: now + Duration::from_secs(60),
        });
        assert!(rx.has_changed().unwrap());
        assert_eq!(s.valid(now).unwrap().token.expose(), "t1");
        assert_eq!(s.current().unwrap().life(now), Duration::from_secs(60));
        assert!(s.valid(now + Duration::from_secs(60)).is_none());
        assert!(
            s.current().is_some(),
            "an expired token is still the last one"
        );
    }
}
